"""Stage 3 (quantize): how faithfully a Deployment follows the float network it came from, per layer.

For layer k with float weights W, float threshold theta, scale s (integer voltage units per float
unit), weight exponent e and Lava's activation shift a, ``quantize.fixed_point`` rounds

    w_ideal = s * mem_gain * r * w_in * W / input_scale / 2**(e + a)        (mantissa units)

onto the Dense grid (a multiple of its step, the LSB, within the sign mode's range) and sets
vth * 2**6 = s * theta. The report gives, per layer:

    rate_corr        Pearson correlation of the float and fixed firing rates over every (sample,
                     neuron) pair of the same input spikes (NaN when either side never varies);
    rate_float/fixed mean spikes per neuron per step of each;
    share_saturated  share of weights, threshold and biases that hit a range limit (``LayerStats``);
    rounding_lsb     mean |w_ideal - w_int| / LSB over the weights inside the grid's range (<= 0.5
                     straight from ``quantize_network``; more after weights were re-tuned);
    threshold_ratio  vth * 2**6 / (s * theta): 1 as quantized, the re-tuned threshold's factor after.

Firing rates come from simulators of a later stage (``run/``): the caller runs both on the same
spikes and passes the per-layer counts, so this module stays pure maths.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np

from snn_deploy.convert.conv import per_row
from snn_deploy.convert.nirgraph import FloatNetwork
from snn_deploy.errors import UserError
from snn_deploy.quantize.dense_grid import weight_grid
from snn_deploy.quantize.deployment import Deployment, QuantLayer


@dataclasses.dataclass(frozen=True)
class FidelityLayer:
    name: str
    rate_corr: float
    rate_float: float
    rate_fixed: float
    share_saturated: float
    rounding_lsb: float
    threshold_ratio: float


def ideal_mantissas(layer: QuantLayer, float_weight: np.ndarray, gain: np.ndarray, *,
                    input_scale: int, activation_shift: int) -> np.ndarray:
    """The unrounded mantissas ``quantize_layer`` rounds: gain * W * s / input_scale / 2**(e + a)."""
    w_eff = per_row(gain, float_weight) * float_weight / input_scale
    return w_eff * layer.scale / 2.0 ** (layer.weight_exp + activation_shift)


def rounding_lsb(layer: QuantLayer, ideal: np.ndarray, dep: Deployment) -> float:
    """Mean |ideal - w_int| in LSBs (the grid step) over the weights whose ideal lies in range."""
    profile = dataclasses.replace(dep.profile, num_weight_bits=layer.num_weight_bits)
    grid = weight_grid(profile, layer.sign_mode)
    inside = (ideal >= grid.low) & (ideal <= grid.high)
    if not inside.any():
        return math.nan
    return float(np.mean(np.abs(ideal[inside] - layer.weights[inside])) / grid.step)


def rate_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two equally shaped count arrays, NaN when either is constant."""
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if a.size < 2 or a.std() == 0 or b.std() == 0:
        return math.nan
    return float(np.corrcoef(a, b)[0, 1])


def count_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """``rate_correlation``, defined also where it is NaN: 1 for equal arrays, else 0 (two runs
    that are both silent agree; one silent run against a busy one does not)."""
    r = rate_correlation(a, b)
    if math.isnan(r):
        return 1.0 if np.array_equal(np.ravel(a), np.ravel(b)) else 0.0
    return r


def fidelity(dep: Deployment, network: FloatNetwork, *, float_counts: Sequence[np.ndarray],
             fixed_counts: Sequence[np.ndarray], steps: int) -> tuple[FidelityLayer, ...]:
    """Per-layer fidelity of ``dep`` to ``network`` (its source graph).

    Args:
        float_counts, fixed_counts: per layer, (B, n) spike counts of the float network and of the
            Deployment on the same (T, B, n) input spikes (``Recording.counts`` of the float and
            emulator backends).
        steps: T, to turn counts into spikes per neuron per step.

    Raises:
        UserError: the network and the Deployment do not have the same layers, or the counts do not
            match them.
    """
    if len(network.layers) != dep.depth or any(
            f.neuron != q.neuron or f.weight.shape != q.weights.shape
            for f, q in zip(network.layers, dep.layers)):
        raise UserError("the float network is not the Deployment's source: layers "
                        f"{[f'{f.neuron} {f.weight.shape}' for f in network.layers]} vs "
                        f"{[f'{q.neuron} {q.weights.shape}' for q in dep.layers]}")
    if len(float_counts) != dep.depth or len(fixed_counts) != dep.depth:
        raise UserError(f"need spike counts of all {dep.depth} layers, got {len(float_counts)}"
                        f" float and {len(fixed_counts)} fixed")
    p = dep.profile
    out = []
    for k, (f, q) in enumerate(zip(network.layers, dep.layers)):
        fc, qc = np.asarray(float_counts[k]), np.asarray(fixed_counts[k])
        if fc.shape != qc.shape or fc.ndim != 2 or fc.shape[1] != q.size:
            raise UserError(f"layer {q.neuron}: float counts {fc.shape} and fixed counts"
                            f" {qc.shape} must both be (B, {q.size})")
        spec = f.spec
        ideal = ideal_mantissas(q, f.weight, spec.mem_gain * spec.r * spec.w_in,
                                input_scale=dep.input_scale if k == 0 else 1,
                                activation_shift=p.activation_shift)
        theta = float(spec.v_threshold[0])
        out.append(FidelityLayer(
            name=q.neuron, rate_corr=rate_correlation(fc, qc),
            rate_float=float(fc.mean()) / steps, rate_fixed=float(qc.mean()) / steps,
            share_saturated=q.stats.saturated_share,
            rounding_lsb=rounding_lsb(q, ideal, dep),
            threshold_ratio=q.vth * 2.0 ** p.threshold_shift / (q.scale * theta),
        ))
    return tuple(out)


def format_fidelity(layers: Sequence[FidelityLayer]) -> str:
    """The report as a Markdown table, one row per layer."""
    rows = ["| layer | rate corr | rate float | rate fixed | saturated | rounding (LSB) | vth ratio |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for f in layers:
        rows.append(f"| {f.name} | {f.rate_corr:.4f} | {f.rate_float:.4f} | {f.rate_fixed:.4f} |"
                    f" {f.share_saturated:.2%} | {f.rounding_lsb:.3f} | {f.threshold_ratio:.4f} |")
    return "\n".join(rows)
