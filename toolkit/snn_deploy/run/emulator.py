"""The ``emulator`` backend: a Deployment run with Lava 0.10's fixed-point integer semantics,
vectorised over samples (and over time for the synaptic sums), in torch, on CPU or CUDA.

It reproduces, operation for operation, ``PyDenseModelBitAcc`` (lava/proc/dense/models.py) and
``PyLifResetModelBitAcc`` / ``AbstractPyLifModelFixed`` (lava/proc/lif/models.py):

    Dense   w <- truncate(clip(w, sign mode), num_weight_bits)        (lava/utils/weightutils.py)
            a_t = (sum_j w_ij s_j,t-1) << weight_exp     (>> for negative exponents: floor)
    LIF     u <- sign(u (4096 - du - 1)) (|u (4096 - du - 1)| >> 12) + (a_in << 6), wrapped into 24 bits
            v <- sign(v (4096 - dv)) (|v (4096 - dv)| >> 12) + u + (bias_mant << bias_exp),
                 clipped to +-(2**23 - 1)
            spike = v > (vth << 6);  v <- 0 where spiked (u is kept)

including int32 wrap-around where Lava's numpy arrays are int32. Time is per layer *local*: the
Dense delay shifts layer l by l steps on Lava, and the lava-sim backend resets every layer at its
own first step of each sample (run/lava_sim.py), so in local time every sample starts from zero
state and layer l at step k sees layer l-1's spikes of step k. tests/test_emulator.py proves
equality with Lava spike for spike and state for state.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from snn_deploy.errors import UserError
from snn_deploy.profiles import Profile
from snn_deploy.quantize.deployment import Deployment, QuantLayer
from snn_deploy.quantize.fixed_point import lava_dense_grid
from snn_deploy.run.recording import Recording

_INT32 = float(1 << 32)
_INT31 = float(1 << 31)
CHUNK = 512  # samples per pass: keeps each step's tensors in cache (measured fastest on 2 cores)


def wrap_int32(x: torch.Tensor) -> torch.Tensor:
    """Two's-complement wrap into int32's range (numpy int32 overflow), on exact float64 integers."""
    lo, hi = torch.aminmax(x) if x.numel() else (x.new_zeros(()), x.new_zeros(()))
    if lo >= -_INT31 and hi < _INT31:
        return x
    return torch.remainder(x + _INT31, _INT32) - _INT31


def _abs_max(x: torch.Tensor) -> float:
    """max |x| in one pass without a temporary (0 for an empty tensor)."""
    if not x.numel():
        return 0.0
    lo, hi = torch.aminmax(x)
    return max(-float(lo), float(hi))


def lava_weights(layer: QuantLayer, *, weight_bits: int = 8) -> np.ndarray:
    """The weights Lava's fixed-point Dense really uses for this layer."""
    return lava_dense_grid(layer.weights, sign_mode=layer.sign_mode,
                           num_weight_bits=layer.num_weight_bits, weight_bits=weight_bits)


@dataclasses.dataclass(frozen=True)
class LayerConstants:
    """One layer's integers (as exact float64 where they enter the step loop), on a device."""

    weights: torch.Tensor  # (n_out, n_in) in the matmul dtype
    matmul_dtype: torch.dtype
    weight_exp: int
    graded: bool
    u_keep: float  # (4096 - du - 1) / 4096, exact in binary
    v_keep: float  # (4096 - dv) / 4096
    bias: torch.Tensor  # (n,) float64, bias_mant << bias_exp as Lava computes it
    vth: float  # vth << 6
    int32_safe: bool  # the worst-case synaptic input, shifted into u, cannot overflow int32

    @classmethod
    def of(cls, layer: QuantLayer, dep: Deployment, device: torch.device,
           max_input: int) -> LayerConstants:
        p = dep.profile
        w = lava_weights(layer, weight_bits=p.weight_bits)
        worst = int(np.abs(w).sum(axis=1).max(initial=0)) * max_input
        # Integer sums are exact in a float type while they stay below its mantissa range; float
        # matmuls have BLAS on CPU, integer ones do not (REFERENCES.md, engineering facts).
        dtype = torch.float32 if worst < 1 << 24 else (
            torch.float64 if worst < 1 << 53 else torch.int64)
        mant = layer.bias_mant.astype(np.int64)
        exp = layer.bias_exp.astype(np.int64)
        bias = np.where(exp >= 0, mant << np.clip(exp, 0, None), mant >> np.clip(-exp, 0, None))
        bias = (bias + (1 << 31)) % (1 << 32) - (1 << 31)  # int32, as in scale_bias
        unity = float(p.decay_unity)
        return cls(
            weights=torch.as_tensor(w, dtype=dtype, device=device),
            matmul_dtype=dtype, weight_exp=layer.weight_exp, graded=layer.num_message_bits > 0,
            u_keep=(unity - (layer.du + p.du_offset)) / unity,
            v_keep=(unity - (layer.dv + p.dv_offset)) / unity,
            bias=torch.as_tensor(bias, dtype=torch.float64, device=device),
            vth=float(layer.vth << p.threshold_shift),
            int32_safe=worst * 2.0 ** (max(layer.weight_exp, 0) + p.activation_shift) < _INT31,
        )


