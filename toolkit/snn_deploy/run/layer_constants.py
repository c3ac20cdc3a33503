"""A Deployment's layers as the emulator's constants on a device: the Dense weights on Lava's grid
in the cheapest exact matmul dtype (``Synapses``), a Conv's kernel (``ConvSynapses``) and each
LIF's decays, bias and threshold (``LayerConstants``), as ``run.emulator`` and ``run.membrane``
step them.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from snn_deploy import lava_formats as lava
from snn_deploy.convert.conv import ConvGeometry
from snn_deploy.errors import UserError
from snn_deploy.profiles import Profile
from snn_deploy.quantize.dense_grid import lava_dense_grid
from snn_deploy.quantize.deployment import Deployment, QuantLayer
from snn_deploy.run.lif_core import INT31, scaled_bias

CONV_WRAP = float(1 << 23)  # Lava's fixed-point Conv wraps its output into 24 bits


def require_kinds(dep: Deployment, kinds: tuple[str, ...], refusal: str, *,
                  no_delays: str | None = None) -> None:
    """Refuse, in one line, a layer whose kind is not in ``kinds``: ``refusal`` (who runs what),
    then the layer; with ``no_delays`` (who runs what, likewise), a layer with synaptic delays
    too. The emulator runs every kind."""
    for i, layer in enumerate(dep.layers):
        if layer.kind not in kinds:
            raise UserError(f"{refusal}, and layer {i} ({layer.neuron}) is"
                            f" {'an' if layer.kind == 'input' else 'a'} {layer.kind} layer:"
                            " run it on the emulator")
        if no_delays is not None and layer.delays is not None:
            raise UserError(f"{no_delays}, and layer {i} ({layer.neuron}) has delays: run it on"
                            " the emulator")


def require_dense(dep: Deployment, what: str) -> None:
    """Refuse what ``what`` does not run yet: conv and input layers, and dense layers with
    synaptic delays."""
    require_kinds(dep, ("dense",), f"{what} runs dense layers only so far",
                  no_delays=f"{what} runs layers without synaptic delays only so far")


def lava_weights(layer: QuantLayer, *, weight_bits: int = lava.WEIGHT_BITS) -> np.ndarray:
    """The weights Lava's fixed-point Dense really uses for this layer."""
    return lava_dense_grid(layer.weights, sign_mode=layer.sign_mode,
                           num_weight_bits=layer.num_weight_bits, weight_bits=weight_bits)


@dataclasses.dataclass(frozen=True)
class Synapses:
    """One fixed-point Dense, on a device: weights on Lava's grid in the matmul dtype."""

    weights: torch.Tensor  # (n_out, n_in)
    matmul_dtype: torch.dtype
    weight_exp: int
    graded: bool
    int32_safe: bool  # the worst-case sum, shifted into u, cannot overflow int32
    peak: float  # worst-case |output| (before the << 6 into u)
    # weights << (weight_exp + activation_shift) in float32, when every sum of them is an exact
    # float32 integer: one matmul then yields what enters u, with no shift, wrap or float64 copy.
    folded: torch.Tensor | None = None

    @classmethod
    def of(cls, w: np.ndarray, *, weight_exp: int, graded: bool, profile: Profile,
           device: torch.device, max_input: int) -> Synapses:
        worst = int(np.abs(w).sum(axis=1).max(initial=0)) * max_input
        # Integer sums are exact in a float type while they stay below its mantissa range; float
        # matmuls have BLAS on CPU, integer ones do not (REFERENCES.md, engineering facts).
        dtype = torch.float32 if worst < 1 << 24 else (
            torch.float64 if worst < 1 << 53 else torch.int64)
        shifted = worst * 2.0 ** weight_exp + (1 if weight_exp < 0 else 0)  # floor: one more
        into_u = worst * 2.0 ** (max(weight_exp, 0) + profile.activation_shift)
        folded = None
        if weight_exp >= 0 and into_u < 1 << 24:
            folded = torch.as_tensor(w * 2.0 ** (weight_exp + profile.activation_shift),
                                     dtype=torch.float32, device=device)
        return cls(weights=torch.as_tensor(w, dtype=dtype, device=device), matmul_dtype=dtype,
                   weight_exp=weight_exp, graded=graded, int32_safe=into_u < INT31,
                   peak=shifted, folded=folded)


