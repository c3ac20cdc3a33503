"""The emulator's CPU step loop: Lava 0.10's fixed-point CUBA LIF over (T, B, n) in numba.

Stage: run (part of the ``emulator`` backend, run/emulator.py). Eager torch spends most of an
emulator run dispatching a dozen small element-wise operations per time step (about 9 us each on a
256 x 128 tensor, mostly overhead), so on CPU the step loop is compiled instead. The step itself is
``lif_core.lif_update`` (the equations: ``quantize.deployment.QuantLayer``), compiled with numba
from the same template the torch loop and the twin use, with every wrap and clip applied on every
step: where a bound rules an overflow out (the torch loop skips such operations) it is the
identity, so both loops compute the same integers, and in that branch-free form LLVM vectorises
the loop. What this file adds: the recurrent input (Lava's Dense on the previous step's spikes,
``<< e`` or a floored ``>> -e``, wrapped to int32, summed with the feed-forward Dense's int32
output at the LIF's input port, then ``<< 6``), the threshold ``v > vth << 6`` with its reset
``v <- 0``, and the loops. Values are integers held exactly in float64 (all stay below 2**44).
Each sample starts from zero state with no spikes on its recurrent synapse (run/lava_sim.py makes
Lava do the same). The kernel releases the GIL, so chunks of samples run in parallel threads.
tests/test_emulator.py compares it with Lava, spike for spike and state for state.
"""

from __future__ import annotations

import numba
import numpy as np

from snn_deploy.run.lif_core import ALWAYS, INT31, INT32, Ops, lif_update

_INV32 = 1.0 / INT32


@numba.njit(inline="always")
def _wrap32(x: float) -> float:
    """Two's-complement wrap of an exact float64 integer into int32's range."""
    return x - INT32 * np.floor((x + INT31) * _INV32)


@numba.njit(inline="always")
def _decay(x: float, keep: float) -> float:
    return np.trunc(x * keep)


@numba.njit(inline="always")
def _fold24(x: float, big: float) -> float:
    return x - 2.0 * big * (x > big) + 2.0 * big * (x <= -big)


@numba.njit(inline="always")
def _saturate(x: float, limit: float) -> float:
    return limit if x > limit else (-limit if x < -limit else x)


# lif_core's step for one (sample, neuron), compiled, every wrap and clamp applied
_update = lif_update(Ops(decay=_decay, wrap32=_wrap32, fold24=_fold24, saturate=_saturate,
                         compile=numba.njit(inline="always")), ALWAYS)


@numba.njit(nogil=True, error_model="numpy", cache=True)
def _integrate(act, u, v, bias, u_keep, v_keep, big):  # pragma: no cover (compiled)
    """u and v of every (sample, neuron) for one step's input ``act`` (m,), before the threshold.

    Kept apart from the threshold pass: with one more array written in the same loop, LLVM's
    runtime alias checks exceed their limit and the loop is left scalar (4-5x slower, measured).
    """
    for i in range(act.shape[0]):
        u[i], v[i] = _update(u[i], v[i], act[i], bias[i], u_keep, v_keep, big)


@numba.njit(nogil=True, error_model="numpy", cache=True)
def _fire(v, vth, spikes, counts, levels):  # pragma: no cover (compiled)
    """z = v > vth; v <- 0 where z; spikes, per-sample counts and the spikes as float32 0/1
    (``levels``, the next layer's matmul input) written."""
    for i in range(v.shape[0]):
        y = v[i]
        f = y > vth
        v[i] = 0.0 if f else y
        spikes[i] = f
        counts[i] += f
        levels[i] = 1.0 if f else 0.0


@numba.njit(nogil=True, error_model="numpy", cache=True)
def _recurrent_input(a_ff, z_prev, rec_wt, rec_exp, act_shift, out):  # pragma: no cover
    """The LIF's a_in for one step of a recurrent layer: (B, n) feed-forward Dense output plus the
    recurrent Dense's output for the previous step's (B, n) spikes, shifted into u (flat (m,))."""
    batch, n = a_ff.shape
    scale = 2.0 ** rec_exp
    shift = float(1 << act_shift)
    rec = np.zeros(n)
    for b in range(batch):
        rec[:] = 0.0
        for j in range(n):
            if z_prev[b, j]:
                rec += rec_wt[j]
        for i in range(n):
            r = _wrap32(rec[i] * scale) if rec_exp > 0 else np.floor(rec[i] * scale)
            out[b * n + i] = _wrap32(_wrap32(a_ff[b, i] + _wrap32(r)) * shift)


@numba.njit(nogil=True, cache=True)
def lif_layer(act, rec_wt, rec_exp, recurrent, u_keep, v_keep, act_shift, bias, vth, big,
              spikes, counts, levels, u_out, v_out, record):  # pragma: no cover (compiled)
    """One layer over all samples and steps, every sample from rest.

    Args:
        act: (T, B, n) float32/float64 exact integers, C-contiguous: for a feed-forward layer what
            enters u (a_in << 6, int32-wrapped); for a recurrent one the feed-forward Dense's int32
            output, to which the recurrent Dense's is added before the shift.
        rec_wt: (n, n) float64 recurrent weights on Lava's grid, transposed (row j: what neuron
            j's spike adds); rec_exp: its weight_exp; recurrent: whether the layer has one.
        u_keep, v_keep: (4096 - du - 1) / 4096 and (4096 - dv) / 4096; act_shift: 6.
        bias: (n,) float64 bias_mant << bias_exp, int32-wrapped; vth: vth << 6; big: 2**23.
        spikes: (T, B, n) bool, written; counts: (B, n) int64, written (spikes per sample);
        levels: (T, B, n) float32, written: the spikes as 0.0/1.0.
        u_out, v_out: (T, B, n) float64, written when ``record`` (u and v after the step).
    """
    steps, batch, n = act.shape
    m = batch * n
    flat = act.reshape((steps, m))
    z = spikes.reshape((steps, m))
    lv = levels.reshape((steps, m))
    c = counts.reshape(m)
    c[:] = 0
    u = np.zeros(m)
    v = np.zeros(m)
    bias_m = np.empty(m)
    for b in range(batch):
        bias_m[b * n:(b + 1) * n] = bias
    a = np.zeros(m)
    silent = np.zeros((batch, n), np.bool_)  # no spikes before a sample's first step
    for t in range(steps):
        if recurrent:
            _recurrent_input(act[t], spikes[t - 1] if t > 0 else silent, rec_wt, rec_exp,
                             act_shift, a)
            _integrate(a, u, v, bias_m, u_keep, v_keep, big)
        else:
            _integrate(flat[t], u, v, bias_m, u_keep, v_keep, big)
        _fire(v, vth, z[t], c, lv[t])
        if record:
            u_out.reshape((steps, m))[t] = u
            v_out.reshape((steps, m))[t] = v


NO_STATE = np.zeros((1, 1, 1))  # stands in for u_out / v_out when nothing is recorded
NO_WEIGHTS = np.zeros((1, 1))  # stands in for rec_wt of a feed-forward layer

