"""Packaging: every subpackage ships, and the profiles are found from the installed package."""

from __future__ import annotations

from pathlib import Path

import snn_deploy
import tomli
from snn_deploy.profiles import available_profiles

ROOT = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_listed_in_pyproject():
    listed = set(tomli.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    package_root = Path(snn_deploy.__file__).parent
    found = {"snn_deploy." + ".".join(p.parent.relative_to(package_root).parts)
             for p in package_root.rglob("__init__.py")}
    found = {name.rstrip(".") for name in found}
    missing = found - listed
    assert not missing, f"add to [tool.setuptools] packages in pyproject.toml: {sorted(missing)}"


def test_profiles_ship_inside_the_package():
    profiles = available_profiles()
    assert profiles["loihi2"].parent.name == "hw_profiles"
    assert profiles["loihi2"].read_text().startswith("#")
