"""The differentiable twin of the emulator: same forward, bit for bit, with usable gradients.

Every integer operation of ``run.emulator`` is computed exactly (in float64) in the forward pass and
passes its gradient straight through (``x + (exact(x) - x).detach()``): rounding, the weight grid,
the arithmetic shift, the decay's truncation, the 24-bit wrap of u and the saturation of v. The
threshold ``v > vth << 6`` is a Heaviside step whose derivative is replaced by a surrogate of
selectable shape and width; the width is relative to the threshold, ``x = (v - theta) / theta``.

Layers are Dense (with a DelayDense's per-neuron delays, if any) or Conv (run/twin_layers.py: the
exact correlation, its 24-bit wrap straight through); input layers of neurons are refused.
Gradients reach the input (for attacks), and each layer's float ``weights`` (a Conv's: its
(C_out, C_in / groups, kH, kW) kernel), ``vth`` and ``bias`` parameters (for re-tuning);
``quantized()`` gives back the integers the forward pass used.
Recurrent weights are constants of the twin. Every sample starts from rest, with no spikes on a
recurrent synapse, as on the emulator and lava-sim (run/lava_sim.py).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import numpy as np
import torch

from snn_deploy.errors import UserError
from snn_deploy.quantize.dense_grid import lava_dense_grid
from snn_deploy.quantize.deployment import Deployment
from snn_deploy.run.layer_constants import lava_weights
from snn_deploy.run.lif_core import (
    INT31,
    Ops,
    abs_max,
    bounds,
    decay_,
    fold24,
    lif_update,
    scaled_bias,
    wrap_int32,
)
from snn_deploy.run.twin_layers import conv_drive, conv_weights, delayed, require_twin_kinds
from snn_deploy.run.twin_layers import ste as _ste


def _exact_matmul(s: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """s @ w.T for integer-valued s and w, in float32 (twice BLAS's float64 speed) when no sum can
    reach 2**24, where float32 stops holding integers exactly; else in float64."""
    worst = abs_max(s) * float(w.detach().abs().sum(dim=1).max()) if w.numel() else 0.0
    if worst < 1 << 24:
        return torch.matmul(s.to(torch.float32), w.to(torch.float32).T).to(torch.float64)
    return torch.matmul(s, w.T)


class _Threshold(torch.autograd.Function):
    """Spikes z = [v > theta] (float) and the reset mask (bool), in two operations; backward the
    surrogate derivative at x = (v - theta) / scale, to v and (summed) to theta."""

    @staticmethod
    def forward(ctx, v: torch.Tensor, theta: torch.Tensor, scale: torch.Tensor, shape: str,  # type: ignore[override]
                width: float):
        mask = v > theta
        ctx.save_for_backward(v, theta, scale)
        ctx.shape, ctx.width = shape, width
        ctx.mark_non_differentiable(mask)
        return mask.to(v.dtype), mask

    @staticmethod
    def backward(ctx, grad: torch.Tensor, _mask_grad: torch.Tensor):  # type: ignore[override]
        v, theta, scale = ctx.saved_tensors
        g = grad * SURROGATES[ctx.shape]((v - theta) / scale, ctx.width) / scale
        g_theta = -g.sum().reshape(theta.shape) if ctx.needs_input_grad[1] else None
        return g, g_theta, None, None, None


class _Saturate(torch.autograd.Function):
    """Forward clamp to [-limit, limit], backward identity (straight through)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, limit: float) -> torch.Tensor:  # type: ignore[override]
        return torch.clamp(x, -limit, limit)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return grad, None


