"""The ``snn-deploy`` command: parse, seed, call one library function, print, write one file.

Exit status: 0 on success, 2 on bad input (one line on stderr), 1 on an internal error.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import signal
import sys
import threading
import warnings
from pathlib import Path
from typing import Iterator

import click

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
from snn_deploy.errors import Terminated, UserError
from snn_deploy.fileio import all_or_nothing, check_writable, read_text_bounded
from snn_deploy.run.backends import BACKENDS

EXIT_BAD_INPUT = 2
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


def _hidden(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"expected sizes like 128 or 128,64, got {value!r}") from None
    problem = layer_sizes_problem(sizes)
    if problem:
        raise click.BadParameter(problem)
    return sizes


def _hidden_or_default(ctx: click.Context, param: click.Parameter,
                       value: str | None) -> tuple[int, ...] | None:
    return None if value is None else _hidden(ctx, param, value)


def _check_outputs(*outputs: str | Path | None, inputs: tuple[str | Path | None, ...]) -> None:
    """Before any work: every output writable and none of them an input of the command (nor the
    same file twice); see ``fileio.check_writable`` for what else is refused."""
    given = [Path(o) for o in outputs if o is not None]
    sources = [i for i in inputs if i is not None]
    for k, out in enumerate(given):
        check_writable(out, inputs=sources)
        for other in given[:k]:
            if os.path.abspath(out) == os.path.abspath(other):
                raise UserError(f"{out} is named as two outputs of this command")


def _device(name: str) -> str:
    import torch

    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device: unknown torch device {name!r} (use cpu, cuda or cuda:N)") from None
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"--device {name}: snn-deploy runs on cpu or cuda, not {device.type}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available on this machine")
    return name


def _progress(desc: str, total: int):
    return _bar(total=total, desc=desc, unit="step", leave=False)


def _bar(*, total: int, desc: str, unit: str, leave: bool = True):
    """A tqdm bar on stderr (off when stderr is not a terminal). Its lock is a thread lock:
    tqdm's default makes a multiprocessing lock, which fixes multiprocessing's start method, and
    Lava's import, which sets it to fork, then fails in the same process."""
    from tqdm import tqdm

    tqdm.set_lock(threading.RLock())
    return tqdm(total=total, desc=desc, unit=unit, leave=leave, file=sys.stderr,
                disable=None)


def _slurm_options(command):
    """--partition / --board: the Loihi 2 system of Intel's cloud that a loihi2 run goes to."""
    command = click.option("--board", default=None,
                           help="loihi2 only: run on this board of Intel's cloud (SLURM).")(command)
    return click.option("--partition", default=None,
                        help="loihi2 only: run on this SLURM partition of Intel's cloud"
                             " (default: SLURM's choice).")(command)


def _profile_file(profile: str | None) -> str | None:
    """A --profile given as a file path (an input of the command), or None for a name."""
    return profile if profile is not None and str(profile).endswith(".toml") else None


def _select_host(backend: str, partition: str | None, board: str | None) -> None:
    """Point later loihi2 runs at the partition or board (lava.utils.loihi.use_slurm_host)."""
    if partition is None and board is None:
        return
    if backend != "loihi2":
        raise UserError(f"--partition and --board choose a Loihi 2 system: they need --backend"
                        f" loihi2, not {backend}")
    from snn_deploy.run.loihi2 import use_slurm_host

    use_slurm_host(partition=partition, board=board)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="snn-deploy")
def cli() -> None:
    """Spiking networks from Norse through NIR to Loihi 2 fixed point and Lava, measured there."""


@cli.command()
@click.option("--dataset", type=click.Choice(sorted(DATASETS)), default="digits", show_default=True)
@click.option("--encoding", type=click.Choice(sorted(ENCODERS)), default="rate", show_default=True)
@click.option("--hidden", default=None, callback=_hidden_or_default,
              help="Hidden layer sizes, e.g. 128,64 (default 128; with --ann --conv: none).")
@click.option("--steps", type=STEPS, default=32, show_default=True, help="Time steps per sample.")
@click.option("--epochs", type=click.IntRange(1, MAX_EPOCHS), default=30, show_default=True)
@click.option("--lr", type=Finite(0.0, 10.0, open_low=True), default=2e-3, show_default=True)
@click.option("--batch-size", type=click.IntRange(1, MAX_BATCH), default=64, show_default=True)
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--ann", is_flag=True, help="Train a ReLU ANN (for `snn-deploy convert`) instead.")
@click.option("--conv", is_flag=True, help="With --ann: a small conv block before the dense layers.")
@click.option("--adversarial", type=click.Choice(["none", "fgsm", "pgd", "trades"]),
              default="none", show_default=True,
              help="Adversarial training: fgsm or pgd (SNN), pgd or trades (--ann).")
