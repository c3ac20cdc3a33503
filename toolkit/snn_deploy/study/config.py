"""A study's configuration (workflow layer): the TOML schema, its validation (every error one line
naming the key), the grid's cells and the metric names. The format: ``snn_deploy.study``."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import re
from pathlib import Path
from typing import Any, Callable

import tomli

from snn_deploy.attack import ATTACKS
from snn_deploy.bounds import (
    MAX_BATCH,
    MAX_EPOCHS,
    MAX_ITERATIONS,
    MAX_SEED,
    MAX_STEPS,
    MAX_TEXT_BYTES,
    layer_sizes_problem,
)
from snn_deploy.coding import ENCODERS
from snn_deploy.data import DATASETS
from snn_deploy.errors import InputFileError, UserError
from snn_deploy.fileio import read_text_bounded
from snn_deploy.profiles import load_profile
from snn_deploy.train.bptt import LOSSES, TrainOptions
from snn_deploy.train.rules import RULES

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

    if not isinstance(text, str):
        raise UserError(f"{where}: expected a string like 'noise:0.1', got {text!r}")
    try:
        TrainOptions(**regulariser_keywords(text)).check()
    except UserError as exc:
        raise UserError(f"{where} {text!r}: {exc}") from None


# --- running -----------------------------------------------------------------------------------


def robust_key(attack: str, eps: float) -> str:
    return f"robust_{attack}_eps{eps:g}"


def metric_names(config: StudyConfig) -> list[str]:
    """The metrics of every cell, in table order."""
    robust = [robust_key(a, e) for a in config.attacks for e in sorted(config.eps)]
    return ["float_test_accuracy", "clean_accuracy", *robust, "perturbation_ms",
            "spikes_per_sample", "synops_per_sample", "energy_per_sample_nj"]
