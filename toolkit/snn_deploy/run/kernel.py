"""The emulator's CPU step loop: Lava 0.10's fixed-point CUBA LIF over (T, B, n) in numba.

Stage: run (part of the ``emulator`` backend, run/emulator.py). Eager torch spends most of an
emulator run dispatching a dozen small element-wise operations per time step (about 9 us each on a
256 x 128 tensor, mostly overhead), so on CPU the step loop is compiled instead. It computes what
``emulator.lif_step`` computes, in the order of Lava's ``PyLifModelBitAcc`` /
``PyDenseModelBitAcc`` (lava/proc/lif/models.py, lava/proc/dense/models.py; REFERENCES.md):

    recurrent  r = (sum_j w_ij z_j,t-1) << e   (>> for e < 0: floor), wrapped to int32 (a_out)
               a = wrap32(wrap32(a_ff + r) << 6)   the LIF's a_in sums both Dense outputs
    LIF        u = wrap32(sign(u m_u) (|u m_u| >> 12) + a),  m_u = 4096 - du - 1
               u -= 2**24 if u > 2**23;  u += 2**24 if u <= -2**23        (one fold, not modulo)
               v = clip(wrap32(sign(v m_v) (|v m_v| >> 12) + u + bias), -(2**23 - 1), 2**23 - 1)
               z = v > vth << 6;  v = 0 where z

Values are integers held exactly in float64 (all stay below 2**44), so the truncating shift is
``trunc(u * m_u / 4096)`` and the wrap ``x - 2**32 floor((x + 2**31) / 2**32)``; in that form LLVM
vectorises the loop. Every wrap and clip is applied on every step: where a bound rules an
overflow out (the torch loop checks such bounds to skip them) it is the identity, so both loops
compute the same integers. Each sample starts from zero state with no spikes on its recurrent
synapse (run/lava_sim.py makes Lava do the same). The kernel releases the GIL, so chunks of
samples run in parallel threads. tests/test_emulator.py compares it with Lava, spike for spike and
state for state.
"""

from __future__ import annotations

import numba
import numpy as np

_T32 = float(1 << 32)
_H32 = float(1 << 31)
_INV32 = 1.0 / _T32


@numba.njit(inline="always")
def _wrap32(x: float) -> float:
    """Two's-complement wrap of an exact float64 integer into int32's range."""
    return x - _T32 * np.floor((x + _H32) * _INV32)


@numba.njit(nogil=True, error_model="numpy", cache=True)
def _integrate(act, u, v, bias, u_keep, v_keep, big):  # pragma: no cover (compiled)
    """u and v of every (sample, neuron) for one step's input ``act`` (m,), before the threshold.

    Kept apart from the threshold pass: with one more array written in the same loop, LLVM's
    runtime alias checks exceed their limit and the loop is left scalar (4-5x slower, measured).
    """
    lo, hi, two = -big + 1.0, big - 1.0, 2.0 * big
    for i in range(act.shape[0]):
        x = _wrap32(np.trunc(u[i] * u_keep) + act[i])
        x = x - two * (x > big) + two * (x <= -big)
        y = _wrap32(np.trunc(v[i] * v_keep) + x + bias[i])
        y = hi if y > hi else y
        u[i] = x
        v[i] = lo if y < lo else y


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

