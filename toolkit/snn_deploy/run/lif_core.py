"""Loihi 2's fixed-point CUBA LIF, written once (run stage).

The integer semantics of Lava's fixed-point LIF, whose equations are in the docstring of the
class that holds its parameters, ``quantize.deployment.QuantLayer``, are written here once, as
Lava writes them once in ``AbstractPyLifModelFixed.subthr_dynamics`` and specialises them per
process model. Every simulator of a Deployment builds its step from these templates and only says
how it computes each integer operation (``Ops``):

- the emulator's torch step loop (``run.emulator``): exact float64 integers, wraps skipped where a
  bound rules them out;
- its numba CPU kernel (``run.kernel``): the same templates compiled, every wrap applied (an
  identity where not needed), so that LLVM vectorises the loop;
- the differentiable twin (``run.twin``): each operation exact forward and straight-through (or
  its own derivative) backward;
- the pre-reset membrane (``run.membrane``), the v half alone.

Which wraps and clamps a layer can need is decided once per layer from worst-case bounds
(``bounds``); the constants of the int32 arithmetic and the bias scaling live here too.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np
import torch

from snn_deploy import lava_formats as lava

# Lava's fixed-point arrays are int32 (lava_formats.INT_BITS): sums wrap modulo 2**32.
INT32 = float(1 << lava.INT_BITS)
INT31 = float(1 << (lava.INT_BITS - 1))


def wrap_int32(x: torch.Tensor) -> torch.Tensor:
    """Two's-complement wrap into int32's range (numpy int32 overflow), on exact float64 integers;
    ``x`` itself when nothing is out of range."""
    lo, hi = torch.aminmax(x) if x.numel() else (x.new_zeros(()), x.new_zeros(()))
    if lo >= -INT31 and hi < INT31:
        return x
    return torch.remainder(x + INT31, INT32) - INT31


def fold24(x: torch.Tensor, big: float) -> torch.Tensor:
    """Lava's wrap of u into its 24 bits: one fold each way (u > 2**23 loses 2**24, u <= -2**23
    gains it), not a modulo."""
    return x - (x > big) * (2 * big) + (x <= -big) * (2 * big)


def decay_(x: torch.Tensor, keep: float, scratch: torch.Tensor | None = None) -> torch.Tensor:
    """x <- trunc(x * keep) in place, for exact float64 integers x and keep a multiple of 2**-12:
    Lava's sign(x) (|x (4096 - d)| >> 12).

    x * keep is exact (a multiple of 2**-12 below 2**53), and so are its fractional part and the
    difference of the two; torch's trunc is not vectorised on CPU (torch 2.3, measured 3x slower
    than frac, which is).
    """
    x.mul_(keep)
    return x.sub_(torch.frac(x, out=scratch) if scratch is not None else torch.frac(x))


def abs_max(x: torch.Tensor) -> float:
    """max |x| in one pass without a temporary (0 for an empty tensor)."""
    if not x.numel():
        return 0.0
    lo, hi = torch.aminmax(x.detach())
    return max(-float(lo), float(hi))


def scaled_bias(mant: np.ndarray, exp: np.ndarray, *, wrap: bool = True) -> np.ndarray:
    """Lava's bias ``bias_mant << bias_exp`` (an arithmetic right shift for negative exponents),
    int64, wrapped into int32 as Lava's int32 arrays hold it (``wrap``)."""
    mant, exp = np.asarray(mant, dtype=np.int64), np.asarray(exp, dtype=np.int64)
    bias = np.where(exp >= 0, mant << np.clip(exp, 0, None), mant >> np.clip(-exp, 0, None))
    return (bias + (1 << 31)) % (1 << 32) - (1 << 31) if wrap else bias


