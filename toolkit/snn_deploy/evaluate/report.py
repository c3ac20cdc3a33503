"""Report JSON (keys in DESIGN.md) and the text tables the CLI prints."""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

from snn_deploy.evaluate.accuracy import Evaluation
from snn_deploy.evaluate.energy import price
from snn_deploy.fileio import atomic_path
from snn_deploy.profiles import Profile
from snn_deploy.run.recording import OnChipMeasurement
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


def evaluation_report(ev: Evaluation, *, target: Target, dataset: str,
                      energy_profile: Profile | None = None) -> dict:
    """The evaluate report: DESIGN.md keys first, provenance after.

    Energy is priced with ``energy_profile`` if given, else with the Deployment's own profile on
    the deployed backends (emulator, lava-sim); the float backend has no profile of its own. The
    energy keys are None when there is no profile or it has no ``[energy]`` section.
    """
    dep = target.deployment if ev.backend != "float" else None
    profile = energy_profile if energy_profile is not None else (
        dep.profile if dep is not None else None)
    energy = price(ev.activity, profile) if profile is not None else None
    layers_nj = energy.layers_nj if energy is not None else (None,) * len(ev.layer_names)
    act = ev.activity
    return {
        "backend": ev.backend,
        "dataset": dataset,
        "n": ev.n,
        "steps": ev.steps,
        "accuracy": ev.accuracy,
        "spikes_per_sample": act.spikes_per_sample,
        "synops_per_sample": act.synops_per_sample,
        "energy_per_sample_nj": energy.per_sample_nj if energy is not None else None,
        "layers": [
            {"name": name, "neurons": size, "spikes_per_sample": spikes,
             "synops_per_sample": synops, "neuron_updates_per_sample": updates,
             "energy_nj": nj}
            for name, size, spikes, synops, updates, nj in zip(
                ev.layer_names, ev.layer_sizes, act.layer_spikes_per_sample,
                act.layer_synops_per_sample, act.layer_updates_per_sample, layers_nj, strict=True)
        ],
        "energy_basis": energy.basis if energy is not None else None,
        "energy_profile": energy.profile if energy is not None else None,
        "energy_source": energy.source if energy is not None else None,
        "on_chip": on_chip_report(ev.on_chip),
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


def on_chip_report(m: OnChipMeasurement | None) -> dict | None:
    """The chip profiler's measurement of a loihi2 run (basis "measured"), None on other backends:
    a whole-run figure, static power and host I/O included, next to the priced estimate."""
    if m is None:
        return None
    return {"basis": m.basis, "samples": m.samples, "steps": m.steps, "time_s": m.time_s,
            "time_per_step_s": m.time_per_step_s, "energy_j": m.energy_j,
            "static_energy_j": m.static_energy_j, "energy_per_sample_nj": m.energy_per_sample_nj,
            "source": m.source}


def format_on_chip(m: dict) -> str:
    """One line for the CLI: the measured time and energy of a loihi2 run."""
    energy = ("no energy reading" if m["energy_j"] is None else
              f"energy {m['energy_j']:.4g} J ({m['energy_per_sample_nj']:.4g} nJ/sample"
              + ("" if m["static_energy_j"] is None else f", static {m['static_energy_j']:.4g} J")
              + ")")
    return (f"measured on chip ({m['source']}): {m['steps']} steps in {m['time_s']:.4g} s"
            f" ({1e6 * m['time_per_step_s']:.4g} us/step), {energy}")


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
