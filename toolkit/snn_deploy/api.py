"""The pipeline as Python functions, one per CLI command; the CLI is a thin shell over these."""

from __future__ import annotations

import dataclasses
import hashlib
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from snn_deploy.coding import BINARY_ENCODINGS, ENCODERS, encode, encoded_width
from snn_deploy.convert.export import model_to_nir, write_nir
from snn_deploy.convert.nirgraph import RESETS, FloatNetwork, graph_to_network, read_nir, with_reset
from snn_deploy.data import load_dataset
from snn_deploy.errors import InputFileError, UserError
from snn_deploy.profiles import load_profile
from snn_deploy.quantize.deployment import Deployment
from snn_deploy.quantize.fixed_point import quantize_network
from snn_deploy.quantize.fidelity import FidelityLayer, fidelity
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
    decolle or eprop (``train.rules``). ``loss``: count or first_spike, which also sets the decoder
    recorded in the checkpoint ("spike_count" or "first_spike"; logits -decoder_beta * t_first).
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


def calibration_input(network: FloatNetwork, *, dataset: str | None, calibration: str | None,
                      seed: int) -> torch.Tensor | None:
    """Encoded calibration input (T, N, n) from a data set's train split or a .npy file."""
    coding = network.coding
    encoding, steps = str(coding.get("encoding", "rate")), int(coding.get("steps", 32))
    if dataset is not None and calibration is not None:
        raise UserError("give --dataset or --calibration, not both")
    if dataset is not None:
        x = load_dataset(dataset).x_train[:CALIBRATION_SAMPLES]
    elif calibration is not None:
        raw = load_npy(calibration)
        shape = network.shape
        if raw.ndim == len(shape) + 2 and tuple(raw.shape[2:]) == shape or \
                raw.ndim == 3 and raw.shape[2] == network.input_size:  # encoded (T, N, *shape)
            x = torch.from_numpy(raw.reshape(raw.shape[0], raw.shape[1], -1)).to(torch.float32)
        else:  # (N, *features) values in [0, 1]
            x = torch.from_numpy(raw.reshape(len(raw), -1)).to(torch.float32)
    else:
        return None
    if x.ndim == 2:  # values -> the graph's own coding
        x = encode(x, encoding=encoding, steps=steps, seed=seed)
    x = x.reshape(x.shape[0], x.shape[1], -1)
    if x.shape[-1] != network.input_size:
        raise UserError(
            f"calibration data has {x.shape[-1]} features, the graph takes {network.input_size}"
        )
    return x


def load_npy(path: str | Path) -> np.ndarray:
    """``np.load`` of a numeric array, never unpickling objects."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"file not found: {path}")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise InputFileError(f"{path} is not a readable .npy array: {exc}") from None
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "biuf":
        raise InputFileError(f"{path} must hold a numeric array, got dtype {arr.dtype}")
    if not np.all(np.isfinite(arr)):
        raise InputFileError(f"{path} holds NaN or Inf")
    return arr


def reset_effect(network: FloatNetwork, x: torch.Tensor) -> str:
    """What resetting by subtraction (the source model) instead of to zero (NIR, Loihi 2) changes
    in the float graph on input ``x`` (T, B, n): relative change of each layer's spike count and
    the share of samples whose output argmax (spike count) stays the same."""
    zero = run_float(network, x).recording
    sub = run_float(with_reset(network, "subtract"), x).recording
    changes = []
    for name, a, b in zip(zero.layer_names, zero.counts, sub.counts):
        total = max(int(b.sum()), 1)
        changes.append(f"{name} {100 * (int(a.sum()) - int(b.sum())) / total:+.1f}%")
    same = float(np.mean(zero.counts[-1].argmax(axis=1) == sub.counts[-1].argmax(axis=1)))
    return (f"spike counts with reset to zero vs by subtraction: {', '.join(changes)}; output"
            f" argmax unchanged on {100 * same:.1f}% of {x.shape[1]} samples")


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

    ``source_reset``: how the model that the graph came from reset its neurons. NIR (and Loihi 2)
    reset v to v_reset; a writer whose model reset by subtraction (snnTorch's "subtract", Sinabs'
    ``MembraneSubtract``) cannot say so in NIR. With "subtract", the warnings include what the
    difference does to the float graph's spike counts, on the calibration input or random spikes.
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
    source = nir_path.read_bytes()
    x = calibration_input(network, dataset=dataset, calibration=calibration, seed=seed)
    if x is not None:
        u_peaks = list(run_float(network, x).u_peaks)
        how = f"{dataset or calibration}: {x.shape[1]} samples x {x.shape[0]} steps, seed {seed}"
    else:
        u_peaks, how = None, "weights only (worst-case current bound)"
    encoding = str(network.coding.get("encoding", "rate"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if source_reset == "subtract":
            probe = x if x is not None else random_spikes(network, seed=seed)
            where = how if x is not None else (f"random spikes, p = {EFFECT_RATE}, {EFFECT_SAMPLES}"
                                               f" x {EFFECT_STEPS} steps, seed {seed}")
            warnings.warn("the source model reset by subtraction, NIR and a Loihi 2 LIF reset to"
                          f" zero: on {where}, " + reset_effect(network, probe), stacklevel=2)
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
    if x is not None:
        report = fidelity(dep, network, float_counts=run_float(network, x).recording.counts,
                          fixed_counts=run_emulator(dep, x).counts, steps=x.shape[0])
    return DeployResult(deployment=dep, warnings=tuple(str(w.message) for w in caught),
                        retuning=tuning, fidelity=report, notes=network.notes)


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
