"""Robustness study (evaluation stage): train a grid of models, deploy each to a profile, attack it
on the target backend, and tabulate mean and spread over seeds.

A study is a TOML file::

    [study]
    name = "digits"            # table title
    dataset = "digits"         # a key of data.DATASETS
    profile = "loihi2"         # profile name or .toml path
    backend = "emulator"       # emulator | lava-sim
    seeds = [0, 1, 2]          # every grid cell is trained once per seed
    steps = 16                 # time steps per sample
    epochs = 8
    hidden = 64                # one size or a list of sizes
    lr = 2e-3                  # optional (default 2e-3)
    batch_size = 64            # optional (default 64)
    limit = 360                # test samples evaluated and attacked
    attacks = ["pgd"]          # keys of attack.ATTACKS
    eps = [0.0, 0.05, 0.1]     # L-inf radii in the input range [0, 1]
    iterations = 10            # attack iterations
    perturbation_sigma = 0.1   # Gaussian input noise for the membrane-perturbation MS

    [grid]
    encoding = ["rate", "latency"]     # keys of coding.ENCODERS (fusion included)
    loss = ["count", "first_spike"]    # the loss and output decoder, LOSS or LOSS:BETA
    rule = ["bptt"]                    # keys of train.rules.RULES
    recurrent = [false, true]
    regulariser = ["none", "noise:0.1"]

``[grid]`` may also be an array of tables (``[[grid]]`` repeated): each is a product of its own
axes (missing axes take one default value: rate, count, bptt, false, none), and the study runs
the union of their cells, in the order they first appear, each grid point once. So one study can
cross coding with decoding on one rule and cross rules with recurrence and regularisers on fewer
codings, instead of the full product of every axis.

Losses (``LOSSES`` of train.bptt) pick the output decoder: ``count`` (spike count), ``first_spike``
(logits -beta * t_first), ``max_membrane`` (logits beta * max_t membrane / threshold); ``:BETA``
sets the logit scale beta (default 1; it changes the loss, not the prediction). Regularisers
(``REGULARISERS``) map onto ``api.train`` keywords: ``none``; ``noise:S`` -> ``noise_sigma=S``
(Gaussian-noise training); ``fgsm:E`` / ``pgd:E`` -> ``adversarial="fgsm"|"pgd", eps=E``
(adversarial training); ``perturbation:A`` -> ``noise_sigma=PERTURBATION_NOISE_SIGMA,
perturbation_weight=A`` (the membrane-perturbation regulariser of Ding et al., ICML 2024, which
compares a clean and a noisy pass). Every cell trains with ``init = "auto"`` (train/init.py).

Every cell (grid point x seed) trains -> checkpoint -> NIR -> Deployment (calibrated on the
data set) -> clean accuracy, spikes, synaptic ops and energy on the backend, read with the cell's
decoder -> attack sweep verified on the backend with that decoder -> membrane-perturbation MS.
Each finished cell is ``OUT/cells/<cell-id>.json``, written atomically; a cell whose JSON exists is
skipped (delete a failed cell's JSON to retry it). A cell that raises is recorded as
``{"status": "failed", "error": ...}`` and the others go on.
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import logging
import math
import re
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import tomli

from snn_deploy.bounds import (
    MAX_BATCH,
    MAX_EPOCHS,
    MAX_ITERATIONS,
    MAX_SEED,
    MAX_STEPS,
    MAX_TEXT_BYTES,
    layer_sizes_problem,
)
from snn_deploy.errors import InputFileError, UserError
from snn_deploy.fileio import atomic_path, read_text_bounded

log = logging.getLogger(__name__)

STUDY_BACKENDS = ("emulator", "lava-sim")
PERTURBATION_NOISE_SIGMA = 0.1  # input noise of the perturbed pass of ``perturbation:A``
DEFAULT_LR = 2e-3  # the `snn-deploy train` defaults
DEFAULT_BATCH_SIZE = 64

Progress = Callable[[str], None]


REGULARISERS: dict[str, Callable[[float], dict[str, Any]]] = {
    "noise": lambda s: {"noise_sigma": s},
    "fgsm": lambda e: {"adversarial": "fgsm", "eps": e},
    "pgd": lambda e: {"adversarial": "pgd", "eps": e},
    "perturbation": lambda a: {"noise_sigma": PERTURBATION_NOISE_SIGMA, "perturbation_weight": a},
}


def loss_keywords(text: str) -> dict[str, Any]:
    """``api.train`` keywords for a loss string (``LOSS`` or ``LOSS:BETA``)."""
    from snn_deploy.train.bptt import LOSSES

    name, sep, value = text.partition(":")
    if name not in LOSSES:
        raise UserError(f"loss {text!r}: use LOSS or LOSS:BETA with LOSS one of"
                        f" {', '.join(LOSSES)}")
    if not sep:
        return {"loss": name}
    try:
        beta = float(value)
    except ValueError:
        raise UserError(f"loss {text!r}: {value!r} is not a number") from None
    if not (math.isfinite(beta) and beta > 0):
        raise UserError(f"loss {text!r}: the decoder beta must be a number > 0")
    return {"loss": name, "decoder_beta": beta}


def regulariser_keywords(text: str) -> dict[str, Any]:
    """``api.train`` keywords for a regulariser string (``none`` or ``KIND:VALUE``)."""
    if text == "none":
        return {}
    kind, sep, value = text.partition(":")
    if kind not in REGULARISERS or not sep:
        raise UserError(f"[grid] regulariser {text!r}: use none or KIND:VALUE with KIND one of"
                        f" {', '.join(REGULARISERS)}")
    try:
        number = float(value)
    except ValueError:
        raise UserError(f"[grid] regulariser {text!r}: {value!r} is not a number") from None
    return REGULARISERS[kind](number)


@dataclasses.dataclass(frozen=True)
class Cell:
    """One model of the study: a grid point and a seed."""

    encoding: str
    loss: str
    rule: str
    recurrent: bool
    regulariser: str
    seed: int

    @property
    def group(self) -> str:
        """The grid point (the cell without its seed), safe as a file name."""
        reg = self.regulariser.replace(":", "")
        loss = self.loss.replace(":", "")
        return f"{self.encoding}-{loss}-{self.rule}-{'rec' if self.recurrent else 'ff'}-{reg}"

    @property
    def id(self) -> str:
        return f"{self.group}-s{self.seed}"


@dataclasses.dataclass(frozen=True)
class Grid:
    """One product of axes; a study holds one or more (``[[grid]]``)."""

    encoding: tuple[str, ...]
    loss: tuple[str, ...]
    rule: tuple[str, ...]
    recurrent: tuple[bool, ...]
    regulariser: tuple[str, ...]

    def points(self) -> list[tuple[str, str, str, bool, str]]:
        return list(itertools.product(self.encoding, self.loss, self.rule, self.recurrent,
                                      self.regulariser))


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    name: str
    dataset: str
    profile: str
    backend: str
    seeds: tuple[int, ...]
    steps: int
    epochs: int
    hidden: tuple[int, ...]
    lr: float
    batch_size: int
    limit: int
    attacks: tuple[str, ...]
    eps: tuple[float, ...]
    iterations: int
    perturbation_sigma: float
    grids: tuple[Grid, ...]

    def cells(self) -> list[Cell]:
        """Every grid point of every grid once (first appearance first), times the seeds."""
        points = list(dict.fromkeys(p for grid in self.grids for p in grid.points()))
        return [Cell(*point, seed) for point in points for seed in self.seeds]

    def settings(self) -> dict:
        """What every cell shares (stored in each cell's JSON)."""
        return {k: v for k, v in dataclasses.asdict(self).items()
                if k not in ("name", "seeds", "grids")}


_STUDY_DEFAULTS: dict[str, Any] = {
    "name": "study", "dataset": "digits", "profile": "loihi2", "backend": "emulator",
    "seeds": [0, 1, 2], "steps": 16, "epochs": 8, "hidden": 64, "lr": DEFAULT_LR,
    "batch_size": DEFAULT_BATCH_SIZE, "limit": 360, "attacks": ["pgd"], "eps": [0.0, 0.05, 0.1],
    "iterations": 10, "perturbation_sigma": 0.1,
}
_GRID_DEFAULTS: dict[str, Any] = {
    "encoding": ["rate"], "loss": ["count"], "rule": ["bptt"], "recurrent": [False],
    "regulariser": ["none"],
}


# The largest value each integer [study] key takes (bounds.py says why).
_STUDY_MAXIMA = {"steps": MAX_STEPS, "epochs": MAX_EPOCHS, "batch_size": MAX_BATCH,
                 "limit": 1 << 31, "iterations": MAX_ITERATIONS}
# A study name becomes a folder name: these characters, at most this long.
_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]")
MAX_NAME = 64