def dense(c: LayerConstants, s: torch.Tensor) -> torch.Tensor:
    """Synaptic input for a whole sequence at once: (T, B, n_in) -> (T, B, n_out) exact float64."""
    acc = torch.matmul(s.to(c.matmul_dtype), c.weights.T).to(torch.float64)
    if c.int32_safe:  # no wrap can happen below: only the arithmetic shift remains
        return torch.floor(acc / float(1 << -c.weight_exp)) if c.weight_exp < 0 \
            else acc * float(1 << c.weight_exp)
    if c.graded:  # weights.dot(s_in) on int32 arrays wraps in int32
        acc = wrap_int32(acc)
    if c.weight_exp > 0:  # np.left_shift on int32 wraps; np.right_shift floors
        acc = wrap_int32(acc * float(1 << c.weight_exp))
    elif c.weight_exp < 0:
        acc = torch.floor(acc / float(1 << -c.weight_exp))
    return wrap_int32(acc)  # a_out is an int32 port


@dataclasses.dataclass(frozen=True)
class LayerTrace:
    """A layer's spikes, and optionally its u and v, in local time: (T, B, n) each."""

    spikes: torch.Tensor  # bool
    u: torch.Tensor | None  # int64
    v: torch.Tensor | None  # int64


def lif(c: LayerConstants, a_in: torch.Tensor, *, profile: Profile,
        record_state: bool = False) -> LayerTrace:
    """CUBA LIF dynamics over (T, B, n) synaptic input (exact float64 integers), from zero state.

    All values are integers held exactly in float64: u * (4096 - du - 1) < 2**53, and dividing by
    4096 then truncating equals Lava's sign(x) * (|x| >> 12).
    """
    big = float(profile.state_max)
    act = a_in * float(1 << profile.activation_shift)
    if not c.int32_safe:
        act = wrap_int32(act)
    # |u| <= max|act| / (1 - keep) (truncation only shrinks it): when that stays inside the
    # 24-bit range, no step needs the overflow checks below.
    peak = _abs_max(act)
    checked = c.u_keep >= 1.0 or peak / (1.0 - c.u_keep) >= big
    bias_big = bool(c.bias.abs().max() + 2 * big >= _INT31) if c.bias.numel() else False
    u = torch.zeros_like(act[0])
    v = torch.zeros_like(act[0])
    spikes = torch.empty(act.shape, dtype=torch.bool, device=act.device)
    us, vs = [], []
    for t in range(act.shape[0]):
        u = torch.trunc(u.mul_(c.u_keep)).add_(act[t])
        u_big = False
        if checked:
            lo, hi = torch.aminmax(u)
            if hi >= _INT31 or lo < -_INT31:  # decayed u + act is an int32 sum in Lava
                u = wrap_int32(u)
                lo, hi = torch.aminmax(u)
        if checked and (hi > big or lo <= -big):  # Lava's 24-bit wrap of u: one fold each way, not a modulo
            u = u - (u > big) * (2 * big) + (u <= -big) * (2 * big)
            lo, hi = torch.aminmax(u)
            u_big = bool(hi > big or lo <= -big)  # |u| can stay beyond 24 bits after one fold
        v = torch.trunc(v.mul_(c.v_keep)).add_(u).add_(c.bias)
        if u_big or bias_big:  # only then can the int32 sum for v overflow
            v = wrap_int32(v)
        v = v.clamp_(-big + 1, big - 1)
        torch.gt(v, c.vth, out=spikes[t])
        v.masked_fill_(spikes[t], 0.0)
        if record_state:
            us.append(u.to(torch.int64))
            vs.append(v.to(torch.int64))
    return LayerTrace(
        spikes=spikes,
        u=torch.stack(us) if record_state else None,
        v=torch.stack(vs) if record_state else None,
    )


def input_levels(dep: Deployment, x: torch.Tensor) -> torch.Tensor:
    """(T, B, ...) encoded input -> (T, B, n) exact float64 levels as Lava receives them."""
    steps, batch = x.shape[0], x.shape[1]
    x = x.reshape(steps, batch, -1)
    if x.shape[2] != dep.input_size:
        raise UserError(f"input has {x.shape[2]} channels, the deployment takes {dep.input_size}")
    return torch.round(x.to(torch.float32) * dep.input_scale)  # levels <= 2**bits: exact


def run_layers(dep: Deployment, x: torch.Tensor, *, device: str | torch.device = "cpu",
               record_state: bool = False) -> list[LayerTrace]:
    """Every layer's trace for (T, B, n) encoded input, all samples at once."""
    dev = torch.device(device)
    s = input_levels(dep, x).to(dev)
    max_input = int(_abs_max(s))
    traces = []
    for layer in dep.layers:
        c = LayerConstants.of(layer, dep, dev, max(max_input, 1))
        trace = lif(c, dense(c, s), profile=dep.profile, record_state=record_state)
        traces.append(trace)
        s, max_input = trace.spikes, 1
    return traces


def run_emulator(dep: Deployment, x: np.ndarray | torch.Tensor, *,
                 device: str | torch.device = "cpu") -> Recording:
    """Run (T, B, n) input in chunks of ``CHUNK`` samples; the Recording equals lava-sim's."""
    x = torch.as_tensor(np.asarray(x)) if isinstance(x, np.ndarray) else x
    outputs, counts = [], []
    for start in range(0, x.shape[1], CHUNK):
        traces = run_layers(dep, x[:, start:start + CHUNK], device=device)
        outputs.append(traces[-1].spikes.to(torch.uint8).cpu().numpy())
        counts.append([t.spikes.sum(dim=0).to(torch.int64).cpu().numpy() for t in traces])
    return Recording(
        output=np.concatenate(outputs, axis=1),
        layer_names=tuple(layer.neuron for layer in dep.layers),
        counts=tuple(np.concatenate(c) for c in zip(*counts)),
    )
