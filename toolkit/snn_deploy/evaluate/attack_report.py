"""The attack report: JSON (DESIGN.md keys first, provenance after) and a Markdown summary."""

from __future__ import annotations

import math
from pathlib import Path

from snn_deploy.evaluate.report import format_table, versions
from snn_deploy.evaluate.robustness import AttackRow, Robustness, layer_activity
from snn_deploy.fileio import atomic_path
from snn_deploy.targets import Target


def _num(x: float | None) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


def _row(r: AttackRow) -> dict:
    return {
        "attack": r.attack, "norm": r.norm, "eps": r.eps,
        "robust_accuracy": r.robust_accuracy,
        "spikes_per_sample": _num(r.spikes_per_sample),
        "energy_per_sample_nj": _num(r.energy_per_sample_nj),
        "agreement": _num(r.agreement),
        "source": r.source, "eps_unit": r.eps_unit,
        "attack_accuracy": _num(r.attack_accuracy),
        "source_accuracy": _num(r.source_accuracy),
        "synops_per_sample": _num(r.synops_per_sample),
        "attacked": r.attacked, "queries": r.queries, "seconds": r.seconds,
        "layers": r.layers,
    }


def attack_report(result: Robustness, *, target: Target, dataset: str, seed: int) -> dict:
    dep = target.require_deployment()
    clean = result.clean
    energy = clean.energy
    s = result.settings
    return {
        "backend": result.backend,
        "dataset": dataset,
        "n": result.n,
        "clean_accuracy": result.clean_accuracy,
        "results": [_row(r) for r in result.rows],
        "diagnostics": result.diagnostics,
        "steps": result.steps,
        "encoding": result.encoding,
        "decoder": result.decoder,
        "clean": {
            "spikes_per_sample": clean.activity.spikes_per_sample,
            "synops_per_sample": clean.activity.synops_per_sample,
            "energy_per_sample_nj": None if energy is None else energy.per_sample_nj,
            "layers": layer_activity(clean),
        },
        "energy_basis": None if energy is None else energy.basis,
        "energy_profile": None if energy is None else energy.profile,
        "energy_source": None if energy is None else energy.source,
        "float_agreement": result.float_agreement,
        "gradient_sources": list(result.sources),
        "query_backend": result.query_backend,
        "ensemble": result.ensemble,
        "settings": {"norm": s.norm, "iterations": s.iterations, "restarts": s.restarts,
                     "step_size": s.step_size, "eot": s.eot, "queries": s.queries},
        "seed": seed,
        "model": str(target.path),
        "model_sha256": target.sha256,
        "profile": dep.profile.name,
        "profile_sha256": dep.profile.sha256,
        "wall_time_s": result.wall_time_s,
        "versions": versions(),
    }


def results_table(report: dict) -> str:
    rows = [[r["attack"], r["source"], r["norm"], r["eps"], r["robust_accuracy"],
             r["agreement"], r["spikes_per_sample"], r["energy_per_sample_nj"], r["seconds"]]
            for r in report["results"]]
    return format_table(["attack", "source", "norm", "eps", "robust acc", "agreement",
                         "spikes/sample", "energy nJ", "time (s)"], rows)


def markdown(report: dict, *, plots: list[Path] | None = None) -> str:
    basis = report["energy_basis"]
    clean = report["clean"]
    lines = [
        f"# Robustness of `{Path(report['model']).name}` on {report['backend']}",
        "",
        f"{report['n']} {report['dataset']} test samples, {report['encoding']} coding,"
        f" {report.get('decoder', 'spike_count')} decoder, T ="
        f" {report['steps']}, profile {report['profile']}. Clean accuracy on {report['backend']}:"
        f" **{report['clean_accuracy']:.4f}**"
        + (f"; float source graph agrees on {report['float_agreement']:.1%} of samples."
           if report["float_agreement"] is not None else "."),
        "",
        f"Gradient source(s): {', '.join(report['gradient_sources'])}; query attacks ask"
        f" {report['query_backend']}. Every adversarial input was re-run on {report['backend']}:"
        " the accuracies below are the backend's. Robust accuracy is a per-sample worst case over"
        " the clean input and all smaller eps.",
        "",
        "```",
        results_table(report),
        "```",
        "",
        f"Clean: {clean['spikes_per_sample']:.1f} spikes and {clean['synops_per_sample']:.0f}"
        " synaptic operations per sample" + (
            f", {clean['energy_per_sample_nj']:.2f} nJ per sample ({basis}: {report['energy_source']})."
            if clean["energy_per_sample_nj"] is not None else "; no energy model in the profile."),
        "",
        "## Validity checks",
        "",
    ]
    mark = {True: "pass", False: "**WARN**", None: "not run"}
    for c in report["diagnostics"]:
        lines.append(f"- {mark[c['passed']]}: {c['check']}: {c['detail']}")
    note = square_note(report)
    if note:
        lines += ["", f"**{note}**"]
    if plots:
        lines += ["", "## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots]
    return "\n".join(lines) + "\n"


def square_note(report: dict) -> str | None:
    """A sentence when the black-box Square attack beats every gradient attack at some eps."""
    white: dict[float, float] = {}
    for r in report["results"]:
        if r["attack"] in ("fgsm", "pgd", "apgd-ce", "apgd-dlr"):
            white[r["eps"]] = min(white.get(r["eps"], 1.0), r["robust_accuracy"])
    beats = [r for r in report["results"] if r["attack"] == "square" and r["eps"] in white
             and r["robust_accuracy"] < white[r["eps"]]]
    if not beats:
        return None
    return ("Square beats the gradient attacks at eps " +
            ", ".join(f"{r['eps']:g} ({r['robust_accuracy']:.3f} vs {white[r['eps']]:.3f})"
                      for r in beats) +
            ": the gradient source underestimates this model's weakness.")


def write_text(text: str, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
