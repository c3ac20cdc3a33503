"""Stage 3 (quantize): re-tune a Deployment's thresholds (and weights) after quantization.

Rounding a float network onto a Loihi 2 grid changes every layer's drive a little, and a network
quantized with few bits fires at other rates than the float network it came from. Three modes win
that back; each keeps every number on the profile's grid, so the result is a valid Deployment for
the same profile (integer ``vth`` in the allowed range, weights on Lava's Dense grid, biases as they
were):

    rate     layer by layer, input side first: the integer vth whose mean firing rate on the
             calibration spikes is closest to the float network's rate r_float,
             vth_k = argmin_v |r_k(v) - r_float,k|, found by bisection (r_k falls as v rises);
    grad     Adam on per-layer thresholds (optionally the weight mantissas) through the
             differentiable twin, minimising CE(output spike counts, y) (``quantize.finetune``);
    robust   the same on adversarial examples made per batch through the twin (RFGSM, Tramer et
             al. 2018, or PGD), loss CE(clean) + beta * KL(p_clean || p_adv) (TRADES, Zhang et al.
             2019), as Özdenizci & Legenstein (TMLR 2024) fine-tune converted SNNs.

Rates are spikes per neuron per time step. Re-tuning runs simulators, which live in a later stage
(``run/``): they come in as ``Simulators`` (``snn_deploy.api`` builds them), never imported here.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Sequence

import numpy as np
import torch

from snn_deploy.coding import encode
from snn_deploy.errors import UserError
from snn_deploy.quantize import finetune
from snn_deploy.quantize.deployment import Deployment, validate_deployment
from snn_deploy.quantize.finetune import Adversary, Counts, EpochRecord, Twin, with_vth

MODES = ("rate", "grad", "robust")


@dataclasses.dataclass(frozen=True)
class Simulators:
    """The later-stage runners re-tuning needs (a stage never imports a later one).

    Attributes:
        fixed: (Deployment, (T, B, n) encoded input) -> per-layer (B, n) spike counts of the exact
            integer simulator (``run.emulator.run_emulator(dep, x).counts``).
        twin: Deployment -> its differentiable twin (``run.twin.EmulatorTwin``); only ``grad`` and
            ``robust`` call it.
    """

    fixed: Callable[[Deployment, torch.Tensor], Counts]
    twin: Callable[[Deployment], Twin]


@dataclasses.dataclass(frozen=True)
class LayerChange:
    """One layer before and after re-tuning; rates on the calibration spikes (spikes/neuron/step)."""

    name: str
    vth_before: int
    vth_after: int
    weights_changed: int  # mantissas that differ from the input Deployment's
    rate_float: float | None  # None when no float reference was given
    rate_before: float
    rate_after: float


@dataclasses.dataclass(frozen=True)
class RetuneResult:
    deployment: Deployment
    mode: str
    layers: tuple[LayerChange, ...]
    history: tuple[EpochRecord, ...]  # empty for ``rate``
    best_epoch: int  # the epoch whose parameters ``deployment`` holds (0 = unchanged); 0 for rate
    accuracy_before: float | None  # exact simulator on the calibration set; None without labels
    accuracy_after: float | None
    samples: int
    wall_time_s: float


def retune(dep: Deployment, *, mode: str, x: torch.Tensor, y: torch.Tensor | None,
           simulators: Simulators,
           float_rates: Sequence[float] | Callable[[torch.Tensor], Counts] | None = None,
           seed: int = 0, epochs: int | None = None, lr: float | None = None,
           train_weights: bool = False, weight_lr: float = finetune.DEFAULT_WEIGHT_LR,
           rate_weight: float = finetune.DEFAULT_RATE_WEIGHT,
           batch_size: int = 128, vth_bounds: tuple[int, int] | None = None,
           adversary: Adversary | None = None,
           validation: tuple[torch.Tensor, torch.Tensor] | None = None) -> RetuneResult:
    """Re-tune ``dep``'s thresholds (and, with ``train_weights``, weights) on calibration data.

    Args:
        mode: one of ``MODES``: ``rate``, ``grad`` or ``robust``.
        x: (N, n) calibration values in [0, 1] (a data set's train split), encoded here with the
            Deployment's own coding (``dep.coding``: encoding and steps) and ``seed``.
        y: (N,) int64 labels; required by ``grad`` and ``robust``, used by ``rate`` only to report
            accuracy.
        simulators: the exact simulator and the twin (see ``Simulators``).
        float_rates: the float network's reference for ``rate``: per-layer mean rates, or a
            callable (T, N, n) spikes -> per-layer (N, n) counts of the float network
            (``run.float_backend.run_float(net, s).recording.counts``), run on the same spikes.
        epochs, lr: ``grad``/``robust`` epochs and threshold step (Adam, relative to each layer's
            starting threshold); None takes ``finetune.DEFAULT_EPOCHS`` and ``DEFAULT_LR``.
        train_weights: ``grad``/``robust`` also fine-tune the weight mantissas (on their grid).
        weight_lr: their Adam step, relative to the range of each layer's Dense grid.
        rate_weight: ``grad``/``robust`` penalty on each layer's mean rate drifting from the float
            network's (``float_rates``; without them, from the input Deployment's), relative.
        vth_bounds: (lo, hi) integer range for every re-tuned threshold; default (1, vth_max).
        adversary: ``robust``'s example maker (default ``Adversary()``: RFGSM at eps 0.1).
        validation: (x, y) to pick the best epoch on; default the calibration set itself.

    Raises:
        UserError: an unknown mode, empty or out-of-range data, labels missing or out of range,
            threshold bounds outside the profile's 0..vth_max, or impossible settings.
    """
    started = time.perf_counter()
    cal = _calibrate(dep, mode=mode, x=x, y=y, float_rates=float_rates, vth_bounds=vth_bounds,
                     seed=seed, fixed=simulators.fixed)
    if mode == "rate":
        assert cal.targets is not None
        run = _Tuned(deployment=tune_rates(dep, cal.spikes, cal.targets, simulators.fixed,
                                           cal.bounds),
                     history=(), best_epoch=0, how=f"rate matching on {len(cal.x)} samples")
    else:
        run = _tune_by_gradient(dep, cal, mode=mode, simulators=simulators, validation=validation,
                                seed=seed, epochs=epochs, lr=lr,
                                weight_lr=weight_lr if train_weights else 0.0,
                                rate_weight=rate_weight, batch_size=batch_size, adversary=adversary)
    tuned = dataclasses.replace(run.deployment, calibration=f"{dep.calibration}; re-tuned: {run.how}")
    validate_deployment(tuned, origin="re-tuned deployment")
    after = simulators.fixed(tuned, cal.spikes)
    return RetuneResult(
        deployment=tuned, mode=mode,
        layers=_changes(dep, tuned, cal.targets, cal.before, after, cal.steps),
        history=run.history, best_epoch=run.best_epoch,
        accuracy_before=_accuracy(cal.before, cal.y), accuracy_after=_accuracy(after, cal.y),
        samples=len(cal.x), wall_time_s=time.perf_counter() - started,
    )


@dataclasses.dataclass(frozen=True)
class _Calibration:
    """The checked calibration data, encoded with the Deployment's coding, and what it gives."""

    x: torch.Tensor  # (N, n) float32 values in [0, 1]
    y: torch.Tensor | None  # (N,) int64 labels
    bounds: tuple[int, int]  # the vth range re-tuning may use
    steps: int
    spikes: torch.Tensor  # (T, N, n) the encoded input
    before: Counts  # the input Deployment's per-layer counts on ``spikes``
    targets: list[float] | None  # the float network's per-layer mean rates, if given