@dataclasses.dataclass(frozen=True)
class Bounds:
    """Which integer wraps and clamps a layer's step can need, decided once from worst cases; the
    others are identities and are skipped."""

    checked: bool  # u may leave the 24-bit (or int32) range: wrap and fold u
    wrap_v: bool  # the int32 sum for v may overflow
    clamp_v: bool  # v may reach its saturation limits
    has_bias: bool


ALWAYS = Bounds(checked=True, wrap_v=True, clamp_v=True, has_bias=True)


def bounds(*, act_peak: float, u_keep: float, v_keep: float, bias_peak: float,
           big: float) -> Bounds:
    """From the largest |input to u| per step, ``act_peak`` (a_in << 6, recurrent input included)
    and the largest |bias|: |u| <= act_peak / (1 - u_keep) (truncation only shrinks it), and
    while u stays in range |v| <= (max|u| + max|bias|) / (1 - v_keep)."""
    checked = u_keep >= 1.0 or act_peak / (1.0 - u_keep) >= big
    wrap_v = checked or bias_peak + 2 * big >= INT31
    clamp_v = wrap_v or v_keep >= 1.0 or \
        (act_peak / (1.0 - u_keep) + bias_peak) / (1.0 - v_keep) >= big - 1
    return Bounds(checked=checked, wrap_v=wrap_v, clamp_v=clamp_v, has_bias=bias_peak > 0)


@dataclasses.dataclass(frozen=True)
class Ops:
    """How one simulator computes each integer operation of the LIF step.

    ``decay(x, keep)``: trunc(x * keep); ``wrap32(x)``: the int32 wrap; ``fold24(x, big)``: the
    24-bit fold of u; ``saturate(x, limit)``: clip to +-limit; ``compile``: applied to each
    template function built from these (numba's njit for the CPU kernel)."""

    decay: Callable[[Any, float], Any]
    wrap32: Callable[[Any], Any]
    fold24: Callable[[Any, float], Any]
    saturate: Callable[[Any, float], Any]
    compile: Callable[[Callable], Callable] = lambda f: f


def v_update(ops: Ops, b: Bounds) -> Callable:
    """The v half of the step, ``v_next(v, u, bias, v_keep, big)``: v decays, adds this step's u
    and the bias; the int32 sum wraps, then v saturates at +-(2**23 - 1). Before the threshold."""
    decay, wrap32, saturate = ops.decay, ops.wrap32, ops.saturate
    has_bias, wrap_v, clamp_v = b.has_bias, b.wrap_v, b.clamp_v

    def v_next(v, u, bias, v_keep, big):
        v = decay(v, v_keep) + u
        if has_bias:
            v = v + bias
        if wrap_v:
            v = wrap32(v)
        if clamp_v:
            v = saturate(v, big - 1.0)
        return v

    return ops.compile(v_next)


def lif_update(ops: Ops, b: Bounds) -> Callable:
    """Lava's ``subthr_dynamics`` for one layer, ``update(u, v, act, bias, u_keep, v_keep, big)
    -> (u, v)``: u decays and adds ``act`` (a_in << 6, the int32 sum wrapped, then folded into 24
    bits), then ``v_update``. The threshold and reset follow in each simulator (v > vth << 6;
    v <- 0 where it spiked)."""
    decay, wrap32, fold = ops.decay, ops.wrap32, ops.fold24
    checked = b.checked
    v_next = v_update(ops, b)

    def update(u, v, act, bias, u_keep, v_keep, big):
        u = decay(u, u_keep) + act
        if checked:
            u = fold(wrap32(u), big)
        return u, v_next(v, u, bias, v_keep, big)

    return ops.compile(update)


def torch_ops(scratch: torch.Tensor | None = None) -> Ops:
    """Exact float64 integer arithmetic in torch (the emulator's step loop, the membrane); the
    decay in place into its argument, with ``scratch`` as its temporary."""
    return Ops(decay=lambda x, keep: decay_(x, keep, scratch), wrap32=wrap_int32, fold24=fold24,
               saturate=lambda x, limit: x.clamp_(-limit, limit))
