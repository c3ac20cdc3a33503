"""``evaluate`` (accuracy, activity and energy on a backend) and ``compare`` (reports side by side).

Workflow layer (``snn_deploy.api``) over ``evaluate.accuracy``, ``evaluate.report`` and
``evaluate.stability``; the report dict is what ``--json`` writes, key for key.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable

from snn_deploy.api.common import check_device, select_host
from snn_deploy.bounds import MAX_TEXT_BYTES
from snn_deploy.errors import UserError
from snn_deploy.evaluate.report import format_table, write_json
from snn_deploy.fileio import read_text_bounded

_NUMERIC_KEYS = {"n", "steps", "accuracy", "spikes_per_sample", "synops_per_sample", "wall_time_s"}
_REPORT_KEYS = {"backend", "model_kind", "dataset", *_NUMERIC_KEYS}


def format_reports(reports: list[dict]) -> str:
    """Evaluate reports as one table, a row each."""
    rows = [[r["backend"], r["model_kind"], r["dataset"], r["n"], r["steps"], r["accuracy"],
             r["spikes_per_sample"], r["synops_per_sample"], r.get("energy_per_sample_nj"),
             r.get("energy_basis"), r["wall_time_s"]] for r in reports]
    return format_table(["backend", "model", "dataset", "n", "T", "accuracy", "spikes/sample",
                         "synops/sample", "energy nJ/sample", "energy basis", "time (s)"], rows)


@dataclasses.dataclass(frozen=True)
class EvaluateResult:
    """The evaluate report (keys in DESIGN.md: backend, dataset, n, steps, accuracy, ...)."""

    report: dict

    def to_json(self) -> dict:
        return self.report

    def write(self, json_out: str | Path) -> None:
        write_json(self.report, json_out)

    def summary(self) -> str:
        """What ``evaluate`` prints: the table row, on-chip measurements, the perturbation MS."""
        from snn_deploy.evaluate.report import format_on_chip

        r = self.report
        lines = [format_reports([r])]
        if r["on_chip"] is not None:
            lines.append(format_on_chip(r["on_chip"]))
        if "perturbation_ms" in r:
            lines.append(f"membrane-potential perturbation MS under {r['perturbation']}:"
                         f" {r['perturbation_ms']:.4g} {r['perturbation_ms_unit']}")
        return "\n".join(lines)


def evaluate(model: str | Path, *, backend: str = "float", device: str = "cpu",
             dataset: str | None = None, limit: int | None = None, steps: int | None = None,
             seed: int = 0, dt: float | None = None, energy_profile: str | None = None,
             perturbation: str | None = None, partition: str | None = None,
             board: str | None = None,
             on_progress: Callable[[int, int], None] | None = None) -> EvaluateResult:
    """Accuracy, activity and energy of a checkpoint, NIR graph or Deployment on a backend.

    ``energy_profile``: price energy with this profile (default: the Deployment's).
    ``perturbation``: ``gaussian:SIGMA`` or ``fgsm:EPS`` also reports the float model's
    membrane-potential perturbation mean square (``evaluate.stability``).
    """
    from snn_deploy.data import load_dataset
    from snn_deploy.evaluate.accuracy import evaluate_target
    from snn_deploy.evaluate.report import evaluation_report
    from snn_deploy.evaluate.stability import Perturbation, perturbation_report
    from snn_deploy.profiles import load_profile
    from snn_deploy.targets import load_target

    pricing = load_profile(energy_profile) if energy_profile else None  # a bad name fails first
    noise = Perturbation.parse(perturbation) if perturbation else None
    select_host(backend, partition, board)
    target = load_target(model, dt=dt)
    name = dataset or target.coding.dataset
    split = load_dataset(name)
    ev = evaluate_target(target, split, backend=backend, limit=limit, steps=steps, seed=seed,
                         device=check_device(device), on_progress=on_progress)
    report = evaluation_report(ev, target=target, dataset=name, energy_profile=pricing)
    if noise is not None:
        report.update(perturbation_report(target, split, noise, limit=limit, steps=ev.steps,
                                          seed=seed))
    return EvaluateResult(report=report)


@dataclasses.dataclass(frozen=True)
class CompareResult:
    """Evaluate reports read back, the first one the baseline."""

    reports: tuple[dict, ...]

    def accuracy_points(self) -> list[tuple[str, float]]:
        """(backend, accuracy minus the first report's, in percentage points) for the others."""
        base = self.reports[0]["accuracy"]
        return [(r["backend"], 100 * (r["accuracy"] - base)) for r in self.reports[1:]]

    def summary(self) -> str:
        """The reports as one table, then each one's accuracy against the first."""
        base = self.reports[0]["backend"]
        return "\n".join([format_reports(list(self.reports)),
                          *(f"{backend} vs {base}: accuracy {points:+.2f} points"
                            for backend, points in self.accuracy_points())])

    def to_json(self) -> dict:
        return {"reports": list(self.reports), "baseline": self.reports[0]["backend"],
                "accuracy_points": [{"backend": b, "points": p} for b, p in self.accuracy_points()]}


def read_report(path: str | Path) -> dict:
    """An evaluate report JSON, its keys and numbers checked."""
    text = read_text_bounded(path, limit=MAX_TEXT_BYTES, what="report")
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise UserError(f"{path} is not a JSON report") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} is not an evaluate report (a JSON {type(data).__name__})")
    missing = sorted(_REPORT_KEYS - set(data))
    if missing:
        raise UserError(f"{path} is not an evaluate report (missing {missing})")
    for key in _NUMERIC_KEYS:
        if not isinstance(data[key], (int, float)) or isinstance(data[key], bool):
            raise UserError(f"{path}: {key} must be a number, got {data[key]!r}")
    return data


def compare(reports: list[str | Path] | tuple[str | Path, ...]) -> CompareResult:
    """Read evaluate reports (JSON) to show side by side; at least one."""
    if not reports:
        raise UserError("compare needs at least one report")
    return CompareResult(reports=tuple(read_report(path) for path in reports))