@click.option("--eps", type=Finite(0.0, 1.0), default=0.1, show_default=True,
              help="With --adversarial: L-inf radius in the input range [0, 1].")
@click.option("--attack-steps", type=click.IntRange(1, 10_000), default=None,
              help="With --adversarial pgd/trades: steps per example (default 7 SNN, 10 ANN).")
@click.option("--beta", type=NON_NEGATIVE, default=6.0, show_default=True,
              help="With --adversarial trades: weight of the KL term.")
@click.option("--recurrent", is_flag=True,
              help="Hidden LIF layers with recurrent weights (exported as NIR cycles).")
@click.option("--rule", type=click.Choice(["bptt", "decolle", "eprop"]), default="bptt",
              show_default=True, help="Learning rule: BPTT, or layer-local DECOLLE / e-prop.")
@click.option("--loss", type=click.Choice(["count", "first_spike", "max_membrane"]),
              default="count", show_default=True,
              help="Loss and output decoder: spike count, first-spike time (temporal) or maximum"
                   " membrane potential over time (docs/coding.md).")
@click.option("--decoder-beta", type=POSITIVE, default=1.0, show_default=True,
              help="Logit scale: -beta * first spike time (steps), or beta * max membrane"
                   " (units of the threshold).")
@click.option("--init", "init", type=click.Choice(["auto", "default"]), default="auto",
              show_default=True,
              help="auto: scale up hidden layers the default init leaves silent on training data"
                   " (e.g. latency coding); default: PyTorch's initialisation unchanged.")
@click.option("--noise-sigma", type=NON_NEGATIVE, default=0.0, show_default=True,
              help="Gaussian-noise training: sigma on the input values.")
@click.option("--kappa", type=Finite(0.0, 1.0), default=0.5, show_default=True,
              help="Weight of the clean loss against the perturbed one (noise/adversarial).")
@click.option("--perturbation-weight", type=NON_NEGATIVE, default=0.0, show_default=True,
              help="Membrane-potential perturbation regulariser (Ding et al. ICML 2024), alpha.")
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="Checkpoint (.pt).")
def train(dataset, encoding, hidden, steps, epochs, lr, batch_size, seed, ann, conv, adversarial,
          eps, attack_steps, beta, recurrent, rule, loss, decoder_beta, init, noise_sigma, kappa,
          perturbation_weight, out) -> None:
    """Train a Norse LIF network with surrogate-gradient BPTT (or, with --ann, a ReLU ANN)."""
    from snn_deploy import api
    from snn_deploy.train.model import save_checkpoint

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
    check_writable(out)
    if ann:
        _train_ann(dataset=dataset, hidden=hidden, conv=conv, epochs=epochs, lr=lr,
                   batch_size=batch_size, seed=seed, adversarial=adversarial, eps=eps,
                   attack_steps=attack_steps if attack_steps is not None else 10, beta=beta,
                   out=out)
        return
    hidden = hidden or (128,)
    bar = _bar(total=epochs, desc="train", unit="epoch")

    def on_epoch(stats) -> None:
        bar.update(1)
        bar.set_postfix(loss=f"{stats.loss:.3f}", train_acc=f"{stats.train_accuracy:.3f}")
        if bar.disable:
            click.echo(f"epoch {stats.epoch}/{epochs}: loss {stats.loss:.4f},"
                       f" train accuracy {stats.train_accuracy:.4f}", err=True)

    result = api.train(dataset=dataset, hidden=hidden, encoding=encoding, steps=steps,
                       epochs=epochs, seed=seed, lr=lr, batch_size=batch_size, recurrent=recurrent,
                       rule=rule, loss=loss, decoder_beta=decoder_beta, noise_sigma=noise_sigma,
                       adversarial=adversarial, eps=eps,
                       attack_steps=attack_steps if attack_steps is not None else 7, kappa=kappa,
                       perturbation_weight=perturbation_weight, init=init, on_epoch=on_epoch)
    bar.close()
    last = result.history[-1]
    save_checkpoint(result.model, Path(out), extra={
        "seed": seed, "epochs": epochs, "test_accuracy": result.test_accuracy,
        "train_accuracy": last.train_accuracy, "loss": last.loss,
        "options": dataclasses.asdict(result.options), "init_gains": list(result.init_gains),
    })
    cfg = result.model.config
    kind = f"{'recurrent ' if recurrent else ''}LIF network ({rule}, {loss} loss"
    click.echo(f"trained {'-'.join(str(n) for n in (cfg.input_size, *hidden, cfg.output_size))}"
               f" {kind}, {encoding} coding, T={steps}) on {dataset}: train accuracy"
               f" {last.train_accuracy:.4f}, test accuracy {result.test_accuracy:.4f}")
    woken = [f"{g:.3g}" for g in result.init_gains if g != 1.0]
    if woken:
        click.echo(f"init: silent hidden layers scaled up by {', '.join(woken)}"
                   f" (gains per hidden layer: {', '.join(f'{g:.3g}' for g in result.init_gains)})")
    click.echo(f"wrote {out}")