@dataclasses.dataclass(frozen=True)
class _Tuned:
    """What one re-tuning mode made, and a line saying how (for ``Deployment.calibration``)."""

    deployment: Deployment
    history: tuple[EpochRecord, ...]
    best_epoch: int
    how: str


def _calibrate(dep: Deployment, *, mode: str, x: torch.Tensor, y: torch.Tensor | None,
               float_rates: Sequence[float] | Callable[[torch.Tensor], Counts] | None,
               vth_bounds: tuple[int, int] | None, seed: int,
               fixed: Callable[[Deployment, torch.Tensor], Counts]) -> _Calibration:
    """Check the mode and the data, encode ``x`` and run the input Deployment on it (see ``retune``)."""
    if mode not in MODES:
        raise UserError(f"unknown re-tuning mode {mode!r}: choose from {', '.join(MODES)}")
    if mode == "rate" and float_rates is None:
        raise UserError("re-tuning by rate needs the float network's rates (float_rates)")
    x, y = check_data(dep, x, y, what="calibration", need_labels=mode != "rate")
    bounds = check_bounds(dep, vth_bounds)
    steps = dep.coding.steps
    spikes = encode(x, encoding=dep.coding.encoding, steps=steps, seed=seed)
    before = fixed(dep, spikes)
    targets = _float_targets(float_rates, spikes, dep) if float_rates is not None else None
    return _Calibration(x=x, y=y, bounds=bounds, steps=steps, spikes=spikes, before=before,
                        targets=targets)