class _Decay(torch.autograd.Function):
    """Forward ``lif_core.decay_``, trunc(x * keep); backward the derivative of x * keep, the
    truncation passed straight through."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, keep: float) -> torch.Tensor:  # type: ignore[override]
        ctx.keep = keep
        return decay_(x.clone(), keep)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return grad * ctx.keep, None


# lif_core's integer operations, exact forward, straight through (the decay: its own
# derivative) backward
TWIN_OPS = Ops(decay=_Decay.apply, wrap32=lambda x: _ste(x, wrap_int32),
               fold24=lambda x, big: _ste(x, lambda z: fold24(z, big)), saturate=_Saturate.apply)


# Surrogate derivatives of the Heaviside step at x = (v - theta) / theta, width w > 0.
SURROGATES: dict[str, Callable[[torch.Tensor, float], torch.Tensor]] = {
    "fast_sigmoid": lambda x, w: 1.0 / (1.0 + torch.abs(x) / w) ** 2 / w,  # SuperSpike
    "triangle": lambda x, w: torch.clamp(1.0 - torch.abs(x) / w, min=0.0) / w,  # piecewise linear
    "exponential": lambda x, w: torch.exp(-torch.abs(x) / w) / (2.0 * w),
    "rectangular": lambda x, w: (torch.abs(x) < w / 2).to(x.dtype) / w,
    "ste": lambda x, w: torch.ones_like(x),
}


class _Spike(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, shape: str, width: float) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.shape, ctx.width = shape, width
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad * SURROGATES[ctx.shape](x, ctx.width), None, None


def surrogate_spike(x: torch.Tensor, shape: str, width: float) -> torch.Tensor:
    """Heaviside step of x (spike where x > 0) with the named surrogate derivative."""
    return _Spike.apply(x, shape, width)


@dataclasses.dataclass(frozen=True)
class TwinOutput:
    """Per layer spikes (T, B, n), float64 0/1 carrying surrogate gradients; ``output`` is the last.
    ``membrane``: the (T, B, C) output layer's v before the threshold test and reset, in units of
    its threshold (vth << 6), differentiable (the max-membrane decoder's input)."""

    layers: tuple[torch.Tensor, ...]
    membrane: torch.Tensor | None = None

    @property
    def output(self) -> torch.Tensor:
        return self.layers[-1]


@dataclasses.dataclass(frozen=True)
class _Drive:
    """A layer's input, one tensor per step: what enters u (a_in << 6) for a feed-forward layer,
    the feed-forward Dense's int32 output for a recurrent one (``rec``: its recurrent weights,
    exponent and peak). ``peak``: the largest |input into u|; ``wrap``: whether its shift into u
    can overflow int32."""

    steps: tuple[torch.Tensor, ...]
    peak: float
    wrap: bool
    rec: tuple[torch.Tensor, int, float] | None


class EmulatorTwin(torch.nn.Module):
    """A torch module whose forward equals ``run.emulator`` on its Deployment, bit for bit."""

    def __init__(self, dep: Deployment, *, surrogate: str = "fast_sigmoid", width: float = 0.5):
        super().__init__()
        if surrogate not in SURROGATES:
            raise UserError(f"unknown surrogate {surrogate!r}: choose from {', '.join(SURROGATES)}")
        if not (width > 0 and math.isfinite(width)):
            raise UserError(f"surrogate width must be > 0, got {width}")
        require_twin_kinds(dep)
        self.dep, self.surrogate, self.width = dep, surrogate, width
        p = dep.profile
        self.weights = torch.nn.ParameterList()
        self.vth = torch.nn.ParameterList()
        self.bias = torch.nn.ParameterList()
        for layer in dep.layers:
            w = layer.weights if layer.kind == "conv" else \
                lava_weights(layer, weight_bits=p.weight_bits)
            self.weights.append(torch.nn.Parameter(torch.as_tensor(w, dtype=torch.float64)))
            self.vth.append(torch.nn.Parameter(torch.tensor(float(layer.vth), dtype=torch.float64)))
            bias = scaled_bias(layer.bias_mant, layer.bias_exp, wrap=False)
            self.bias.append(torch.nn.Parameter(torch.as_tensor(bias, dtype=torch.float64)))

    def _grid_weights(self, k: int) -> torch.Tensor:
        layer = self.dep.layers[k]
        if layer.kind == "conv":
            return conv_weights(self.weights[k], self.dep.profile.weight_bits)

        def exact(w: torch.Tensor) -> torch.Tensor:
            rounded = dataclasses.replace(layer, weights=torch.round(w).to(torch.int64).cpu().numpy())
            return torch.as_tensor(lava_weights(rounded, weight_bits=self.dep.profile.weight_bits),
                                   dtype=w.dtype, device=w.device)

        return _ste(self.weights[k], exact)

    def quantized(self) -> list[dict[str, np.ndarray | int]]:
        """The integers the forward pass uses now: weights, vth, bias per layer."""
        vmax = self.dep.profile.vth_max
        return [{"weights": self._grid_weights(k).detach().cpu().numpy().astype(np.int32),
                 "vth": int(torch.clamp(torch.round(self.vth[k].detach()), 0, vmax)),
                 "bias": torch.round(self.bias[k].detach()).cpu().numpy().astype(np.int64)}
                for k in range(len(self.dep.layers))]

    def _shifted(self, acc: torch.Tensor, weight_exp: int, graded: bool) -> torch.Tensor:
        """A Dense's summed input after Lava's int32 wraps and its exponent shift."""
        if graded:
            acc = _ste(acc, wrap_int32)
        if weight_exp > 0:
            acc = _ste(acc * float(1 << weight_exp), wrap_int32)
        elif weight_exp < 0:
            acc = _ste(acc / float(1 << -weight_exp), torch.floor)
        return _ste(acc, wrap_int32)

    def _recurrent(self, k: int) -> tuple[torch.Tensor, int, float] | None:
        rec = self.dep.layers[k].recurrent
        if rec is None:
            return None
        grid = torch.as_tensor(lava_dense_grid(rec.weights, sign_mode=rec.sign_mode,
                                               num_weight_bits=rec.num_weight_bits,
                                               weight_bits=self.dep.profile.weight_bits),
                               dtype=torch.float64)
        peak = float(grid.abs().sum(dim=1).max()) * 2.0 ** rec.weight_exp + 1.0
        return grid, rec.weight_exp, peak

    def forward(self, x: torch.Tensor) -> TwinOutput:
        """(T, B, n) input in [0, 1] (spikes or graded values) -> spikes of every layer and the
        output layer's pre-reset membrane."""
        steps, batch = x.shape[0], x.shape[1]
        x = x.reshape(steps, batch, -1).to(torch.float64)
        if x.shape[2] != self.dep.input_size:
            raise UserError(f"input has {x.shape[2]} channels, the deployment takes {self.dep.input_size}")
        s = _ste(x * self.dep.input_scale if self.dep.input_scale != 1 else x, torch.round)
        outs, membrane = [], []
        for k in range(len(self.dep.layers)):
            s, membrane = self._layer(k, s, membrane=k == len(self.dep.layers) - 1)
            outs.append(s)
        return TwinOutput(layers=tuple(outs), membrane=torch.stack(membrane))

    def _drive(self, k: int, s: torch.Tensor) -> _Drive:
        """Layer k's input into u for each step of (T, B, n_in) presynaptic spikes or levels
        (a DelayDense's: each neuron's column shifted by its delay, as on the emulator)."""
        p, layer = self.dep.profile, self.dep.layers[k]
        shift = float(1 << p.activation_shift)
        w = self._grid_weights(k)
        if layer.conv is not None:  # |a| < 2**23 after the 24-bit wrap: a << 6 fits int32
            act, peak = conv_drive(s, w, layer.conv, shift)
            return _Drive(steps=act.unbind(0), peak=peak, wrap=False, rec=None)
        rec = self._recurrent(k)
        into_u = float(1 << (layer.weight_exp + p.activation_shift)) if layer.weight_exp >= 0 else 0.0
        worst = abs_max(s) * float(w.detach().abs().sum(dim=1).max()) if w.numel() else 0.0
        # A feed-forward layer whose input, shifted into u, cannot leave int32: no wrap can
        # happen, so the exponent and activation shifts are one multiplication.
        folded = rec is None and 0 < into_u and worst * into_u < INT31
        if folded:
            ff = _exact_matmul(s, w) * into_u
        else:
            ff = self._shifted(_exact_matmul(s, w), layer.weight_exp, layer.num_message_bits > 0)
        ff = delayed(ff, layer.delays)
        peak = abs_max(ff) * (1.0 if folded else shift) + (0.0 if rec is None else rec[2] * shift)
        wrap = peak >= INT31
        # per-step slices by unbind: indexing [t] would make the backward pass fill a zero
        # (T, B, n) gradient for every step
        if rec is not None:
            return _Drive(steps=ff.unbind(0), peak=peak, wrap=wrap, rec=rec)
        if not folded:  # the shift into u, for all steps at once
            ff = _ste(ff * shift, wrap_int32) if wrap else ff * shift
        return _Drive(steps=ff.unbind(0), peak=peak, wrap=wrap, rec=None)

    def _layer(self, k: int, s: torch.Tensor, *, membrane: bool
               ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Layer k's (T, B, n) spikes (and, with ``membrane``, its pre-reset v / threshold per
        step) for its presynaptic (T, B, n_in) spikes or levels: ``lif_core.lif_update`` over
        ``TWIN_OPS``, then the surrogate threshold and the reset."""
        p, layer = self.dep.profile, self.dep.layers[k]
        big, unity, shift = float(p.state_max), float(p.decay_unity), float(1 << p.activation_shift)
        drive = self._drive(k, s)
        u_keep = (unity - (layer.du + p.du_offset)) / unity
        v_keep = (unity - (layer.dv + p.dv_offset)) / unity
        theta = _ste(self.vth[k], lambda t: torch.clamp(torch.round(t), 0, p.vth_max))
        theta = theta * float(1 << p.threshold_shift)
        scale = torch.clamp(theta.detach(), min=1.0)
        bias = _ste(self.bias[k], lambda b: wrap_int32(torch.round(b)))
        # Which integer wraps and clamps can change a value, from this input's bounds: the others
        # are identities, forward and backward, and skipped. A trainable bias is added even while
        # it is zero, for its gradient.
        b = bounds(act_peak=drive.peak, u_keep=u_keep, v_keep=v_keep,
                   bias_peak=abs_max(bias.detach()), big=big)
        update = lif_update(TWIN_OPS, dataclasses.replace(
            b, has_bias=b.has_bias or bias.requires_grad))
        u = torch.zeros(s.shape[1], layer.size, dtype=torch.float64, device=s.device)
        v, z = torch.zeros_like(u), torch.zeros_like(u)
        spikes, seen = [], []
        for step in drive.steps:
            act = step
            if drive.rec is not None:  # the LIF's input port sums both Dense outputs (int32)
                w_rec, exp_rec, _ = drive.rec
                a = _ste(step + self._shifted(torch.matmul(z, w_rec.T), exp_rec, False), wrap_int32)
                act = _ste(a * shift, wrap_int32) if drive.wrap else a * shift
            u, v = update(u, v, act, bias, u_keep, v_keep, big)
            if membrane:
                seen.append(v / scale)
            z, fired = _Threshold.apply(v, theta, scale, self.surrogate, self.width)
            v = v.masked_fill(fired, 0.0)
            spikes.append(z)
        return torch.stack(spikes), seen