def _train_ann(*, dataset, hidden, conv, epochs, lr, batch_size, seed, adversarial, eps,
               attack_steps, beta, out) -> None:
    from snn_deploy.convert.ann_api import save_ann, train_ann

    def on_epoch(stats) -> None:
        click.echo(f"epoch {stats.epoch}/{epochs}: loss {stats.loss:.4f},"
                   f" train accuracy {stats.train_accuracy:.4f}", err=True)

    result = train_ann(dataset=dataset, hidden=hidden, conv=conv, epochs=epochs, lr=lr,
                       batch_size=batch_size, seed=seed, adversarial=adversarial, eps=eps,
                       attack_steps=attack_steps, beta=beta, on_epoch=on_epoch)
    save_ann(result, out, seed=seed)
    how = "" if adversarial == "none" else f", {adversarial} adversarial training at eps {eps:g}"
    click.echo(f"trained ReLU ANN ({'conv' if conv else 'MLP'}{how}) on {dataset}:"
               f" test accuracy {result.test_accuracy:.4f}")
    click.echo(f"wrote {out}")


@cli.command()
@click.argument("ann_path", metavar="ANN.pt", type=click.Path(dir_okay=False))
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="NIR graph (.nir).")
@click.option("--dataset", type=click.Choice(sorted(DATASETS)), default=None,
              help="Calibration data (default: the ANN's own data set).")
@click.option("--steps", type=STEPS, default=32, show_default=True, help="Time steps per sample.")
@click.option("--norm", type=click.Choice(["max", "percentile"]), default="max", show_default=True,
              help="Threshold balancing: max or a percentile of each layer's activations.")
@click.option("--percentile", type=Finite(0.0, 100.0, open_low=True), default=99.9, show_default=True)
@click.option("--threshold-scale", type=POSITIVE, default=1.0, show_default=True,
              help="Multiply every threshold (0.3: Ozdenizci & Legenstein's low-latency scaling).")
@click.option("--encoding", type=click.Choice(["direct", "rate"]), default="direct",
              show_default=True)
@click.option("--calibration-samples", type=COUNT, default=None,
              help="Calibrate on the first N training samples (default: all).")
def convert(ann_path, out, dataset, steps, norm, percentile, threshold_scale, encoding,
            calibration_samples) -> None:
    """Convert a ReLU ANN into a NIR graph of IF neurons with balanced thresholds."""
    from snn_deploy.convert import ann_api
    from snn_deploy.evaluate.report import format_table

    _check_outputs(out, inputs=(ann_path,))
    summary = ann_api.convert(ann_path, out=out, dataset=dataset, steps=steps, norm=norm,
                              percentile=percentile, threshold_scale=threshold_scale,
                              encoding=encoding, calibration_samples=calibration_samples)
    rows = [[layer.name, layer.neurons, layer.activation_scale, layer.threshold,
             f"{layer.active_share:.1%}", f"{layer.saturated_share:.2%}"] for layer in summary.layers]
    click.echo(format_table(["layer", "neurons", "lambda", "threshold", "active", "saturated"], rows))
    click.echo(f"{norm} norm{'' if norm == 'max' else f' ({percentile:g}th percentile)'}, threshold"
               f" scale {threshold_scale:g}, calibrated on {summary.calibration_samples}"
               f" {summary.dataset} samples; {encoding} coding, T = {steps}; ANN test accuracy"
               f" {summary.ann_test_accuracy:.4f}")
    click.echo(f"wrote {out}: {' -> '.join(summary.node_types)}")


@cli.command()
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="NIR file (.nir).")
def export(checkpoint, out) -> None:
    """Export a checkpoint to a NIR graph (dt and coding in its metadata)."""
    from snn_deploy import api

    _check_outputs(out, inputs=(checkpoint,))
    network = api.export(checkpoint, out)
    sizes = "-".join(str(s) for s in [network.input_size, *(layer.size for layer in network.layers)])
    click.echo(f"wrote {out}: {len(network.layers)} layers ({sizes}), dt = {network.dt:g} s")