def _tune_by_gradient(dep: Deployment, cal: _Calibration, *, mode: str, simulators: Simulators,
                      validation: tuple[torch.Tensor, torch.Tensor] | None, seed: int,
                      epochs: int | None, lr: float | None, weight_lr: float, rate_weight: float,
                      batch_size: int, adversary: Adversary | None) -> _Tuned:
    """``grad`` or ``robust``: fine-tune through the twin (``finetune``; arguments as ``retune``'s,
    ``weight_lr`` 0 when the weights stay)."""
    sel = check_data(dep, *validation, what="validation", need_labels=True) \
        if validation is not None else (cal.x, cal.y)
    assert cal.y is not None and sel[1] is not None
    settings = finetune.settings(mode=mode, epochs=epochs, lr=lr, weight_lr=weight_lr,
                                 rate_weight=rate_weight, batch_size=batch_size, seed=seed,
                                 adversary=adversary)
    rates = cal.targets if cal.targets is not None else mean_rates(cal.before, cal.steps)
    run = finetune.finetune(dep, x=cal.x, y=cal.y, select=(sel[0], sel[1]), fixed=simulators.fixed,
                            make_twin=simulators.twin, settings=settings, bounds=cal.bounds,
                            rates=rates)
    how = (f"{mode} fine-tuning on {len(cal.x)} samples, {settings.epochs} epochs, seed {seed},"
           f" best epoch {run.best_epoch}")
    return _Tuned(deployment=run.deployment, history=run.history, best_epoch=run.best_epoch,
                  how=how)


def check_data(dep: Deployment, x: torch.Tensor, y: torch.Tensor | None, *, what: str,
               need_labels: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(N, n) values in [0, 1] and (N,) labels of the output layer's classes, or a UserError."""
    x = torch.as_tensor(x)
    if x.ndim != 2 or x.shape[0] == 0:
        raise UserError(f"{what} data must be (N, n) values with N >= 1, got shape {tuple(x.shape)}")
    if x.shape[1] != dep.input_size:
        raise UserError(f"{what} data has {x.shape[1]} features, the deployment takes"
                        f" {dep.input_size}")
    x = x.to(torch.float32)
    if not torch.isfinite(x).all() or float(x.min()) < 0 or float(x.max()) > 1:
        raise UserError(f"{what} values must lie in [0, 1], got"
                        f" {float(x.min()):.4g}..{float(x.max()):.4g}")
    if y is None:
        if need_labels:
            raise UserError(f"re-tuning by gradient needs {what} labels")
        return x, None
    y = torch.as_tensor(y)
    classes = dep.layers[-1].size
    if y.shape != (x.shape[0],) or y.is_floating_point():
        raise UserError(f"{what} labels must be ({x.shape[0]},) integers, got {tuple(y.shape)}"
                        f" {y.dtype}")
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= classes):
        raise UserError(f"{what} labels must lie in 0..{classes - 1}, got"
                        f" {int(y.min())}..{int(y.max())}")
    return x, y.to(torch.int64)


def check_bounds(dep: Deployment, bounds: tuple[int, int] | None) -> tuple[int, int]:
    """The threshold range re-tuning may use: default (1, vth_max); within 0..vth_max."""
    vmax = dep.profile.vth_max
    if bounds is None:
        return 1, vmax
    lo, hi = bounds
    if not (isinstance(lo, (int, np.integer)) and isinstance(hi, (int, np.integer))) \
            or not 0 <= lo <= hi <= vmax:
        raise UserError(f"threshold bounds {lo}..{hi} must be integers with"
                        f" 0 <= lo <= hi <= {vmax} (profile {dep.profile.name}, "
                        f"{dep.profile.threshold_bits}-bit vth)")
    return int(lo), int(hi)


def mean_rates(counts: Counts, steps: int) -> list[float]:
    """Per-layer spikes per neuron per step."""
    return [float(np.mean(c)) / steps if np.size(c) else 0.0 for c in counts]


