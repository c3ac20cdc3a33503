"""Running a study (workflow layer): every cell trained, deployed, evaluated and attacked through
``snn_deploy.api`` and the evaluation stage; finished cells skipped on a re-run; then the tables."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from pathlib import Path

from snn_deploy import api
from snn_deploy.attack.base import AttackSettings
from snn_deploy.data import load_dataset
from snn_deploy.evaluate.accuracy import evaluate_target, open_backend
from snn_deploy.evaluate.energy import price
from snn_deploy.evaluate.robustness import Evaluator, SourceSpec, sweep
from snn_deploy.evaluate.stability import Perturbation, perturbation_report
from snn_deploy.fileio import atomic_path
from snn_deploy.quantize.deployment import save_deployment
from snn_deploy.study.config import (
    Cell,
    Progress,
    StudyConfig,
    loss_keywords,
    metric_names,
    regulariser_keywords,
    robust_key,
)
from snn_deploy.study.tables import aggregate, write_csv, write_markdown, write_plot
from snn_deploy.targets import load_target

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class StudyResult:
    cells: tuple[dict, ...]  # every cell's JSON record, in grid order
    ran: int
    skipped: int
    failed: int
    rows: tuple[dict, ...]  # aggregated over seeds, one per grid point
    csv_path: Path
    markdown_path: Path
    plot_path: Path


def run_study(config: StudyConfig, out_dir: str | Path, *,
              on_progress: Progress | None = None) -> StudyResult:
    """Run every cell not yet finished under ``out_dir``, then write study.csv/.md/.png."""
    out_dir = Path(out_dir)
    say = on_progress or (lambda _msg: None)
    cells = config.cells()
    records: list[dict] = []
    ran = skipped = 0
    for i, cell in enumerate(cells, 1):
        path = out_dir / "cells" / f"{cell.id}.json"
        if path.is_file():
            record = json.loads(path.read_text())
            say(f"[{i}/{len(cells)}] {cell.id}: {record.get('status')} before, skipped")
            skipped += 1
        else:
            record = _run_cell_safely(config, cell, out_dir,
                                      say=lambda msg, c=cell, i=i: say(f"[{i}/{len(cells)}] {c.id}: {msg}"))
            _write_json(record, path)
            record = json.loads(path.read_text())  # the same form a resumed run reads
            ran += 1
        records.append(record)
    rows = aggregate(records, metric_names(config))
    csv_path, md_path, png_path = out_dir / "study.csv", out_dir / "study.md", out_dir / "study.png"
    write_csv(rows, csv_path)
    write_markdown(rows, md_path, config=config)
    write_plot(rows, png_path, config=config)
    failed = sum(r.get("status") == "failed" for r in records)
    return StudyResult(cells=tuple(records), ran=ran, skipped=skipped, failed=failed,
                       rows=tuple(rows), csv_path=csv_path, markdown_path=md_path,
                       plot_path=png_path)


def _run_cell_safely(config: StudyConfig, cell: Cell, out_dir: Path, *, say: Progress) -> dict:
    head = {"cell": cell.id, "group": cell.group, **dataclasses.asdict(cell),
            "settings": config.settings()}
    started = time.perf_counter()
    try:
        metrics = run_cell(config, cell, out_dir / "models", say=say)
    except Exception as exc:  # a failing cell is recorded and the study goes on
        log.warning("study cell %s failed", cell.id, exc_info=True)
        error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        say(f"failed: {error}")
        return {**head, "status": "failed", "error": error,
                "seconds": time.perf_counter() - started}
    seconds = time.perf_counter() - started
    say(f"done in {seconds:.0f} s: clean {metrics['clean_accuracy']:.3f}")
    return {**head, "status": "ok", "metrics": metrics, "seconds": seconds}


def run_cell(config: StudyConfig, cell: Cell, models_dir: Path, *, say: Progress) -> dict[str, float]:
    """Train, export, deploy and measure one cell; returns its metrics (see ``metric_names``)."""
    stem = models_dir / cell.id
    say("training")
    result = api.train(dataset=config.dataset, hidden=config.hidden, encoding=cell.encoding,
                       steps=config.steps, epochs=config.epochs, seed=cell.seed, lr=config.lr,
                       batch_size=config.batch_size, recurrent=cell.recurrent, rule=cell.rule,
                       **loss_keywords(cell.loss), **regulariser_keywords(cell.regulariser))
    result.save(stem.with_suffix(".pt"))  # with the metadata `snn-deploy train` records
    say("export and deploy")
    nir_path = stem.with_suffix(".nir")
    api.export(stem.with_suffix(".pt"), nir_path)
    dep = api.deploy(nir_path, profile=config.profile, dataset=config.dataset,
                     seed=cell.seed).deployment
    dep_path = Path(f"{stem}.deploy.h5")
    save_deployment(dep, dep_path)
    target = load_target(dep_path)
    split = load_dataset(config.dataset)
    say(f"evaluating on {config.backend}")
    backend = open_backend(target, config.backend)  # for the evaluation and the attacks
    ev = evaluate_target(target, split, backend=backend, limit=config.limit, seed=cell.seed)
    energy = price(ev.activity, dep.profile)
    metrics: dict[str, float] = {
        "float_test_accuracy": result.test_accuracy,
        "clean_accuracy": ev.accuracy,
        "spikes_per_sample": ev.activity.spikes_per_sample,
        "synops_per_sample": ev.activity.synops_per_sample,
        "energy_per_sample_nj": math.nan if energy is None else energy.per_sample_nj,
    }
    evaluator = Evaluator(target, split, backend=backend, limit=config.limit, seed=cell.seed)
    robust = sweep(evaluator, attacks=list(config.attacks), eps=list(config.eps),
                   settings=AttackSettings(iterations=config.iterations, seed=cell.seed),
                   sources=[SourceSpec()], on_progress=say)
    for row in robust.rows:
        metrics[robust_key(row.attack, row.eps)] = row.robust_accuracy
    say("membrane-perturbation MS")
    report = perturbation_report(target, split, Perturbation("gaussian", config.perturbation_sigma),
                                 limit=config.limit, steps=config.steps, seed=cell.seed)
    metrics["perturbation_ms"] = float(report["perturbation_ms"])
    return metrics


def _write_json(record: dict, path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(record, indent=2, allow_nan=True) + "\n")


# --- aggregation and output --------------------------------------------------------------------
