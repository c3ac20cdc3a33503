"""docs/cli.md must say what the commands' --help says."""

from __future__ import annotations

from pathlib import Path

from snn_deploy.cli_reference import reference

DOC = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


def test_cli_reference_matches_help():
    assert DOC.read_text() == reference(), (
        "docs/cli.md is out of date: run `python -m snn_deploy.cli_reference > docs/cli.md`")


def test_every_command_is_documented():
    text = DOC.read_text()
    for name in ("train", "convert", "export", "deploy", "import-netx", "evaluate", "run", "attack",
                 "resources", "compare", "profiles"):
        assert f"## snn-deploy {name}\n" in text