def _float_targets(float_rates: Sequence[float] | Callable[[torch.Tensor], Counts],
                   spikes: torch.Tensor, dep: Deployment) -> list[float]:
    if callable(float_rates):
        counts = float_rates(spikes)
        if len(counts) != dep.depth:
            raise UserError(f"the float network has {len(counts)} layers, the deployment"
                            f" {dep.depth}")
        return mean_rates(counts, spikes.shape[0])
    rates = [float(r) for r in float_rates]
    if len(rates) != dep.depth or not all(0 <= r <= 1 for r in rates):
        raise UserError(f"float_rates needs {dep.depth} rates in [0, 1] (spikes per neuron and"
                        f" step), got {rates}")
    return rates


def tune_rates(dep: Deployment, spikes: torch.Tensor, targets: Sequence[float],
               fixed: Callable[[Deployment, torch.Tensor], Counts],
               bounds: tuple[int, int]) -> Deployment:
    """Per layer, input side first, the vth in ``bounds`` whose mean rate is closest to the target.

    A layer's rate depends only on the layers before it, so each search runs the Deployment cut
    after that layer. Bisection finds the boundary where the rate falls to the target (the rate
    falls as vth rises); the answer is the evaluated vth closest in rate (ties: closest to the
    starting vth), so a non-monotone rate cannot make it worse than any value it tried.
    """
    steps = spikes.shape[0]
    layers = list(dep.layers)
    for k, target in enumerate(targets):
        cut = layers[:k]
        tried: dict[int, float] = {}

        def rate_at(vth: int) -> float:
            if vth not in tried:
                trial = dataclasses.replace(dep, layers=tuple(cut) + (with_vth(layers[k], vth, dep),))
                tried[vth] = mean_rates(fixed(trial, spikes)[k:k + 1], steps)[0]
            return tried[vth]

        start = min(max(layers[k].vth, bounds[0]), bounds[1])
        rate_at(start)
        lo, hi = bounds
        if rate_at(lo) > target and rate_at(hi) <= target:
            while hi - lo > 1:  # invariant: rate(lo) > target >= rate(hi)
                mid = (lo + hi) // 2
                if rate_at(mid) <= target:
                    hi = mid
                else:
                    lo = mid
        best = min(tried, key=lambda v: (abs(tried[v] - target), abs(v - start)))
        layers[k] = with_vth(layers[k], best, dep)
    return dataclasses.replace(dep, layers=tuple(layers))


def _accuracy(counts: Counts, y: torch.Tensor | None) -> float | None:
    if y is None:
        return None
    predicted = np.asarray(counts[-1]).argmax(axis=1)  # most spikes, ties to the lowest class
    return float((predicted == y.numpy()).mean())


def _changes(dep: Deployment, tuned: Deployment, targets: Sequence[float] | None,
             before: Counts, after: Counts, steps: int) -> tuple[LayerChange, ...]:
    r0, r1 = mean_rates(before, steps), mean_rates(after, steps)
    return tuple(
        LayerChange(name=a.neuron, vth_before=a.vth, vth_after=b.vth,
                    weights_changed=int(np.sum(a.weights != b.weights)),
                    rate_float=None if targets is None else targets[k],
                    rate_before=r0[k], rate_after=r1[k])
        for k, (a, b) in enumerate(zip(dep.layers, tuned.layers)))


def format_retune(result: RetuneResult) -> str:
    """A plain-text summary: accuracy before/after and a row per layer."""
    lines = [f"re-tuned by {result.mode} on {result.samples} samples in"
             f" {result.wall_time_s:.1f} s"]
    if result.accuracy_before is not None and result.accuracy_after is not None:
        lines.append(f"calibration accuracy (exact simulator): {result.accuracy_before:.4f} ->"
                     f" {result.accuracy_after:.4f}")
    lines.append(f"{'layer':<12} {'vth':>17} {'rate float':>10} {'rate fixed':>17} {'weights':>8}")
    for c in result.layers:
        ref = "-" if c.rate_float is None else f"{c.rate_float:.4f}"
        lines.append(f"{c.name:<12} {c.vth_before:>8}->{c.vth_after:<8} {ref:>10}"
                     f" {c.rate_before:>8.4f}->{c.rate_after:<8.4f} {c.weights_changed:>8}")
    return "\n".join(lines)

