"""The differentiable twin of the emulator: same forward, bit for bit, with usable gradients.

Every integer operation of ``run.emulator`` is computed exactly (in float64) in the forward pass and
passes its gradient straight through (``x + (exact(x) - x).detach()``): rounding, the weight grid,
the arithmetic shift, the decay's truncation, the 24-bit wrap of u and the saturation of v. The
threshold ``v > vth << 6`` is a Heaviside step whose derivative is replaced by a surrogate of
selectable shape and width; the width is relative to the threshold, ``x = (v - theta) / theta``.

Gradients reach the input (for attacks), and each layer's float ``weights``, ``vth`` and ``bias``
parameters (for re-tuning); ``quantized()`` gives back the integers the forward pass used.
Recurrent weights are constants of the twin, and the spikes a recurrent layer carries from the
previous sample (``run.emulator.LayerTrace.carry_in``) are passed in, detached.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import numpy as np
import torch

from snn_deploy.errors import UserError
from snn_deploy.quantize.deployment import Deployment
from snn_deploy.quantize.fixed_point import lava_dense_grid
from snn_deploy.run.emulator import lava_weights

_INT31, _INT32 = float(1 << 31), float(1 << 32)


def _ste(x: torch.Tensor, exact: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Forward ``exact(x)``, backward identity (and x itself where ``exact`` returns its input)."""
    d = x.detach()
    e = exact(d)
    return x if e is d else x + (e - d)


def _wrap32(x: torch.Tensor) -> torch.Tensor:
    lo, hi = torch.aminmax(x) if x.numel() else (x.new_zeros(()), x.new_zeros(()))
    if lo >= -_INT31 and hi < _INT31:
        return x
    return torch.remainder(x + _INT31, _INT32) - _INT31


_HALF = 0.5 - 2.0 ** -13


def _trunc(x: torch.Tensor) -> torch.Tensor:
    """trunc(x) for multiples of 2**-12 (u * keep): half a unit toward zero, then round; torch's
    trunc is not vectorised on CPU (see run.emulator.decay_)."""
    return torch.round(x - torch.sgn(x) * _HALF)


def _abs_max(x: torch.Tensor) -> float:
    if not x.numel():
        return 0.0
    lo, hi = torch.aminmax(x.detach())
    return max(-float(lo), float(hi))


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
    """Per layer spikes (T, B, n), float64 0/1 carrying surrogate gradients; ``output`` is the last."""

    layers: tuple[torch.Tensor, ...]

    @property
    def output(self) -> torch.Tensor:
        return self.layers[-1]