@cli.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--profile", default="loihi2", show_default=True,
              help="Profile name (see `snn-deploy profiles`) or a path to a .toml file.")
@click.option("--dt", type=POSITIVE, default=None, help="Time step (s) for graphs without one.")
@click.option("--dataset", type=click.Choice(sorted(DATASETS)), default=None,
              help="Calibrate the current range on this data set's training split.")
@click.option("--calibration", type=click.Path(dir_okay=False), default=None,
              help="Calibrate on a .npy array: (N, features) in [0, 1], or encoded (T, N, n) or"
                   " (T, N, *input_shape). Without it or --dataset: scales from weights alone.")
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), required=True,
              help="Deployment file (.deploy.h5).")
@click.option("--netx", "netx_out", type=click.Path(dir_okay=False), default=None,
              help="Also write a lava-dl netx file (needs weight exponent 0: --profile loihi2-netx).")
@click.option("--retune", "retune_mode", type=click.Choice(["none", "rate", "grad", "robust"]),
              default="none", show_default=True,
              help="Re-tune after quantization on --dataset: thresholds to the float rates (rate),"
                   " thresholds and weights for the task loss (grad) or an adversarial one (robust).")
@click.option("--source-reset", type=click.Choice(["zero", "subtract", "sinabs"]), default="zero",
              show_default=True,
              help="How the model the graph came from reset its neurons (NIR cannot say): zero"
                   " (NIR, Loihi 2), subtract (v - threshold: snnTorch reset_mechanism='subtract'),"
                   " sinabs (Sinabs' several spikes per step, subtraction, IF floored at"
                   " -threshold). Other than zero, a warning measures what Loihi's reset changes.")
def deploy(model, profile, dt, dataset, calibration, seed, out, netx_out, retune_mode,
           source_reset) -> None:
    """Quantize a NIR graph for a hardware profile and write a Deployment."""
    from snn_deploy import api
    from snn_deploy.evaluate.report import format_table
    from snn_deploy.quantize.deployment import save_deployment

    _check_outputs(out, netx_out, inputs=(model, calibration, _profile_file(profile)))
    result = api.deploy(model, profile=profile, dt=dt, dataset=dataset, calibration=calibration,
                        seed=seed, retune_mode=retune_mode, source_reset=source_reset)
    for message in result.notes:
        click.echo(f"note: {message}", err=True)
    for message in result.warnings:
        click.echo(f"warning: {message}", err=True)
    dep = result.deployment
    rows = [[layer.neuron, layer.size, layer.sign_mode, layer.weight_exp, layer.du, layer.dv,
             layer.vth, f"{100 * layer.stats.saturated_share:.2f}%",
             f"{100 * layer.stats.u_peak_share:.1f}%"] for layer in dep.layers]
    click.echo(format_table(["layer", "neurons", "sign", "w_exp", "du", "dv", "vth", "saturated",
                             "u peak / range"], rows))
    click.echo(f"profile {dep.profile.name}; calibration: {dep.calibration}")
    if result.retuning is not None:
        from snn_deploy.quantize.retune import format_retune

        click.echo(format_retune(result.retuning))
    if result.fidelity:
        from snn_deploy.quantize.fidelity import format_fidelity

        click.echo("fidelity on the calibration input (float graph vs emulator):")
        click.echo(format_fidelity(result.fidelity))
    with all_or_nothing():  # both files or neither
        if netx_out:  # first: it refuses what netx cannot carry
            from snn_deploy.quantize.netx import write_netx

            write_netx(dep, netx_out)
        save_deployment(dep, out)
    click.echo(f"wrote {out}")
    if netx_out:
        click.echo(f"wrote {netx_out} (lava-dl netx)")


@cli.command("import-netx")
@click.argument("net", type=click.Path(dir_okay=False))
@click.option("--profile", default="loihi2", show_default=True,
              help="Profile name or .toml path (netx's own exponents need the range -8..0).")
@click.option("--skip-layers", type=click.IntRange(min=0), default=0, show_default=True,
              help="As netx's Network(skip_layers=...): drop leading layers (e.g. an input neuron).")
@click.option("--num-layers", type=click.IntRange(min=1), default=None,
              help="As netx's Network(num_layers=...): keep only this many layers.")
@click.option("--out", type=click.Path(dir_okay=False), required=True,
              help="Deployment file (.deploy.h5).")
