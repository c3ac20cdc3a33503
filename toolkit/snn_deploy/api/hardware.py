"""``resources``: neuro cores and chips a Deployment needs under a profile's ``[limits]``.

Workflow layer (``snn_deploy.api``) over ``evaluate.resources``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from snn_deploy.evaluate.report import write_json
from snn_deploy.evaluate.resources import ResourceReport


@dataclasses.dataclass(frozen=True)
class ResourcesResult:
    """The resource report; ``to_json`` is what ``--json`` writes."""

    report: ResourceReport

    def to_json(self) -> dict:
        return self.report.as_dict()

    def write(self, json_out: str | Path) -> None:
        write_json(self.to_json(), json_out)

    def summary(self) -> str:
        from snn_deploy.evaluate.resources import format_resources

        return format_resources(self.report)


def resources(deployment: str | Path, *, profile: str | None = None) -> ResourcesResult:
    """Cores and chips of a Deployment under ``profile``'s limits (a name or a .toml path;
    default: the profile the Deployment was made for), and whether it fits."""
    from snn_deploy.evaluate.resources import resources as count
    from snn_deploy.profiles import load_profile
    from snn_deploy.targets import load_target

    chosen = load_profile(profile) if profile else None  # a bad name fails first
    dep = load_target(deployment).require_deployment()
    return ResourcesResult(report=count(dep, chosen or dep.profile))