def folder_name(name: str) -> str:
    """The study's folder name: ``name`` with every character other than letters, digits, ``.``,
    ``_`` and ``-`` replaced by ``_``, no leading dot, at most ``MAX_NAME`` long; so that
    ``study_out/<folder_name>`` stays inside ``study_out`` whatever the config says."""
    safe = _NAME_CHARS.sub("_", name).lstrip(".")[:MAX_NAME]
    return safe or "study"


def load_study(path: str | Path) -> StudyConfig:
    """Read and validate a study TOML file (see the module docstring)."""
    path = Path(path)
    text = read_text_bounded(path, limit=MAX_TEXT_BYTES, what="study config")
    try:
        data = tomli.loads(text)
    except tomli.TOMLDecodeError as exc:
        raise InputFileError(f"{path} is not valid TOML: {exc}") from None
    return parse_study(data, origin=str(path))


def parse_study(data: dict, *, origin: str = "study") -> StudyConfig:
    """Validate a parsed study TOML; every error is a one-line ``UserError`` naming the key."""
    _no_unknown(data, {"study", "grid"}, f"{origin}: top level")
    study = _table(data, "study", origin)
    _no_unknown(study, set(_STUDY_DEFAULTS), f"{origin}: [study]")
    s = {**_STUDY_DEFAULTS, **study}

    def key(name: str, section: str = "study") -> str:
        return f"{origin}: [{section}] {name}"

    from snn_deploy.attack import ATTACKS
    from snn_deploy.data import DATASETS
    from snn_deploy.profiles import load_profile

    _typed(s, "name", str, key)
    _choice(s["dataset"], DATASETS, key("dataset"))
    _typed(s, "profile", str, key)
    try:
        load_profile(s["profile"])
    except UserError as exc:
        raise UserError(f"{key('profile')}: {exc}") from None
    _choice(s["backend"], STUDY_BACKENDS, key("backend"))
    for name, top in _STUDY_MAXIMA.items():
        _positive_int(s[name], key(name), top=top)
    seeds = _list(s["seeds"], key("seeds"))
    for seed in seeds:
        if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED:
            raise UserError(f"{key('seeds')}: seeds must be integers in 0..{MAX_SEED}, got {seed!r}")
    hidden = s["hidden"] if isinstance(s["hidden"], list) else [s["hidden"]]
    problem = layer_sizes_problem(_list(hidden, key("hidden")))
    if problem:
        raise UserError(f"{key('hidden')}: {problem}")
    for name in ("lr", "perturbation_sigma"):
        value = s[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not (math.isfinite(value) and value > 0):
            raise UserError(f"{key(name)} must be a number > 0, got {value!r}")
    for attack in _list(s["attacks"], key("attacks")):
        _choice(attack, ATTACKS, key("attacks"))
    eps = _list(s["eps"], key("eps"))
    for e in eps:
        if isinstance(e, bool) or not isinstance(e, (int, float)) or not 0 <= e <= 1:
            raise UserError(f"{key('eps')}: every eps must be a number in [0, 1], got {e!r}")
    spiky = [a for a in s["attacks"] if ATTACKS[a].domain == "spikes"]
    if spiky and any(e != int(e) for e in eps):
        raise UserError(f"{key('eps')}: {spiky[0]} counts spikes per sample, so every eps must be"
                        f" a whole number, got {eps}")
    raw = data.get("grid", {})
    tables = raw if isinstance(raw, list) else [raw]
    if not tables:
        raise UserError(f"{origin}: [[grid]] must hold at least one table")
    grids = tuple(_parse_grid(t, origin if len(tables) == 1 else f"{origin}: grid {i + 1}")
                  for i, t in enumerate(tables))
    return StudyConfig(
        name=s["name"], dataset=s["dataset"], profile=s["profile"], backend=s["backend"],
        seeds=tuple(seeds), steps=s["steps"], epochs=s["epochs"], hidden=tuple(hidden),
        lr=float(s["lr"]), batch_size=s["batch_size"], limit=s["limit"],
        attacks=tuple(s["attacks"]), eps=tuple(float(e) for e in eps),
        iterations=s["iterations"], perturbation_sigma=float(s["perturbation_sigma"]),
        grids=grids)


def _parse_grid(table: object, origin: str) -> Grid:
    """Validate one [grid] table; missing axes take their single default value."""
    from snn_deploy.coding import ENCODERS
    from snn_deploy.train.rules import RULES

    if not isinstance(table, dict):
        raise UserError(f"{origin}: [grid] must be a table or an array of tables")
    _no_unknown(table, set(_GRID_DEFAULTS), f"{origin}: [grid]")
    g = {**_GRID_DEFAULTS, **table}

    def key(name: str) -> str:
        return f"{origin}: [grid] {name}"

    for enc in _list(g["encoding"], key("encoding")):
        _choice(enc, ENCODERS, key("encoding"))
    for loss in _list(g["loss"], key("loss")):
        if not isinstance(loss, str):
            raise UserError(f"{key('loss')}: expected a string like 'first_spike', got {loss!r}")
        try:
            loss_keywords(loss)
        except UserError as exc:
            raise UserError(f"{key('loss')}: {exc}") from None
    for rule in _list(g["rule"], key("rule")):
        _choice(rule, RULES, key("rule"))
    for rec in _list(g["recurrent"], key("recurrent")):
        if not isinstance(rec, bool):
            raise UserError(f"{key('recurrent')}: use true or false, got {rec!r}")
    for reg in _list(g["regulariser"], key("regulariser")):
        _check_regulariser(reg, key("regulariser"))
    return Grid(encoding=tuple(g["encoding"]), loss=tuple(g["loss"]), rule=tuple(g["rule"]),
                recurrent=tuple(g["recurrent"]), regulariser=tuple(g["regulariser"]))


def _table(data: dict, name: str, origin: str) -> dict:
    value = data.get(name, {})
    if not isinstance(value, dict):
        raise UserError(f"{origin}: [{name}] must be a table")
    return value


def _no_unknown(table: dict, known: set[str], where: str) -> None:
    unknown = sorted(set(table) - known)
    if unknown:
        raise UserError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")


def _typed(table: dict, name: str, kind: type, key: Callable[[str], str]) -> None:
    if not isinstance(table[name], kind):
        raise UserError(f"{key(name)} must be a {kind.__name__}, got {table[name]!r}")


def _choice(value: object, known: dict | tuple | frozenset, where: str) -> None:
    if not isinstance(value, str) or value not in known:
        raise UserError(f"{where}: unknown value {value!r} (choose from {', '.join(known)})")


def _positive_int(value: object, where: str, *, top: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top:
        raise UserError(f"{where} must be an integer in 1..{top}, got {value!r}")


def _list(value: object, where: str) -> list:
    if not isinstance(value, list) or not value:
        raise UserError(f"{where} must be a non-empty list, got {value!r}")
    if len({json.dumps(v) for v in value}) != len(value):
        raise UserError(f"{where}: repeated value in {value!r}")
    return value


def _check_regulariser(text: object, where: str) -> None:
    from snn_deploy.train.bptt import TrainOptions

    if not isinstance(text, str):
        raise UserError(f"{where}: expected a string like 'noise:0.1', got {text!r}")
    try:
        TrainOptions(**regulariser_keywords(text)).check()
    except UserError as exc:
        raise UserError(f"{where} {text!r}: {exc}") from None


# --- running -----------------------------------------------------------------------------------


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
    from snn_deploy import api
    from snn_deploy.attack.base import AttackSettings
    from snn_deploy.data import load_dataset
    from snn_deploy.evaluate.accuracy import evaluate_target
    from snn_deploy.evaluate.energy import price
    from snn_deploy.evaluate.robustness import Evaluator, SourceSpec, sweep
    from snn_deploy.evaluate.stability import Perturbation, perturbation_report
    from snn_deploy.quantize.deployment import save_deployment
    from snn_deploy.targets import load_target
    from snn_deploy.train.model import save_checkpoint

    stem = models_dir / cell.id
    say("training")
    result = api.train(dataset=config.dataset, hidden=config.hidden, encoding=cell.encoding,
                       steps=config.steps, epochs=config.epochs, seed=cell.seed, lr=config.lr,
                       batch_size=config.batch_size, recurrent=cell.recurrent, rule=cell.rule,
                       **loss_keywords(cell.loss), **regulariser_keywords(cell.regulariser))
    save_checkpoint(result.model, stem.with_suffix(".pt"), extra={
        "seed": cell.seed, "epochs": config.epochs, "test_accuracy": result.test_accuracy,
        "options": dataclasses.asdict(result.options)})
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
    ev = evaluate_target(target, split, backend=config.backend, limit=config.limit,
                         seed=cell.seed)
    energy = price(ev.activity, dep.profile)
    metrics: dict[str, float] = {
        "float_test_accuracy": result.test_accuracy,
        "clean_accuracy": ev.accuracy,
        "spikes_per_sample": ev.activity.spikes_per_sample,
        "synops_per_sample": ev.activity.synops_per_sample,
        "energy_per_sample_nj": math.nan if energy is None else energy.per_sample_nj,
    }
    evaluator = Evaluator(target, split, backend=config.backend, limit=config.limit,
                          seed=cell.seed)
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


def robust_key(attack: str, eps: float) -> str:
    return f"robust_{attack}_eps{eps:g}"


def metric_names(config: StudyConfig) -> list[str]:
    """The metrics of every cell, in table order."""
    robust = [robust_key(a, e) for a in config.attacks for e in sorted(config.eps)]
    return ["float_test_accuracy", "clean_accuracy", *robust, "perturbation_ms",
            "spikes_per_sample", "synops_per_sample", "energy_per_sample_nj"]


def _write_json(record: dict, path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(record, indent=2, allow_nan=True) + "\n")


# --- aggregation and output --------------------------------------------------------------------

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
        values = [_cell_text(row[f"{m}_mean"], row[f"{m}_std"],
                             3 if "accuracy" in m or m.startswith("robust") else 4 if m == "perturbation_ms" else 1)
                  for m in metrics]
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