def import_netx(net, profile, skip_layers, num_layers, out) -> None:
    """Read a lava-dl netx network (.net: dense, dense_rec and conv layers) into a Deployment."""
    from snn_deploy.profiles import load_profile
    from snn_deploy.quantize.deployment import save_deployment
    from snn_deploy.quantize.netx import read_netx

    _check_outputs(out, inputs=(net, _profile_file(profile)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dep = read_netx(net, profile=load_profile(profile), skip_layers=skip_layers,
                        num_layers=num_layers)
    for w in caught:
        click.echo(f"warning: {w.message}", err=True)
    save_deployment(dep, out)
    sizes = "-".join(str(s) for s in [dep.input_size, *(layer.size for layer in dep.layers)])
    click.echo(f"imported {net}: {len(dep.layers)} layers ({sizes}); wrote {out}")


@cli.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--backend", type=click.Choice(list(BACKENDS)), default="float", show_default=True)
@click.option("--device", default="cpu", show_default=True,
              help="torch device for the float and emulator backends (cpu, cuda, cuda:1).")
@click.option("--dataset", type=click.Choice(sorted(DATASETS)), default=None,
              help="Data set (default: the one the model was trained on).")
@click.option("--limit", type=COUNT, default=None, help="Evaluate the first N test samples only.")
@click.option("--steps", type=STEPS, default=None, help="Time steps (default: the model's own).")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seeds the input encoder.")
@click.option("--dt", type=POSITIVE, default=None, help="Time step (s) for graphs without one.")
@click.option("--energy-profile", default=None,
              help="Price energy with this profile (default: the Deployment's; float has none).")
@click.option("--perturbation", default=None,
              help="gaussian:SIGMA or fgsm:EPS: also report the membrane-potential perturbation"
                   " mean square of the float model under seeded Gaussian input noise, or on the"
                   " FGSM adversarial set of the float model (Ding et al. 2024).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None,
              help="Write the report JSON here.")
@_slurm_options
def evaluate(model, backend, device, dataset, limit, steps, seed, dt, energy_profile,
             perturbation, json_out, partition, board) -> None:
    """Accuracy, activity and energy of a checkpoint, NIR graph or Deployment on a backend."""
    from snn_deploy.data import load_dataset
    from snn_deploy.evaluate.accuracy import evaluate_target
    from snn_deploy.evaluate.report import evaluation_report, write_json
    from snn_deploy.profiles import load_profile
    from snn_deploy.targets import load_target

    _check_outputs(json_out, inputs=(model, _profile_file(energy_profile)))
    pricing = load_profile(energy_profile) if energy_profile else None  # a bad name fails first
    from snn_deploy.evaluate.stability import Perturbation, perturbation_report

    noise = Perturbation.parse(perturbation) if perturbation else None
    _select_host(backend, partition, board)
    target = load_target(model, dt=dt)
    name = dataset or str(target.coding.get("dataset", "digits"))
    split = load_dataset(name)
    bar = None

    def on_progress(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = _progress(backend, total)
        bar.n = done
        bar.refresh()

    ev = evaluate_target(target, split, backend=backend, limit=limit, steps=steps, seed=seed,
                         device=_device(device), on_progress=on_progress)
    if bar is not None:
        bar.close()
    report = evaluation_report(ev, target=target, dataset=name, energy_profile=pricing)
    if noise is not None:
        report.update(perturbation_report(target, split, noise, limit=limit, steps=ev.steps,
                                          seed=seed))
    _print_reports([report])
    if report["on_chip"] is not None:
        from snn_deploy.evaluate.report import format_on_chip

        click.echo(format_on_chip(report["on_chip"]))
    if noise is not None:
        click.echo(f"membrane-potential perturbation MS under {report['perturbation']}:"
                   f" {report['perturbation_ms']:.4g} {report['perturbation_ms_unit']}")
    if json_out:
        write_json(report, json_out)
        click.echo(f"wrote {json_out}")


@cli.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--input", "input_path", type=click.Path(dir_okay=False), required=True,
              help="Spikes (.npy), time-major: (T, n) or (T, *input_shape) for one sample,"
                   " (T, B, n) or (T, B, *input_shape) for a batch.")
@click.option("--backend", type=click.Choice(list(BACKENDS)), default="emulator", show_default=True)
@click.option("--device", default="cpu", show_default=True, help="torch device (float, emulator).")
@click.option("--dt", type=POSITIVE, default=None, help="Time step (s) for graphs without one.")
@click.option("--out", type=click.Path(dir_okay=False), required=True,
              help="Output layer spikes (.npy, uint8), in the input's layout.")
@_slurm_options
def run(model, input_path, backend, device, dt, out, partition, board) -> None:
    """Run a Deployment (or a NIR graph on float) on given input; save the output spikes."""
    import numpy as np

    from snn_deploy import api
    from snn_deploy.fileio import atomic_path

    _check_outputs(out, inputs=(model, input_path))
    _select_host(backend, partition, board)
    result = api.run(model, input_path=input_path, backend=backend, device=_device(device), dt=dt)
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, result.output)
    click.echo(f"{backend}: {result.samples} sample(s) x {result.steps} steps -> output"
               f" {tuple(result.output.shape)}, {int(result.output.sum())} spikes; wrote {out}")


def _floats(ctx: click.Context, param: click.Parameter, value: str) -> tuple[float, ...]:
    try:
        out = tuple(float(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"expected numbers like 0,0.1,0.5, got {value!r}") from None
    if not out:
        raise click.BadParameter("give at least one value")
    return out


def _names(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    out = tuple(v.strip() for v in value.split(",") if v.strip())
    if not out:
        raise click.BadParameter("give at least one name")
    return out


@cli.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--backend", type=click.Choice(["emulator", "lava-sim", "loihi2"]), default="emulator",
              show_default=True, help="Where adversarial inputs are verified and counted.")
@click.option("--attack", "attacks", default="pgd", show_default=True, callback=_names,
              help="Comma-separated: fgsm, pgd, apgd-ce, apgd-dlr, square, gaussian, uniform,"
                   " spike-flip, spike-jitter.")
@click.option("--eps", default="0,0.05,0.1,0.2,0.5,1.0", show_default=True, callback=_floats,
              help="Comma-separated budgets (input range for value attacks; spikes or steps for"
                   " spike attacks).")
@click.option("--norm", type=click.Choice(["linf", "l2"]), default="linf", show_default=True)
@click.option("--iterations", type=click.IntRange(1, MAX_ITERATIONS), default=20, show_default=True)
@click.option("--restarts", type=click.IntRange(1, 1000), default=1, show_default=True)
@click.option("--step-size", type=POSITIVE, default=None, help="Default: 2.5 eps / iterations (PGD).")
@click.option("--eot", type=click.IntRange(1, 10_000), default=1, show_default=True,
              help="Encoder draws averaged per gradient (expectation over transformation).")
@click.option("--queries", type=click.IntRange(1, 10**7), default=1000, show_default=True,
              help="Query budget per sample (Square).")
@click.option("--source", "sources", default="twin", show_default=True, callback=_names,
              help="Gradient sources, comma-separated: twin, bptr, float (transfer).")
@click.option("--surrogate", default="fast_sigmoid,triangle", show_default=True, callback=_names,
              help="Surrogate shapes for twin/float sources with --ensemble (the first otherwise):"
                   " fast_sigmoid, triangle, exponential, rectangular, ste.")
@click.option("--width", type=POSITIVE, default=0.5, show_default=True,
              help="Surrogate width relative to the threshold.")
@click.option("--ensemble", is_flag=True,
              help="Per-sample worst case over all sources, surrogates and attacks, each attack on"
                   " the points still robust (AutoAttack-style).")
@click.option("--limit", type=COUNT, default=None, help="Attack the first N test samples only.")
@click.option("--dataset", type=click.Choice(sorted(DATASETS)), default=None)
@click.option("--seed", type=SEED, default=0, show_default=True,
              help="Seeds the encoder and the attacks' random starts.")
@click.option("--device", default="cpu", show_default=True, help="torch device for the emulator.")
@click.option("--energy-profile", default=None,
              help="Price energy with this profile (default: the Deployment's).")
@click.option("--no-checks", is_flag=True, help="Skip the validity checks (not recommended).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None,
              help="Write the report JSON here.")
@click.option("--report-dir", type=click.Path(file_okay=False), default=None,
              help="Write report.json, report.md and PNG plots into this folder.")
@_slurm_options
def attack(model, backend, attacks, eps, norm, iterations, restarts, step_size, eot, queries,
           sources, surrogate, width, ensemble, limit, dataset, seed, device, energy_profile,
           no_checks, json_out, report_dir, partition, board) -> None:
    """Attack a Deployment and verify every adversarial input on the target backend."""
    from snn_deploy.attack import ATTACKS, attack_names
    from snn_deploy.attack.base import AttackSettings
    from snn_deploy.attack.sources import SOURCE_KINDS
    from snn_deploy.data import load_dataset
    from snn_deploy.evaluate.attack_report import (
        attack_report,
        markdown,
        results_table,
        square_note,
        write_text,
    )
    from snn_deploy.evaluate.checks import run_checks
    from snn_deploy.evaluate.report import write_json
    from snn_deploy.evaluate.robustness import Evaluator, SourceSpec, sweep
    from snn_deploy.profiles import load_profile
    from snn_deploy.run.twin import SURROGATES
    from snn_deploy.targets import load_target

    for name in attacks:
        if name not in ATTACKS:
            raise UserError(f"unknown attack {name!r}: choose from {', '.join(attack_names())}")
    for e in eps:
        if not (e >= 0 and e < float("inf")):
            raise UserError(f"--eps must be finite and >= 0, got {e:g}")
    for kind in sources:
        if kind not in SOURCE_KINDS:
            raise UserError(f"unknown gradient source {kind!r}: choose from {', '.join(SOURCE_KINDS)}")
    for shape in surrogate:
        if shape not in SURROGATES:
            raise UserError(f"unknown surrogate {shape!r}: choose from {', '.join(SURROGATES)}")
    if backend == "loihi2":
        from snn_deploy.run.loihi2 import require_lava_loihi

        require_lava_loihi()
    _select_host(backend, partition, board)
    settings = AttackSettings(norm=norm, iterations=iterations, restarts=restarts,
                              step_size=step_size, eot=eot, queries=queries, seed=seed)
    _check_outputs(json_out, *(Path(report_dir) / name for name in ("report.json", "report.md")
                               if report_dir), inputs=(model, _profile_file(energy_profile)))
    target = load_target(model)
    target.require_deployment()
    name = dataset or str(target.coding.get("dataset", "digits"))
    specs = []
    for kind in sources:
        shapes = surrogate if ensemble else surrogate[:1]
        specs += [SourceSpec(kind)] if kind == "bptr" else \
            [SourceSpec(kind, surrogate=shape, width=width) for shape in shapes]
    ev = Evaluator(target, load_dataset(name), backend=backend, limit=limit, seed=seed,
                   device=_device(device),
                   energy_profile=load_profile(energy_profile) if energy_profile else None)

    def say(msg: str) -> None:
        click.echo(f"  {msg}", err=True)

    result = sweep(ev, attacks=list(attacks), eps=list(eps), settings=settings, sources=specs,
                   ensemble=ensemble, on_progress=say)
    if not no_checks:
        say("validity checks")
        result.diagnostics = run_checks(ev, result, specs)
    report = attack_report(result, target=target, dataset=name, seed=seed)
    click.echo(f"clean accuracy on {backend}: {result.clean_accuracy:.4f} ({result.n} samples)")
    click.echo(results_table(report))
    note = square_note(report)
    if note:
        click.echo(note)
    energy = report["energy_basis"]
    if report["clean"]["energy_per_sample_nj"] is not None:
        click.echo(f"energy per sample (clean): {report['clean']['energy_per_sample_nj']:.2f} nJ,"
                   f" basis: {energy} ({report['energy_profile']}: {report['energy_source']})")
    for c in report["diagnostics"]:
        mark = {True: "ok  ", False: "WARN", None: "skip"}[c["passed"]]
        click.echo(f"[{mark}] {c['check']}: {c['detail']}")
    with all_or_nothing():  # the JSON and the report folder, or none of them
        if json_out:
            write_json(report, json_out)
        if report_dir:
            from snn_deploy.evaluate.plots import write_plots

            out = Path(report_dir)
            plots = write_plots(result, out, energy_basis=energy)
            write_json(report, out / "report.json")
            write_text(markdown(report, plots=plots), out / "report.md")
    if json_out:
        click.echo(f"wrote {json_out}")
    if report_dir:
        click.echo(f"wrote {out / 'report.json'}, {out / 'report.md'} and {len(plots)} plots")


def _print_reports(reports: list[dict]) -> None:
    from snn_deploy.evaluate.report import format_table

    rows = [[r["backend"], r["model_kind"], r["dataset"], r["n"], r["steps"], r["accuracy"],
             r["spikes_per_sample"], r["synops_per_sample"], r.get("energy_per_sample_nj"),
             r.get("energy_basis"), r["wall_time_s"]] for r in reports]
    click.echo(format_table(["backend", "model", "dataset", "n", "T", "accuracy", "spikes/sample",
                             "synops/sample", "energy nJ/sample", "energy basis", "time (s)"],
                            rows))


_NUMERIC_KEYS = {"n", "steps", "accuracy", "spikes_per_sample", "synops_per_sample", "wall_time_s"}
_REPORT_KEYS = {"backend", "model_kind", "dataset", *_NUMERIC_KEYS}


@cli.command()
@click.argument("reports", nargs=-1, required=True, type=click.Path(dir_okay=False))
def compare(reports) -> None:
    """Print evaluate reports (JSON) side by side."""
    loaded = []
    for path in reports:
        text = read_text_bounded(path, limit=MAX_TEXT_BYTES, what="report")
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, RecursionError):
            raise UserError(f"{path} is not a JSON report") from None
        if not isinstance(data, dict):
            raise UserError(f"{path} is not an evaluate report (a JSON {type(data).__name__})")
        missing = sorted(_REPORT_KEYS - set(data))
        if missing:
            raise UserError(f"{path} is not an evaluate report (missing {missing})")
        for key in _NUMERIC_KEYS:
            if not isinstance(data[key], (int, float)) or isinstance(data[key], bool):
                raise UserError(f"{path}: {key} must be a number, got {data[key]!r}")
        loaded.append(data)
    _print_reports(loaded)
    base = loaded[0]["accuracy"]
    for r in loaded[1:]:
        click.echo(f"{r['backend']} vs {loaded[0]['backend']}: accuracy"
                   f" {100 * (r['accuracy'] - base):+.2f} points")


@cli.command()
@click.argument("deployment", type=click.Path(dir_okay=False))
@click.option("--profile", default=None,
              help="Profile whose [limits] apply: a name or a .toml path (default: the Deployment's).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None,
              help="Write the resource report JSON here.")
def resources(deployment, profile, json_out) -> None:
    """Neuro cores and chips a Deployment needs under a profile's limits, and whether it fits."""
    from snn_deploy.evaluate.report import write_json
    from snn_deploy.evaluate.resources import format_resources
    from snn_deploy.evaluate.resources import resources as count
    from snn_deploy.profiles import load_profile
    from snn_deploy.targets import load_target

    _check_outputs(json_out, inputs=(deployment, _profile_file(profile)))
    chosen = load_profile(profile) if profile else None  # a bad name fails first
    dep = load_target(deployment).require_deployment()
    report = count(dep, chosen or dep.profile)
    click.echo(format_resources(report))
    if json_out:
        write_json(report.as_dict(), json_out)
        click.echo(f"wrote {json_out}")


@cli.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), required=True,
              help="Study TOML (see studies/digits.toml).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Output folder (default: study_out/<study name>); finished cells are skipped.")
