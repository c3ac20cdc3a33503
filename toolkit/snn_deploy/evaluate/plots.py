"""PNG plots of an attack report: robust accuracy and energy against eps, a spike raster."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from snn_deploy.evaluate.robustness import Robustness
from snn_deploy.fileio import atomic_path


def _series(result: Robustness, value: str) -> dict[str, tuple[list[float], list[float]]]:
    out: dict[str, tuple[list[float], list[float]]] = defaultdict(lambda: ([], []))
    for r in sorted(result.rows, key=lambda r: r.eps):
        v = getattr(r, value)
        if v is None or (isinstance(v, float) and np.isnan(v)):
            continue
        label = r.attack if r.source in ("-", "") else f"{r.attack} ({r.source})"
        out[label][0].append(r.eps)
        out[label][1].append(v)
    return dict(out)


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")


def write_plots(result: Robustness, out_dir: str | Path, *, energy_basis: str | None) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for value, ylabel, name in (
        ("robust_accuracy", f"robust accuracy on {result.backend}", "robust_accuracy.png"),
        ("energy_per_sample_nj", f"energy per sample (nJ, {energy_basis or 'no energy model'})",
         "energy.png"),
    ):
        series = _series(result, value)
        fig, ax = plt.subplots(figsize=(5.5, 3.8))
        for label, (xs, ys) in series.items():
            ax.plot(xs, ys, marker="o", label=label)
        if value == "robust_accuracy":
            ax.axhline(result.clean_accuracy, color="grey", ls=":", label="clean")
            ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel(f"eps ({result.settings.norm})")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if series:
            ax.legend(fontsize=7)
        _save(fig, out / name)
        plt.close(fig)
        written.append(out / name)
    ex = result.examples
    if ex:
        fig, axes = plt.subplots(2, 2, figsize=(8, 5), sharex=True,
                                 gridspec_kw={"height_ratios": [3, 1]})
        for col, kind in enumerate(("clean", "adversarial")):
            inp = np.asarray(ex[f"{kind}_input"])
            outp = np.asarray(ex[kind]["output"])
            t, c = np.nonzero(inp)
            axes[0, col].scatter(t, c, s=2, color="black")
            axes[0, col].set_title(f"{kind}: input spikes (sample {ex['sample']}, label {ex['label']})",
                                   fontsize=8)
            t, c = np.nonzero(outp)
            axes[1, col].scatter(t, c, s=6, color="tab:red")
            axes[1, col].set_ylim(-0.5, outp.shape[1] - 0.5)
            axes[0, col].set_ylim(-0.5, inp.shape[1] - 0.5)
            pred = int(outp.sum(axis=0).argmax())
            axes[1, col].set_title(f"output spikes: predicts {pred}", fontsize=8)
            axes[1, col].set_xlabel("time step")
        axes[0, 0].set_ylabel("input channel")
        axes[1, 0].set_ylabel("class")
        fig.suptitle(f"{ex['attack']} eps={ex['eps']:g} on {result.backend}", fontsize=9)
        _save(fig, out / "raster.png")
        plt.close(fig)
        written.append(out / "raster.png")
    return written
