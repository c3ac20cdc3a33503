"""Argument types and shared pieces of the ``snn-deploy`` command (``snn_deploy.cli``).

Every number a user gives is bounded here (``Finite``, ``SEED``, ``STEPS``, ...), before any work;
SIGTERM and SIGHUP unwind a command as Ctrl-C does.
"""

from __future__ import annotations

import math
import sys
import threading

import click

from snn_deploy.attack.base import NORMS as ATTACK_NORMS
from snn_deploy.bounds import MAX_SEED, MAX_STEPS, layer_sizes_problem
from snn_deploy.convert.ann_to_snn import NORMS as CONVERT_NORMS
from snn_deploy.convert.nirgraph import RESETS
from snn_deploy.quantize.retune import MODES as RETUNE_MODES
from snn_deploy.run.backends import BACKENDS, DEPLOYED_BACKENDS
from snn_deploy.train.ann import ADVERSARIAL as ANN_ADVERSARIAL
from snn_deploy.train.bptt import INITS, LOSSES
from snn_deploy.train.perturbed import ADVERSARIES
from snn_deploy.train.rules import RULES

# Choices of the commands, from the registries (their order is the order --help shows).
ADVERSARIAL_CHOICES = [*ADVERSARIES, *(a for a in ANN_ADVERSARIAL if a not in ADVERSARIES)]
RULE_CHOICES, LOSS_CHOICES, INIT_CHOICES = list(RULES), list(LOSSES), list(INITS)
CONVERT_NORM_CHOICES, RESET_CHOICES = list(CONVERT_NORMS), list(RESETS)
RETUNE_CHOICES = ["none", *RETUNE_MODES]
ATTACK_BACKENDS = [b for b in BACKENDS if b in DEPLOYED_BACKENDS]
ATTACK_NORM_CHOICES = list(ATTACK_NORMS)

SEED = click.IntRange(0, MAX_SEED)
STEPS = click.IntRange(1, MAX_STEPS)
COUNT = click.IntRange(min=1)


class Finite(click.ParamType):
    """A finite float in [low, high] (``open_low``: low excluded); NaN and Inf are refused, which
    click's FloatRange lets through."""

    name = "float"

    def __init__(self, low: float = -math.inf, high: float = math.inf, *, open_low: bool = False):
        self.low, self.high, self.open_low = low, high, open_low

    def convert(self, value, param, ctx) -> float:
        try:
            x = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(x) or x < self.low or x > self.high or (self.open_low and x == self.low):
            low = f"{self.low:g} <{'' if self.open_low else '='} "
            self.fail(f"{value} is not a finite number in {low}x <= {self.high:g}", param, ctx)
        return x


POSITIVE = Finite(0.0, open_low=True)
NON_NEGATIVE = Finite(0.0)


def hidden(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"expected sizes like 128 or 128,64, got {value!r}") from None
    problem = layer_sizes_problem(sizes)
    if problem:
        raise click.BadParameter(problem)
    return sizes


def hidden_or_default(ctx: click.Context, param: click.Parameter,
                       value: str | None) -> tuple[int, ...] | None:
    return None if value is None else hidden(ctx, param, value)


def floats(ctx: click.Context, param: click.Parameter, value: str) -> tuple[float, ...]:
    try:
        out = tuple(float(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"expected numbers like 0,0.1,0.5, got {value!r}") from None
    if not out:
        raise click.BadParameter("give at least one value")
    return out


def names(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    out = tuple(v.strip() for v in value.split(",") if v.strip())
    if not out:
        raise click.BadParameter("give at least one name")
    return out


def progress_bar(*, total: int, desc: str, unit: str, leave: bool = True):
    """A tqdm bar on stderr (off when stderr is not a terminal). Its lock is a thread lock:
    tqdm's default makes a multiprocessing lock, which fixes multiprocessing's start method, and
    Lava's import, which sets it to fork, then fails in the same process."""
    from tqdm import tqdm

    tqdm.set_lock(threading.RLock())
    return tqdm(total=total, desc=desc, unit=unit, leave=leave, file=sys.stderr,
                disable=None)


class StepBar:
    """A step bar made when the first progress report says how many steps there are."""

    def __init__(self, desc: str):
        self.desc, self.bar = desc, None

    def update(self, done: int, total: int) -> None:
        if self.bar is None:
            self.bar = progress_bar(total=total, desc=self.desc, unit="step", leave=False)
        self.bar.n = done
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def epoch_reporter(epochs: int, *, bar=None):
    """Per epoch: the bar moves on, or (no bar, or the bar off) one line on stderr."""
    def on_epoch(stats) -> None:
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{stats.loss:.3f}", train_acc=f"{stats.train_accuracy:.3f}")
        if bar is None or bar.disable:
            click.echo(f"epoch {stats.epoch}/{epochs}: loss {stats.loss:.4f},"
                       f" train accuracy {stats.train_accuracy:.4f}", err=True)
    return on_epoch


def say(msg: str) -> None:
    click.echo(f"  {msg}", err=True)


def slurm_options(command):
    """--partition / --board: the Loihi 2 system of Intel's cloud that a loihi2 run goes to."""
    command = click.option("--board", default=None,
                           help="loihi2 only: run on this board of Intel's cloud (SLURM).")(command)
    return click.option("--partition", default=None,
                        help="loihi2 only: run on this SLURM partition of Intel's cloud"
                             " (default: SLURM's choice).")(command)
