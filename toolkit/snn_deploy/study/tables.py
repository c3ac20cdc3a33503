"""A study's tables (workflow layer): cells aggregated over seeds (mean and spread), written as
CSV, Markdown and a plot."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np

from snn_deploy.fileio import atomic_path
from snn_deploy.study.config import StudyConfig, metric_names, robust_key

GRID_COLUMNS = ("encoding", "loss", "rule", "recurrent", "regulariser")


def aggregate(records: list[dict], metrics: list[str]) -> list[dict]:
    """One row per grid point: mean and sample std (ddof 1; NaN with one seed) over the seeds
    whose cell finished, with the counts of finished and failed seeds and the failures' errors."""
    groups: dict[str, list[dict]] = {}
    for record in records:
        groups.setdefault(record["group"], []).append(record)
    rows = []
    for group, members in groups.items():
        ok = [m for m in members if m.get("status") == "ok"]
        row: dict[str, Any] = {"group": group, **{k: members[0][k] for k in GRID_COLUMNS},
                               "seeds_ok": len(ok), "seeds_failed": len(members) - len(ok)}
        for name in metrics:
            values = np.array([m["metrics"].get(name, math.nan) for m in ok], dtype=float)
            finite = values[np.isfinite(values)]
            row[f"{name}_mean"] = float(finite.mean()) if len(finite) else math.nan
            row[f"{name}_std"] = float(finite.std(ddof=1)) if len(finite) > 1 else math.nan
        row["errors"] = "; ".join(f"s{m['seed']}: {m['error']}" for m in members
                                  if m.get("status") == "failed")
        rows.append(row)
    return rows


def write_csv(rows: list[dict], path: Path) -> None:
    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["group"])
        writer.writeheader()
        writer.writerows(rows)


def _cell_text(mean: float, std: float, digits: int) -> str:
    if math.isnan(mean):
        return "-"
    return f"{mean:.{digits}f}" if math.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _digits(metric: str) -> int:
    """Decimals a metric is shown with: accuracies 3, the perturbation MS 4, counts 1."""
    if "accuracy" in metric or metric.startswith("robust"):
        return 3
    return 4 if metric == "perturbation_ms" else 1


def write_markdown(rows: list[dict], path: Path, *, config: StudyConfig) -> None:
    metrics = metric_names(config)
    header = [*GRID_COLUMNS, "seeds", *metrics]
    lines = [f"# Study {config.name}: {config.dataset} on {config.profile} ({config.backend})", "",
             f"Mean ± sample std over seeds {list(config.seeds)}; {config.limit} test samples;"
             f" attacks {', '.join(config.attacks)} ({config.iterations} iterations, L-inf eps in"
             f" the input range [0, 1]); perturbation MS under gaussian:{config.perturbation_sigma:g}"
             f" (volts^2); energy in nJ per sample. Every accuracy is read with the cell's decoder"
             f" (loss: count = spike count, first_spike = earliest output spike, max_membrane ="
             f" largest output membrane; LOSS:BETA its logit scale).", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        seeds = f"{row['seeds_ok']}" + (f" ({row['seeds_failed']} failed)" if row["seeds_failed"] else "")
        values = [_cell_text(row[f"{m}_mean"], row[f"{m}_std"], _digits(m)) for m in metrics]
        lines.append("| " + " | ".join([row["encoding"], row["loss"], row["rule"],
                                        str(row["recurrent"]).lower(), row["regulariser"], seeds,
                                        *values]) + " |")
    failures = [f"- {row['group']}: {row['errors']}" for row in rows if row["errors"]]
    if failures:
        lines += ["", "Failed cells:", *failures]
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def write_plot(rows: list[dict], path: Path, *, config: StudyConfig) -> None:
    """Robust accuracy (mean ± std over seeds) against eps, one line per grid point and attack."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    eps = sorted(config.eps)
    fig, axes = plt.subplots(1, len(config.attacks), figsize=(6 * len(config.attacks), 4.5),
                             squeeze=False)
    for ax, attack in zip(axes[0], config.attacks):
        for row in rows:
            mean = [row[f"{robust_key(attack, e)}_mean"] for e in eps]
            std = [row[f"{robust_key(attack, e)}_std"] for e in eps]
            if all(math.isnan(m) for m in mean):
                continue
            ax.errorbar(eps, mean, yerr=np.nan_to_num(std), marker="o", capsize=3,
                        label=row["group"])
        ax.set(title=f"{attack} on {config.backend} ({config.profile})", xlabel="eps (L-inf)",
               ylabel="robust accuracy", ylim=(0, 1.02))
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
