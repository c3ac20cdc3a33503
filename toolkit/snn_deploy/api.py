"""The pipeline as Python functions, one per CLI command; the CLI is a thin shell over these."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from snn_deploy.coding import BINARY_ENCODINGS, ENCODERS, encode, encoded_width
from snn_deploy.convert.export import model_to_nir, write_nir
from snn_deploy.convert.nirfile import read_nir
from snn_deploy.convert.nirgraph import RESETS, SOURCE_RESETS, FloatNetwork, graph_to_network, with_reset
from snn_deploy.data import load_dataset
from snn_deploy.errors import InputFileError, UserError
from snn_deploy.fileio import regular_input
from snn_deploy.profiles import load_profile
from snn_deploy.quantize.deployment import Deployment
from snn_deploy.quantize.fixed_point import quantize_network
from snn_deploy.quantize.fidelity import FidelityLayer, count_correlation, fidelity
from snn_deploy.quantize.retune import MODES as RETUNE_MODES
from snn_deploy.quantize.retune import RetuneResult, Simulators, retune
from snn_deploy.run.emulator import run_emulator
from snn_deploy.run.float_backend import run_float
from snn_deploy.run.twin import EmulatorTwin
from snn_deploy.train.bptt import EpochStats, TrainOptions, TrainResult, train_snn
from snn_deploy.train.model import ModelConfig, load_checkpoint

CALIBRATION_SAMPLES = 256  # training samples used to calibrate the peak synaptic current
# Random input on which deploy measures what a source model's reset by subtraction changes
# (when no calibration data is given): Bernoulli spikes, fixed seed.
EFFECT_SAMPLES, EFFECT_STEPS, EFFECT_RATE = 16, 100, 0.1


def train(*, dataset: str, hidden: tuple[int, ...], encoding: str, steps: int, epochs: int,
          seed: int, lr: float, batch_size: int, recurrent: bool = False, rule: str = "bptt",
          loss: str = "count", decoder_beta: float = 1.0, noise_sigma: float = 0.0,
          adversarial: str = "none", eps: float = 0.1, attack_steps: int = 7, kappa: float = 0.5,
          perturbation_weight: float = 0.0, init: str = "auto",
          on_epoch: Callable[[EpochStats], None] | None = None) -> TrainResult:
    """Train the reference Norse LIF network on a data set.

    ``recurrent``: hidden layers with recurrent weights (exported as NIR cycles). ``rule``: bptt,
    decolle or eprop (``train.rules``). ``loss``: count, first_spike or max_membrane, which also
    sets the decoder recorded in the checkpoint ("spike_count"; "first_spike": logits
    -decoder_beta * t_first; "max_membrane": logits decoder_beta * max_t v_t / v_th; coding.md).
    Stability (``train.bptt``): ``noise_sigma`` (Gaussian-noise training) or ``adversarial`` fgsm|pgd
    with ``eps`` and ``attack_steps``; ``kappa`` weighs the clean loss against the perturbed one;
    ``perturbation_weight`` is alpha of the membrane-perturbation regulariser. ``init``: auto (wake
    silent hidden layers, ``train.init``) or default (PyTorch's initialisation as it is).
    """
    if encoding not in ENCODERS:
        raise UserError(f"unknown encoding {encoding!r}: choose from {', '.join(ENCODERS)}")
    if not hidden or any(h < 1 for h in hidden):
        raise UserError(f"--hidden needs positive layer sizes, got {hidden}")
    for name, value in (("--steps", steps), ("--epochs", epochs), ("--batch-size", batch_size)):
        if value < 1:
            raise UserError(f"{name} must be >= 1, got {value}")
    if not lr > 0:
        raise UserError(f"--lr must be > 0, got {lr}")
    options = TrainOptions(rule=rule, loss=loss, decoder_beta=decoder_beta,
                           noise_sigma=noise_sigma, adversarial=adversarial, eps=eps,
                           attack_steps=attack_steps, kappa=kappa,
                           perturbation_weight=perturbation_weight, init=init)
    options.check()
    split = load_dataset(dataset)
    config = ModelConfig(input_size=encoded_width(encoding, split.n_inputs), hidden=hidden,
                         output_size=split.n_classes,
                         encoding=encoding, steps=steps, dataset=dataset, recurrent=recurrent,
                         decoder=options.decoder, decoder_beta=decoder_beta)
    return train_snn(config, split, epochs=epochs, seed=seed, lr=lr, batch_size=batch_size,
                     options=options, on_epoch=on_epoch)


def export(checkpoint: str | Path, out: str | Path) -> FloatNetwork:
    """Checkpoint -> NIR file; returns the graph as read back from the written file."""
    model = load_checkpoint(Path(checkpoint))
    write_nir(model_to_nir(model), out)
    return graph_to_network(read_nir(out))


@dataclasses.dataclass(frozen=True)
class RunResult:
    output: np.ndarray  # output layer spikes, uint8, in the input's layout
    samples: int
    steps: int


def run(model: str | Path, *, input_path: str | Path, backend: str, device: str = "cpu",
        dt: float | None = None) -> RunResult:
    """Run given time-major input (T, n) or (T, B, n) on a backend.

    Binary-spike deployments take only 0/1 values; graded (direct-coded) ones values in [0, 1].
    """
    from snn_deploy.evaluate.accuracy import check_backend, run_backend
    from snn_deploy.targets import load_target

    target = load_target(model, dt=dt)
    check_backend(target, backend)
    x = load_npy(input_path)
    shape = target.network.shape if target.network is not None else (target.input_size,)
    x3, single = time_major(x, shape, what=str(input_path))
    graded = (target.deployment.input_scale > 1) if target.deployment is not None else \
        str(target.coding.get("encoding", "rate")) not in BINARY_ENCODINGS
    if not graded and not np.isin(x3, (0, 1)).all():
        raise UserError(f"{input_path}: this model takes spikes, but the input holds values other"
                        " than 0 and 1")
    if graded and (x3.min() < 0 or x3.max() > 1):
        raise UserError(f"{input_path}: graded input must lie in [0, 1], got"
                        f" {x3.min():.4g}..{x3.max():.4g}")
    xt = torch.from_numpy(np.ascontiguousarray(x3, dtype=np.float32))
    out = run_backend(target, backend, [xt], device=device).output
    return RunResult(output=out[:, 0] if single else out, samples=x3.shape[1], steps=x3.shape[0])


def time_major(x: np.ndarray, shape: tuple[int, ...], *, what: str) -> tuple[np.ndarray, bool]:
    """(T, n), (T, *shape), (T, B, n) or (T, B, *shape) -> ((T, B, n), whether one sample)."""
    n = int(np.prod(shape))
    layouts = {(n,), tuple(shape)}
    if x.ndim >= 2 and tuple(x.shape[1:]) in layouts and x.shape[0] >= 1:
        return x.reshape(x.shape[0], 1, n), True
    if x.ndim >= 3 and tuple(x.shape[2:]) in layouts and min(x.shape[:2]) >= 1:
        return x.reshape(x.shape[0], x.shape[1], n), False
    also = "" if len(shape) == 1 else f", or (T, *input) / (T, B, *input), input {tuple(shape)}"
    raise UserError(f"{what}: shape {x.shape} does not fit {n} input channels: expected (T, n) or"
                    f" (T, B, n){also}")


@dataclasses.dataclass(frozen=True)
class DeployResult:
    deployment: Deployment
    warnings: tuple[str, ...]
    retuning: RetuneResult | None = None
    fidelity: tuple[FidelityLayer, ...] = ()  # on the calibration input; empty without data
    notes: tuple[str, ...] = ()  # how the NIR import read the writer's conventions
    source_effect: SourceEffect | None = None  # with a source_reset other than "zero"


def calibration_input(network: FloatNetwork, *, dataset: str | None, calibration: str | None,
                      seed: int) -> torch.Tensor | None:
    """Encoded calibration input (T, N, n) from a data set's train split or a .npy file.

    A file holds either values in [0, 1], (N, n) or (N, *input_shape), which the graph's own
    coding (its metadata, else rate coding over 32 steps) turns into spikes, or input already
    encoded, (T, N, n) or (T, N, *input_shape): 0/1 spikes, or levels in [0, 1] for a graph with
    graded (direct-coded) input.
    """
    coding = network.coding
    encoding, steps = str(coding.get("encoding", "rate")), int(coding.get("steps", 32))
    if dataset is not None and calibration is not None:
        raise UserError("give --dataset or --calibration, not both")
    shape = network.shape
    layouts = "(N, n) or (N, *input) values, (T, N, n) or (T, N, *input) spikes"
    want = f"input {shape}, n = {network.input_size}"
    if dataset is not None:
        x = load_dataset(dataset).x_train[:CALIBRATION_SAMPLES]
        what = f"the {dataset} data set"
    elif calibration is not None:
        raw = load_npy(calibration)
        what = str(calibration)
        encoded = raw.ndim == len(shape) + 2 and tuple(raw.shape[2:]) == shape or \
            raw.ndim == 3 and raw.shape[2] == network.input_size
        if raw.ndim < 2 or 0 in raw.shape:
            raise UserError(f"{what}: calibration data of shape {raw.shape}: give {layouts}"
                            f" ({want})")
        if encoded:
            graded = encoding not in BINARY_ENCODINGS
            if not graded and not np.isin(raw, (0, 1)).all():
                raise UserError(f"{what}: encoded calibration input {raw.shape} for a graph that"
                                " takes spikes holds values other than 0 and 1")
            x = torch.from_numpy(raw.reshape(raw.shape[0], raw.shape[1], -1)).to(torch.float32)
        else:
            x = torch.from_numpy(raw.reshape(len(raw), -1)).to(torch.float32)
        if x.min() < 0 or x.max() > 1:
            raise UserError(f"{what}: calibration values must lie in [0, 1], got"
                            f" {float(x.min()):.4g}..{float(x.max()):.4g}")
    else:
        return None
    if x.ndim == 2:  # values -> the graph's own coding
        x = encode(x, encoding=encoding, steps=steps, seed=seed)
    x = x.reshape(x.shape[0], x.shape[1], -1)
    if x.shape[-1] != network.input_size:
        raise UserError(f"{what} gives {x.shape[-1]} input channels after {encoding} coding, the"
                        f" graph takes {network.input_size} ({want}): give {layouts}")
    return x


# numpy 1.26's default max_header_size (numpy/lib/format.py), in characters; its own check comes
# after it has read the header, whose length field (4 bytes in versions 2 and 3) is checked first.
NPY_HEADER_MAX = 10_000
NPY_LENGTH_BYTES = {(1, 0): 2, (2, 0): 4, (3, 0): 4}  # the header length field of each version


def load_npy(path: str | Path) -> np.ndarray:
    """A numeric array from a user's .npy file, checked before its data is read: a regular file
    (``regular_input``: no FIFO or device), a header of format 1, 2 or 3, a dtype torch takes
    (bool, int, uint, float up to 64 bits; returned in native byte order) and exactly
    prod(shape) * itemsize bytes after the header, so nothing larger than the file is allocated;
    finite values. Never unpickles objects."""
    path = regular_input(path)
    fmt = np.lib.format
    try:
        with path.open("rb") as f:
            version = fmt.read_magic(f)
            if version not in NPY_LENGTH_BYTES:
                raise ValueError(f"unknown .npy format version {version}")
            start = f.tell()
            length = int.from_bytes(f.read(NPY_LENGTH_BYTES[version]), "little")
            if length > NPY_HEADER_MAX:
                raise ValueError(f"header of {length:,} bytes, more than {NPY_HEADER_MAX:,}")
            f.seek(start)
            # version 3 is version 2 with a UTF-8 header: the same for a numeric dtype's ASCII one
            read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape, fortran, dtype = read_header(f, max_header_size=NPY_HEADER_MAX)
            if dtype.kind not in "biuf" or dtype.itemsize > 8:
                raise InputFileError(f"{path} must hold a numeric array, got dtype {dtype}")
            if min(shape, default=0) < 0:
                raise InputFileError(f"{path}: the header declares the negative shape {shape}")
            nbytes = math.prod(shape) * dtype.itemsize  # Python ints: no overflow
            follow = os.fstat(f.fileno()).st_size - f.tell()
            if nbytes != follow:
                raise InputFileError(f"{path}: the header declares shape {shape} of {dtype},"
                                     f" {nbytes:,} bytes, but {follow:,} bytes follow it")
            data = bytearray(nbytes)
            if f.readinto(data) != nbytes:
                raise InputFileError(f"{path} changed while it was read")
    except (ValueError, EOFError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputFileError(f"{path} is not a readable .npy array: {first}") from None
    except OSError as exc:
        raise InputFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    arr = np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")
    arr = arr.astype(dtype.newbyteorder("="), copy=False)
    if not np.all(np.isfinite(arr)):
        raise InputFileError(f"{path} holds NaN or Inf")
    return arr


@dataclasses.dataclass(frozen=True)
class SourceEffect:
    """What running the graph as its source model did (``source_reset``) instead of as NIR and a
    Loihi 2 LIF do (reset to v_reset, one spike per step) changes in the float graph.

    ``layer_change``: per layer (name, relative change of the total spike count, NIR vs source);
    ``count_corr``: Pearson correlation of the output spike counts over (sample, neuron);
    ``argmax_same``: share of samples whose output argmax (spike count) is the same.
    """

    source_reset: str
    where: str
    samples: int
    layer_change: tuple[tuple[str, float], ...]
    count_corr: float
    argmax_same: float

    def message(self) -> str:
        changes = ", ".join(f"{name} {100 * c:+.1f}%" for name, c in self.layer_change)
        return (f"the source model ran its neurons as {self.source_reset!r}"
                f" ({SOURCE_RESETS[self.source_reset]}), NIR and a Loihi 2 LIF reset to v_reset"
                f" with one spike per step: on {self.where}, spike counts NIR vs source: {changes};"
                f" output spike counts correlate {self.count_corr:.3f}, output argmax unchanged"
                f" on {100 * self.argmax_same:.1f}% of {self.samples} samples")


def reset_effect(network: FloatNetwork, x: torch.Tensor, *, source_reset: str = "subtract",
                 where: str = "the given input") -> SourceEffect:
    """What running the neurons as the source model did (``SOURCE_RESETS``) instead of resetting
    to v_reset (NIR, Loihi 2) changes in the float graph on input ``x`` (T, B, n)."""
    nir_run = run_float(network, x).recording
    src = run_float(with_reset(network, source_reset), x).recording
    changes = tuple((name, (int(a.sum()) - int(b.sum())) / max(int(b.sum()), 1))
                    for name, a, b in zip(nir_run.layer_names, nir_run.counts, src.counts))
    same = float(np.mean(nir_run.counts[-1].argmax(axis=1) == src.counts[-1].argmax(axis=1)))
    return SourceEffect(source_reset=source_reset, where=where, samples=int(x.shape[1]),
                        layer_change=changes, count_corr=count_correlation(nir_run.counts[-1],
                                                     src.counts[-1]),
                        argmax_same=same)


def random_spikes(network: FloatNetwork, *, seed: int, samples: int = EFFECT_SAMPLES,
                  steps: int = EFFECT_STEPS, rate: float = EFFECT_RATE) -> torch.Tensor:
    """(steps, samples, n) Bernoulli(rate) spikes from a seeded generator."""
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand((steps, samples, network.input_size), generator=gen) < rate).float()


def deploy(nir_path: str | Path, *, profile: str, dt: float | None = None,
           dataset: str | None = None, calibration: str | None = None,
           seed: int = 0, retune_mode: str = "none", source_reset: str = "zero") -> DeployResult:
    """NIR file -> Deployment for a profile, calibrated on data when it is given, and re-tuned
    after quantization (``retune_mode``: none, rate, grad or robust; see quantize/retune.py).

    ``source_reset``: how the model that the graph came from reset its neurons
    (``convert.nirgraph.SOURCE_RESETS``). NIR (and Loihi 2) reset v to v_reset with one spike per
    step; a model that reset by subtraction (snnTorch's "subtract") or ran as Sinabs does
    (several spikes per step, subtraction, a floor under an IF's v) cannot say so in NIR. With
    any but "zero", the warnings say what the difference does to the float graph's spike counts,
    on the calibration input or on random spikes, and ``source_effect`` holds the figures.
    """
    if source_reset not in RESETS:
        raise UserError(f"unknown --source-reset {source_reset!r}: choose from {', '.join(RESETS)}")
    if retune_mode not in ("none", *RETUNE_MODES):
        raise UserError(f"unknown --retune {retune_mode!r}: choose from none, {', '.join(RETUNE_MODES)}")
    if retune_mode in ("grad", "robust") and dataset is None:
        raise UserError(f"--retune {retune_mode} needs labelled data: give --dataset")
    if retune_mode == "rate" and dataset is None and calibration is None:
        raise UserError("--retune rate needs data: give --dataset or --calibration")
    prof = load_profile(profile)
    nir_path = Path(nir_path)
    network = graph_to_network(read_nir(nir_path), dt=dt)
    decoder = str(network.coding.get("decoder", "spike_count"))
    if retune_mode in ("grad", "robust") and decoder != "spike_count":
        raise UserError(f"--retune {retune_mode} trains on the spike-count decoder's loss, but this"
                        f" graph is read out by {decoder}: use --retune rate or none")
    source = nir_path.read_bytes()
    x = calibration_input(network, dataset=dataset, calibration=calibration, seed=seed)
    float_run = run_float(network, x) if x is not None else None
    if float_run is not None:
        u_peaks: list[float] | None = list(float_run.u_peaks)
        how = f"{dataset or calibration}: {x.shape[1]} samples x {x.shape[0]} steps, seed {seed}"
    else:
        u_peaks, how = None, "weights only (worst-case current bound)"
    encoding = str(network.coding.get("encoding", "rate"))
    effect = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if source_reset != "zero":
            probe = x if x is not None else random_spikes(network, seed=seed)
            where = how if x is not None else (f"random spikes, p = {EFFECT_RATE}, {EFFECT_SAMPLES}"
                                               f" samples x {EFFECT_STEPS} steps, seed {seed}")
            effect = reset_effect(network, probe, source_reset=source_reset, where=where)
            warnings.warn(effect.message(), stacklevel=2)
        dep = quantize_network(
            network, prof, graded_input=encoding not in BINARY_ENCODINGS, u_peaks=u_peaks,
            source_sha256=hashlib.sha256(source).hexdigest(), source_nir=source, calibration=how,
        )
    tuning = None
    if retune_mode != "none":
        tuning = _retune(dep, network, mode=retune_mode, dataset=dataset, calibration=calibration,
                         seed=seed)
        dep = tuning.deployment
    report: tuple[FidelityLayer, ...] = ()
    if x is not None and float_run is not None:
        report = fidelity(dep, network, float_counts=float_run.recording.counts,
                          fixed_counts=run_emulator(dep, x).counts, steps=x.shape[0])
    return DeployResult(deployment=dep, warnings=tuple(str(w.message) for w in caught),
                        retuning=tuning, fidelity=report, notes=network.notes,
                        source_effect=effect)


def _retune(dep: Deployment, network: FloatNetwork, *, mode: str, dataset: str | None,
            calibration: str | None, seed: int) -> RetuneResult:
    """Re-tune on the whole training split (values and labels) or, for ``rate``, on 2-d values."""
    if dataset is not None:
        split = load_dataset(dataset)
        x, y = split.x_train, split.y_train
    else:
        assert calibration is not None
        values = load_npy(calibration)
        if values.ndim != 2:
            raise UserError(f"--retune rate with --calibration needs (N, features) values in [0, 1],"
                            f" got shape {values.shape}")
        x, y = torch.from_numpy(values).to(torch.float32), None
    return retune(dep, mode=mode, x=x, y=y, seed=seed, train_weights=mode != "rate",
                  simulators=Simulators(fixed=lambda d, s: run_emulator(d, s).counts,
                                        twin=EmulatorTwin),
                  float_rates=lambda s: run_float(network, s).recording.counts)