def study(config_path, out_dir) -> None:
    """Train a grid (coding x decoder x rule x recurrence x regulariser x seeds), deploy every cell,
    attack it on the backend with its own decoder, and write study.csv, study.md and study.png
    (mean and spread over seeds)."""
    from snn_deploy.study import folder_name, load_study, run_study

    config = load_study(config_path)
    out = Path(out_dir) if out_dir is not None else Path("study_out") / folder_name(config.name)
    _check_outputs(*(out / name for name in ("study.csv", "study.md", "study.png")),
                   inputs=(config_path,))
    result = run_study(config, out, on_progress=lambda msg: click.echo(msg, err=True))
    click.echo(f"{len(result.cells)} cells: {result.ran} run, {result.skipped} skipped"
               f" (finished before), {result.failed} failed")
    click.echo(result.markdown_path.read_text())
    click.echo(f"wrote {result.csv_path}, {result.markdown_path}, {result.plot_path}"
               f" (cells in {out / 'cells'})")


@cli.command()
def profiles() -> None:
    """List the hardware profiles shipped with snn-deploy."""
    from snn_deploy.profiles import available_profiles, load_profile

    for name, path in available_profiles().items():
        click.echo(f"{name:10s} {load_profile(name).description}  ({path})")


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated(signum)


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP unwind the command as Ctrl-C does (Lava runtimes stopped, temporary
    files removed) instead of killing it mid-way; the handlers before are restored afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, _raise_terminated)
                for signum in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def main(argv: list[str] | None = None) -> int:
    """Entry point: maps bad input to one line on stderr and exit status 2."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    try:
        with _terminate_as_interrupt():
            cli.main(args=argv, prog_name="snn-deploy", standalone_mode=False)
    except UserError as exc:
        click.echo(f"snn-deploy: error: {exc}", err=True)
        return EXIT_BAD_INPUT
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help() if exc.ctx else str(exc))
        return EXIT_BAD_INPUT
    except click.ClickException as exc:
        click.echo(f"snn-deploy: error: {exc.format_message()}", err=True)
        return EXIT_BAD_INPUT
    except (click.exceptions.Abort, KeyboardInterrupt) as exc:
        cause = exc.__cause__ if isinstance(exc, click.exceptions.Abort) else exc
        if isinstance(cause, Terminated):  # click turns KeyboardInterrupt into Abort
            click.echo(f"snn-deploy: terminated by {signal.Signals(cause.signum).name}", err=True)
            return 128 + cause.signum
        click.echo("snn-deploy: interrupted", err=True)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
