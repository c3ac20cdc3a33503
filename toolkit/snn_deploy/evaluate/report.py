"""Report JSON (keys in DESIGN.md) and the text tables the CLI prints."""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

from snn_deploy.evaluate.accuracy import Evaluation
from snn_deploy.fileio import atomic_path
from snn_deploy.targets import Target

_VERSIONED = ("snn-deploy", "torch", "lava-nc", "lava-dl", "nir", "nirtorch", "norse")


def versions() -> dict[str, str]:
    out = {}
    for name in _VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def evaluation_report(ev: Evaluation, *, target: Target, dataset: str) -> dict:
    """The evaluate report: DESIGN.md keys first, provenance after."""
    dep = target.deployment if ev.backend != "float" else None
    return {
        "backend": ev.backend,
        "dataset": dataset,
        "n": ev.n,
        "steps": ev.steps,
        "accuracy": ev.accuracy,
        "spikes_per_sample": ev.activity.spikes_per_sample,
        "synops_per_sample": ev.activity.synops_per_sample,
        "energy_per_sample_nj": None,  # priced energy comes with the profiles' energy sections
        "layers": [
            {"name": name, "neurons": size, "spikes_per_sample": spikes}
            for name, size, spikes in zip(ev.layer_names, ev.layer_sizes,
                                          ev.activity.layer_spikes_per_sample)
        ],
        "encoding": ev.encoding,
        "seed": ev.seed,
        "model": str(target.path),
        "model_kind": target.kind,
        "model_sha256": target.sha256,
        "profile": dep.profile.name if dep is not None else None,
        "profile_sha256": dep.profile.sha256 if dep is not None else None,
        "wall_time_s": ev.wall_time_s,
        "versions": versions(),
    }


def write_json(report: dict, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n")


def format_table(headers: list[str], rows: list[list[object]]) -> str:
    """A plain aligned text table."""
    cells = [headers] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
    return "-" if value is None else str(value)
