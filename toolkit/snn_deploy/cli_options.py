"""Argument types and shared pieces of the ``snn-deploy`` command (``snn_deploy.cli``): progress
output, and the option stacks of its longest commands (``train_options``, ``attack_options``).

Every number a user gives is bounded here (``Finite``, ``SEED``, ``STEPS``, ...), before any work;
SIGTERM and SIGHUP unwind a command as Ctrl-C does.
"""

from __future__ import annotations

import math
import sys
import threading

import click

from snn_deploy.attack.base import NORMS as ATTACK_NORMS
from snn_deploy.bounds import MAX_BATCH, MAX_EPOCHS, MAX_ITERATIONS, MAX_SEED, MAX_STEPS, layer_sizes_problem
from snn_deploy.coding import ENCODERS
from snn_deploy.convert.ann_to_snn import NORMS as CONVERT_NORMS
from snn_deploy.convert.nirgraph import RESETS
from snn_deploy.data import DATASETS
from snn_deploy.errors import UserError
from snn_deploy.quantize.retune import MODES as RETUNE_MODES
from snn_deploy.run.backends import BACKENDS, DEPLOYED_BACKENDS
from snn_deploy.run.emulator import INPUT_AS
from snn_deploy.run.probes import PROBES, V_CONVENTIONS, parse_probes
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


def option_stack(*options):
    """The options as one decorator, in the order given (the order --help shows)."""
    def apply(command):
        for option in reversed(options):
            command = option(command)
        return command
    return apply


train_options = option_stack(  # snn-deploy train
    click.option("--dataset", type=click.Choice(sorted(DATASETS)), default="digits", show_default=True),
    click.option("--encoding", type=click.Choice(sorted(ENCODERS)), default="rate", show_default=True),
    click.option("--hidden", default=None, callback=hidden_or_default,
                 help="Hidden layer sizes, e.g. 128,64 (default 128; with --ann --conv: none)."),
    click.option("--steps", type=STEPS, default=32, show_default=True, help="Time steps per sample."),
    click.option("--epochs", type=click.IntRange(1, MAX_EPOCHS), default=30, show_default=True),
    click.option("--lr", type=Finite(0.0, 10.0, open_low=True), default=2e-3, show_default=True),
    click.option("--batch-size", type=click.IntRange(1, MAX_BATCH), default=64, show_default=True),
    click.option("--seed", type=SEED, default=0, show_default=True),
    click.option("--ann", is_flag=True, help="Train a ReLU ANN (for `snn-deploy convert`) instead."),
    click.option("--conv", is_flag=True, help="With --ann: a small conv block before the dense layers."),
    click.option("--adversarial", type=click.Choice(ADVERSARIAL_CHOICES),
                 default="none", show_default=True,
                 help="Adversarial training: fgsm or pgd (SNN), pgd or trades (--ann)."),
    click.option("--eps", type=Finite(0.0, 1.0), default=0.1, show_default=True,
                 help="With --adversarial: L-inf radius in the input range [0, 1]."),
    click.option("--attack-steps", type=click.IntRange(1, 10_000), default=None,
                 help="With --adversarial pgd/trades: steps per example (default 7 SNN, 10 ANN)."),
    click.option("--beta", type=NON_NEGATIVE, default=6.0, show_default=True,
                 help="With --adversarial trades: weight of the KL term."),
    click.option("--recurrent", is_flag=True,
                 help="Hidden LIF layers with recurrent weights (exported as NIR cycles)."),
    click.option("--rule", type=click.Choice(RULE_CHOICES), default="bptt",
                 show_default=True, help="Learning rule: BPTT, or layer-local DECOLLE / e-prop."),
    click.option("--loss", type=click.Choice(LOSS_CHOICES),
                 default="count", show_default=True,
                 help="Loss and output decoder: spike count, first-spike time (temporal) or maximum"
                      " membrane potential over time (docs/coding.md)."),
    click.option("--decoder-beta", type=POSITIVE, default=1.0, show_default=True,
                 help="Logit scale: -beta * first spike time (steps), or beta * max membrane"
                      " (units of the threshold)."),
    click.option("--init", "init", type=click.Choice(INIT_CHOICES), default="auto",
                 show_default=True,
                 help="auto: scale up hidden layers the default init leaves silent on training data"
                      " (e.g. latency coding); default: PyTorch's initialisation unchanged."),
    click.option("--noise-sigma", type=NON_NEGATIVE, default=0.0, show_default=True,
                 help="Gaussian-noise training: sigma on the input values."),
    click.option("--kappa", type=Finite(0.0, 1.0), default=0.5, show_default=True,
                 help="Weight of the clean loss against the perturbed one (noise/adversarial)."),
    click.option("--perturbation-weight", type=NON_NEGATIVE, default=0.0, show_default=True,
                 help="Membrane-potential perturbation regulariser (Ding et al. ICML 2024), alpha."),
    click.option("--out", type=click.Path(dir_okay=False), required=True, help="Checkpoint (.pt)."),
)


def check_train_flags(*, ann: bool, conv: bool, adversarial: str) -> None:
    """Options that do not apply to the kind of network being trained are refused."""
    ctx = click.get_current_context()
    snn_only = ("encoding", "steps", "recurrent", "rule", "loss", "decoder_beta", "init",
                "noise_sigma", "kappa", "perturbation_weight")
    given = {p for p in snn_only if ctx.get_parameter_source(p).name != "DEFAULT"}
    if ann and given:
        raise UserError(f"--{sorted(given)[0].replace('_', '-')} does not apply to --ann (an ANN"
                        " has no time steps, input coding or spiking options; `snn-deploy convert`"
                        " sets them)")
    if ann and adversarial == "fgsm":
        raise UserError("--adversarial fgsm is for SNNs; an ANN takes pgd or trades")
    if not ann and (conv or adversarial == "trades"):
        raise UserError("--conv and --adversarial trades apply to --ann only")