class EmulatorTwin(torch.nn.Module):
    """A torch module whose forward equals ``run.emulator`` on its Deployment, bit for bit."""

    def __init__(self, dep: Deployment, *, surrogate: str = "fast_sigmoid", width: float = 0.5):
        super().__init__()
        if surrogate not in SURROGATES:
            raise UserError(f"unknown surrogate {surrogate!r}: choose from {', '.join(SURROGATES)}")
        if not (width > 0 and math.isfinite(width)):
            raise UserError(f"surrogate width must be > 0, got {width}")
        self.dep, self.surrogate, self.width = dep, surrogate, width
        p = dep.profile
        self.weights = torch.nn.ParameterList()
        self.vth = torch.nn.ParameterList()
        self.bias = torch.nn.ParameterList()
        for layer in dep.layers:
            w = lava_weights(layer, weight_bits=p.weight_bits)
            self.weights.append(torch.nn.Parameter(torch.as_tensor(w, dtype=torch.float64)))
            self.vth.append(torch.nn.Parameter(torch.tensor(float(layer.vth), dtype=torch.float64)))
            bias = np.where(layer.bias_exp >= 0,
                            layer.bias_mant.astype(np.int64) << np.clip(layer.bias_exp, 0, None),
                            layer.bias_mant.astype(np.int64) >> np.clip(-layer.bias_exp, 0, None))
            self.bias.append(torch.nn.Parameter(torch.as_tensor(bias, dtype=torch.float64)))

    def _grid_weights(self, k: int) -> torch.Tensor:
        layer = self.dep.layers[k]

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
            acc = _ste(acc, _wrap32)
        if weight_exp > 0:
            acc = _ste(acc * float(1 << weight_exp), _wrap32)
        elif weight_exp < 0:
            acc = _ste(acc / float(1 << -weight_exp), torch.floor)
        return _ste(acc, _wrap32)

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

    def forward(self, x: torch.Tensor, carries: list[torch.Tensor | None] | None = None
                ) -> TwinOutput:
        """(T, B, n) input in [0, 1] (spikes or graded values) -> spikes of every layer.

        ``carries[k]`` (B, n) is what recurrent layer k's first step receives on its recurrent
        synapse (``run.emulator.LayerTrace.carry_in``); zeros when not given.
        """
        p = self.dep.profile
        steps, batch = x.shape[0], x.shape[1]
        x = x.reshape(steps, batch, -1).to(torch.float64)
        if x.shape[2] != self.dep.input_size:
            raise UserError(f"input has {x.shape[2]} channels, the deployment takes {self.dep.input_size}")
        big = float(p.state_max)
        unity = float(p.decay_unity)
        s = _ste(x * self.dep.input_scale, torch.round)
        outs = []
        for k, layer in enumerate(self.dep.layers):
            ff = self._shifted(torch.matmul(s, self._grid_weights(k).T), layer.weight_exp,
                               layer.num_message_bits > 0)
            rec = self._recurrent(k)
            shift = float(1 << p.activation_shift)
            u_keep = (unity - (layer.du + p.du_offset)) / unity
            v_keep = (unity - (layer.dv + p.dv_offset)) / unity
            theta = _ste(self.vth[k], lambda t: torch.clamp(torch.round(t), 0, p.vth_max))
            theta = theta * float(1 << p.threshold_shift)
            scale = torch.clamp(theta.detach(), min=1.0)
            bias = _ste(self.bias[k], lambda b: _wrap32(torch.round(b)))
            # Which integer wraps and clamps can change a value, from this input's bounds (as
            # run.emulator._bounds): the others are identities, forward and backward, and skipped.
            a_peak = _abs_max(ff) + (0.0 if rec is None else rec[2])
            act_peak = a_peak * shift
            wrap_act = act_peak >= _INT31
            checked = u_keep >= 1.0 or act_peak / (1.0 - u_keep) >= big
            bias_peak = _abs_max(bias.detach())
            clamp_v = checked or v_keep >= 1.0 or bias_peak + 2 * big >= _INT31 or \
                (act_peak / (1.0 - u_keep) + bias_peak) / (1.0 - v_keep) >= big - 1
            u = torch.zeros(batch, layer.size, dtype=torch.float64, device=x.device)
            v = torch.zeros_like(u)
            z_prev = torch.zeros_like(u)
            carry = carries[k] if carries is not None else None
            if carry is not None:
                z_prev = carry.to(torch.float64).detach()
            spikes = []
            for t in range(steps):
                a = ff[t]
                if rec is not None:  # the LIF's input port sums both Dense outputs (int32)
                    a = _ste(a + self._shifted(torch.matmul(z_prev, rec[0].T), rec[1], False),
                             _wrap32)
                act = _ste(a * shift, _wrap32) if wrap_act else a * shift
                u = _ste(u * u_keep, _trunc) + act
                if checked:
                    u = _ste(u, lambda z: _wrap32(z))
                    u = _ste(u, lambda z: z - (z > big) * (2 * big) + (z <= -big) * (2 * big))
                v = _ste(v * v_keep, _trunc) + u + bias
                if clamp_v:
                    v = _ste(v, lambda z: torch.clamp(_wrap32(z), -big + 1, big - 1))
                z = _Spike.apply((v - theta) / scale, self.surrogate, self.width)
                v = v * (1.0 - z.detach())
                spikes.append(z)
                z_prev = z
            s = torch.stack(spikes)
            outs.append(s)
        return TwinOutput(layers=tuple(outs))