@dataclasses.dataclass(frozen=True)
class ConvSynapses:
    """One fixed-point Conv (``quantize.deployment.ConvGeometry``), on a device.

    The correlation is torch's ``conv2d`` with cuDNN off (its FFT and Winograd algorithms are not
    exact): on CPU oneDNN's direct convolution, elsewhere torch's im2col and matmul. Every product
    and partial sum is an integer of magnitude at most ``peak`` = max_co sum |w[co]| * max|input|,
    so a float type whose mantissa holds ``peak`` holds each exactly, in any order of summation:
    float32 on CPU while peak << 6 < 2**24 (then also what enters u is exact in float32, and no
    24-bit wrap can happen), else float64 (peak < 2**53, checked); the result is the integer sum,
    as Lava's int32 arrays give it."""

    weights: torch.Tensor  # (C_out, C_in / groups, kH, kW) in the exact dtype
    geometry: ConvGeometry
    peak: float  # worst-case |output| before the 24-bit wrap
    weight_exp: int = 0  # Lava's fixed-point Conv applies none
    int32_safe: bool = True  # the 24-bit output << 6 stays in int32

    @classmethod
    def of(cls, layer: QuantLayer, *, device: torch.device, max_input: int) -> ConvSynapses:
        assert layer.conv is not None
        w = np.asarray(layer.weights, dtype=np.int64)
        peak = float(np.abs(w).reshape(w.shape[0], -1).sum(axis=1).max(initial=0)) * max_input
        if peak >= 2.0**53:
            raise UserError(f"layer {layer.neuron}: a conv sum can reach {peak:.3g}, beyond the"
                            " 2**53 up to which the emulator's float64 convolution is exact")
        dtype = torch.float32 if device.type == "cpu" and peak < 2.0**18 else torch.float64
        return cls(weights=torch.as_tensor(w, dtype=dtype, device=device),
                   geometry=layer.conv, peak=peak)

    def apply(self, s: torch.Tensor) -> torch.Tensor:
        """(T, B, C_in H W) spikes or levels -> (T, B, C_out H' W') exact integers in the
        weights' dtype, wrapped into 24 bits."""
        g = self.geometry
        steps, batch = s.shape[0], s.shape[1]
        x = s.reshape(steps * batch, *g.in_shape).to(self.weights.dtype)
        with torch.backends.cudnn.flags(enabled=False):
            a = torch.nn.functional.conv2d(x, self.weights, stride=g.stride, padding=g.padding,
                                           dilation=g.dilation, groups=g.groups)
        a = a.reshape(steps, batch, -1)
        if self.peak >= CONV_WRAP:
            a = torch.remainder(a + CONV_WRAP, 2 * CONV_WRAP) - CONV_WRAP
        return a


@dataclasses.dataclass(frozen=True)
class LayerConstants:
    """One layer's integers (as exact float64 where they enter the step loop), on a device."""

    ff: Synapses | ConvSynapses | None  # None: an input layer (no synapse)
    rec: Synapses | None
    u_keep: float  # (4096 - du - 1) / 4096, exact in binary
    v_keep: float  # (4096 - dv) / 4096
    bias: torch.Tensor  # (n,) float64, bias_mant << bias_exp as Lava computes it
    vth: float  # vth << 6
    size: int
    # the recurrent weights on Lava's grid for run/kernel.py, float64, transposed (row j: what
    # neuron j's spike adds)
    rec_wt: np.ndarray | None = None
    delays: torch.Tensor | None = None  # (n,) int64: a DelayDense's delay per neuron

    @classmethod
    def of(cls, layer: QuantLayer, dep: Deployment, device: torch.device,
           max_input: int) -> LayerConstants:
        p = dep.profile
        ff: Synapses | ConvSynapses | None = None
        if layer.kind == "conv":
            ff = ConvSynapses.of(layer, device=device, max_input=max_input)
        elif layer.kind == "dense":
            ff = Synapses.of(lava_weights(layer, weight_bits=p.weight_bits),
                             weight_exp=layer.weight_exp, graded=layer.num_message_bits > 0,
                             profile=p, device=device, max_input=max_input)
        rec = rec_wt = None
        if layer.recurrent is not None:
            r = layer.recurrent
            rec_w = lava_dense_grid(r.weights, sign_mode=r.sign_mode,
                                    num_weight_bits=r.num_weight_bits, weight_bits=p.weight_bits)
            rec = Synapses.of(rec_w, weight_exp=r.weight_exp, graded=False, profile=p,
                              device=device, max_input=1)
            rec_wt = np.ascontiguousarray(rec_w.T, dtype=np.float64)
        bias = scaled_bias(layer.bias_mant, layer.bias_exp)
        unity = float(p.decay_unity)
        return cls(
            ff=ff, rec=rec,
            u_keep=(unity - (layer.du + p.du_offset)) / unity,
            v_keep=(unity - (layer.dv + p.dv_offset)) / unity,
            bias=torch.as_tensor(bias, dtype=torch.float64, device=device),
            vth=float(layer.vth << p.threshold_shift), size=layer.size, rec_wt=rec_wt,
            delays=None if layer.delays is None else torch.as_tensor(
                np.asarray(layer.delays, dtype=np.int64), device=device),
        )

    def delayed(self, a: torch.Tensor) -> torch.Tensor:
        """(T, B, n) synaptic input -> the same with neuron j's column d_j steps later (zeros
        before): Lava's ``DelayDense``, a spike sent at step t reaching neuron j at t + 1 + d_j
        (the 1 is every synapse's step, ``run.emulator``'s local time). Exact: a gather."""
        if self.delays is None or not bool(self.delays.any()):
            return a
        steps = a.shape[0]
        src = torch.arange(steps, device=a.device)[:, None] - self.delays[None, :]  # (T, n)
        index = src.clamp(min=0)[:, None, :].expand(steps, a.shape[1], a.shape[2])
        return torch.gather(a, 0, index) * (src >= 0)[:, None, :].to(a.dtype)


def constants(dep: Deployment, device: torch.device, max_input: int) -> list[LayerConstants]:
    return [LayerConstants.of(layer, dep, device, max(max_input if i == 0 else 1, 1))
            for i, layer in enumerate(dep.layers)]