attack_options = option_stack(  # snn-deploy attack (with slurm_options)
    click.option("--backend", type=click.Choice(ATTACK_BACKENDS), default="emulator",
                 show_default=True, help="Where adversarial inputs are verified and counted."),
    click.option("--attack", "attacks", default="pgd", show_default=True, callback=names,
                 help="Comma-separated: fgsm, pgd, apgd-ce, apgd-dlr, square, gaussian, uniform,"
                      " spike-flip, spike-jitter."),
    click.option("--eps", default="0,0.05,0.1,0.2,0.5,1.0", show_default=True, callback=floats,
                 help="Comma-separated budgets (input range for value attacks; spikes or steps for"
                      " spike attacks)."),
    click.option("--norm", type=click.Choice(ATTACK_NORM_CHOICES), default="linf", show_default=True),
    click.option("--iterations", type=click.IntRange(1, MAX_ITERATIONS), default=20, show_default=True),
    click.option("--restarts", type=click.IntRange(1, 1000), default=1, show_default=True),
    click.option("--step-size", type=POSITIVE, default=None, help="Default: 2.5 eps / iterations (PGD)."),
    click.option("--eot", type=click.IntRange(1, 10_000), default=1, show_default=True,
                 help="Encoder draws averaged per gradient (expectation over transformation)."),
    click.option("--queries", type=click.IntRange(1, 10**7), default=1000, show_default=True,
                 help="Query budget per sample (Square)."),
    click.option("--source", "sources", default="twin", show_default=True, callback=names,
                 help="Gradient sources, comma-separated: twin, bptr, float (transfer)."),
    click.option("--surrogate", default="fast_sigmoid,triangle", show_default=True, callback=names,
                 help="Surrogate shapes for twin/float sources with --ensemble (the first otherwise):"
                      " fast_sigmoid, triangle, exponential, rectangular, ste."),
    click.option("--width", type=POSITIVE, default=0.5, show_default=True,
                 help="Surrogate width relative to the threshold."),
    click.option("--ensemble", is_flag=True,
                 help="Per-sample worst case over all sources, surrogates and attacks, each attack on"
                      " the points still robust (AutoAttack-style)."),
    click.option("--limit", type=COUNT, default=None, help="Attack the first N test samples only."),
    click.option("--dataset", type=click.Choice(sorted(DATASETS)), default=None),
    click.option("--seed", type=SEED, default=0, show_default=True,
                 help="Seeds the encoder and the attacks' random starts."),
    click.option("--device", default="cpu", show_default=True, help="torch device for the emulator."),
    click.option("--energy-profile", default=None,
                 help="Price energy with this profile (default: the Deployment's)."),
    click.option("--no-checks", is_flag=True, help="Skip the validity checks (not recommended)."),
    click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None,
                 help="Write the report JSON here."),
    click.option("--report-dir", type=click.Path(file_okay=False), default=None,
                 help="Write report.json, report.md and PNG plots into this folder."),
)


run_options = option_stack(  # snn-deploy run: input modes and per-layer recording (emulator)
    click.option("--input-as", type=click.Choice(list(INPUT_AS)), default="spikes",
                 show_default=True,
                 help="spikes: time-major input through the first synapse; bias: one integer per"
                      " neuron of the Deployment's input layer, held as its bias for --steps"
                      " (netx's input block; emulator)."),
    click.option("--steps", type=STEPS, default=None, help="Time steps of a --input-as bias run."),
    click.option("--record", default=None,
                 help=f"Also record every layer's {', '.join(PROBES)} (comma-separated; emulator),"
                      " one LAYER-spikes.npy / -u.npy / -v.npy per layer in --out-dir,"
                      " time-major (T, C, H, W) or (T, n), a batch axis after T for batched input."),
    click.option("--out-dir", type=click.Path(file_okay=False), default=None,
                 help="Folder for the --record files."),
    click.option("--reset-interval", type=STEPS, default=None,
                 help="Record in Lava's global time, every synapse one step late and layer i"
                      " reset when t % interval == i, as netx.hdf5.Network(reset_interval=...)"
                      " runs (default: each layer in its own time, every sample from rest)."),
    click.option("--probe-v", type=click.Choice(list(V_CONVENTIONS)), default="lava",
                 show_default=True,
                 help="v in the step a neuron spikes: lava (0, Lava's v.get()) or chip (128, as"
                      " Loihi 2's probes read it in lava-dl's recordings)."),
)


def check_run_outputs(*, out: str | None, record: str | None,
                      out_dir: str | None) -> tuple[str, ...]:
    """The probes --record asks for; refuses a run that would write nothing, or --record without
    --out-dir."""
    probes = parse_probes(record) if record is not None else ()
    if probes and out_dir is None:
        raise UserError("--record needs --out-dir (the folder for the layer files)")
    if out_dir is not None and not probes:
        raise UserError("--out-dir holds --record files: give --record spikes,u,v")
    if out is None and not probes:
        raise UserError("give --out (the output spikes) or --record with --out-dir")
    return probes
