"""The ``float`` backend: a NIR layer chain (``convert.nirgraph.FloatNetwork``) run in torch.

Implements the discretised dynamics documented in ``convert.nirgraph`` in float32, in the same
operation order as Norse's ``lif_feed_forward_step``, so a Norse model and its exported graph agree:

    I_t = syn_keep * I_{t-1} + w_in * (W x_t + b [+ R z_{t-1} + b_rec])
    v_t = v_{t-1} + mem_gain * ((v_leak - v_{t-1}) + r * I_t)     (IF: v_t = v_{t-1} + r * I_t)
    z_t = [v_t > v_threshold];   v_t <- v_reset where z_t

and, for comparisons with the model a graph came from (``convert.nirgraph.SOURCE_RESETS``), reset
by subtraction as snnTorch does it with reset_delay=False (v_t <- v_t - v_threshold z_t, where
z_t = [v_t - c_t v_threshold > v_threshold] and c_t = [v_{t-1} > v_threshold]: while v stays above
the threshold after a subtraction the next spike needs twice the threshold), and Sinabs' several
spikes per step (z_t = floor(v_t / v_threshold) where v_t >= v_threshold, v_t <- v_t -
v_threshold z_t) with its floor v_t <- max(v_t, v_min).

Weight matrices lowered from conv layers are mostly zeros: large sparse ones are multiplied as
torch sparse CSR matrices (15x faster for a few samples on the Sinabs N-MNIST CNN; the sums are
the same up to float32 rounding order). A native conv layer (``FloatLayer.conv``) runs as torch's
``conv2d`` on the (B, C, H, W) view of its input (the dense lowering's sums, in another order).
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Callable

import numpy as np
import scipy.sparse as sp
import torch

from snn_deploy.convert.conv import ConvGeometry
from snn_deploy.convert.nirgraph import FloatLayer, FloatNetwork
from snn_deploy.run.recording import Recording


@dataclasses.dataclass(frozen=True)
class FloatRun:
    recording: Recording
    u_peaks: tuple[float, ...]  # per layer, max |mem_gain * r * I| over the run (voltage units)


# A weight matrix with at least this many elements, of which at most SPARSE_DENSITY are non-zero,
# is multiplied as a sparse CSR matrix (measured on the Sinabs CNN, 2 CPU threads: 4096 x 4096 at
# 3% density, 0.6 ms instead of 9 ms per step for 2 samples, 2x faster still for 256).
SPARSE_MIN_ELEMENTS = 1 << 20
SPARSE_DENSITY = 0.25


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a), dtype=torch.float32)


def _weights(w: np.ndarray) -> torch.Tensor:
    """float32 weights, as a sparse CSR tensor when large and mostly zero."""
    if w.size >= SPARSE_MIN_ELEMENTS and np.count_nonzero(w) <= SPARSE_DENSITY * w.size:
        m = sp.csr_matrix(np.asarray(w, dtype=np.float32))  # 8x faster than torch's to_sparse_csr
        with warnings.catch_warnings():  # torch 2.3 calls sparse CSR "beta" on every creation
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            return torch.sparse_csr_tensor(torch.from_numpy(m.indptr.astype(np.int64)),
                                           torch.from_numpy(m.indices.astype(np.int64)),
                                           torch.from_numpy(m.data), size=m.shape)
    return _t(w)


def synaptic(w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``x @ w.T`` for (B, n_in) input and dense or sparse CSR (n_out, n_in) weights."""
    if w.layout == torch.sparse_csr:
        return (w @ x.T).T
    return x @ w.T


@dataclasses.dataclass(frozen=True)
class LayerParams:
    """One layer's parameters as float32 tensors (see ``convert.nirgraph.NeuronSpec``)."""

    w: torch.Tensor
    b: torch.Tensor
    syn_keep: torch.Tensor
    gain: torch.Tensor
    leak: bool
    r: torch.Tensor
    w_in: torch.Tensor
    v_leak: torch.Tensor
    v_threshold: torch.Tensor
    v_reset: torch.Tensor
    rec: torch.Tensor | None  # (n, n) recurrent weights
    rec_b: torch.Tensor | None
    subtract: bool = False  # reset by subtracting v_threshold instead of setting v_reset
    multi_spike: bool = False  # floor(v / v_threshold) spikes per step (Sinabs' MultiSpike)
    v_min: torch.Tensor | None = None  # v floored here after every step (Sinabs' min_v_mem)
    conv: ConvGeometry | None = None  # ``w`` is then the (C_out, C_in / groups, kH, kW) kernel

    @classmethod
    def of(cls, layer: FloatLayer) -> LayerParams:
        s = layer.spec
        rec = None if layer.recurrent is None else _t(layer.recurrent)
        rec_b = None if layer.recurrent_bias is None else _t(layer.recurrent_bias)
        w = _t(layer.weight) if layer.conv is not None else _weights(layer.weight)
        return cls(w=w, b=_t(layer.bias), syn_keep=_t(s.syn_keep), conv=layer.conv,
                   gain=_t(s.mem_gain), leak=s.leak, r=_t(s.r), w_in=_t(s.w_in),
                   v_leak=_t(s.v_leak), v_threshold=_t(s.v_threshold), v_reset=_t(s.v_reset),
                   rec=rec, rec_b=rec_b, subtract=s.reset == "subtract",
                   multi_spike=s.multi_spike, v_min=None if s.v_min is None else _t(s.v_min))


def feed(p: LayerParams, x: torch.Tensor) -> torch.Tensor:
    """The layer's synaptic input ``W x`` for (B, n_in) input, (B, n) out (a conv on the
    (B, C, H, W) view of ``x``)."""
    c = p.conv
    if c is None:
        return synaptic(p.w, x)
    y = torch.nn.functional.conv2d(x.reshape(x.shape[0], *c.in_shape), p.w, stride=c.stride,
                                   padding=c.padding, dilation=c.dilation, groups=c.groups)
    return y.reshape(x.shape[0], -1)


def heaviside(v: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    return (v > threshold).to(torch.float32)


def layer_step(p: LayerParams, x: torch.Tensor, i: torch.Tensor, v: torch.Tensor,
               z_prev: torch.Tensor, spike: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
               = heaviside) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One step of one layer: (input, current, voltage, last spikes) -> (spikes, current, voltage).
    ``spike(v, threshold)`` is the threshold function (a surrogate-gradient one for attacks; a
    multi-spike layer, for comparisons only, counts its spikes without it)."""
    syn = feed(p, x) + p.b
    if p.rec is not None and p.rec_b is not None:
        syn = syn + z_prev @ p.rec.T + p.rec_b
    i = p.syn_keep * i + p.w_in * syn
    # snnTorch's "avoid double reset": where v still exceeds the threshold after the last
    # subtraction, it subtracts the threshold once more before testing (restored if no spike)
    carried = (v > p.v_threshold).to(v.dtype) if p.subtract and not p.multi_spike else None
    if p.leak:
        v = v + p.gain * ((p.v_leak - v) + p.r * i)
    else:
        v = v + p.r * i
    if p.multi_spike:  # sinabs.activation.MultiSpike: (v > 0) * trunc(v / threshold)
        z = torch.where(v > 0, torch.div(v, p.v_threshold, rounding_mode="trunc"),
                        torch.zeros_like(v))
    elif carried is not None:
        z = spike(v - carried * p.v_threshold, p.v_threshold)
    else:
        z = spike(v, p.v_threshold)
    if p.subtract:
        v = v - z.detach() * p.v_threshold
    else:
        v = torch.where(z.detach() > 0, p.v_reset.expand_as(v), v)
    if p.v_min is not None:
        v = torch.maximum(v, p.v_min)
    return z, i, v


@dataclasses.dataclass(frozen=True)
class FloatTrace:
    """What one pass of ``float_loop`` recorded. ``output``: the output layer's spikes (T, B, n)
    float32 (with their gradients); ``counts``: per layer, spikes per sample (B, n);
    ``membrane``: the output layer's v before threshold and reset, in units of its threshold,
    (T, B, n), when asked; ``currents``: per layer, I_t (T, B, n), when asked; ``u_peaks``: per
    layer, max |mem_gain * r * I| over the run (voltage units), when asked."""

    output: torch.Tensor
    counts: tuple[torch.Tensor, ...]
    membrane: torch.Tensor | None = None
    currents: tuple[torch.Tensor, ...] | None = None
    u_peaks: tuple[float, ...] | None = None


def float_loop(params: list[LayerParams], x: torch.Tensor, *,
               spike: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = heaviside,
               membrane: bool = False, currents: bool = False, peaks: bool = False) -> FloatTrace:
    """The float time loop, the one every float run goes through: (T, B, ...) input through the
    layers, ``layer_step`` by step from rest, ``spike`` as the threshold function (a surrogate for
    gradients); what else is recorded is chosen by the flags. Gradients flow where the caller
    enables them."""
    steps, batch = x.shape[0], x.shape[1]
    x = x.reshape(steps, batch, -1).to(torch.float32)
    sizes = [int(p.b.shape[0]) for p in params]
    i = [torch.zeros(batch, n) for n in sizes]
    v = [torch.zeros(batch, n) for n in sizes]
    last = [torch.zeros(batch, n) for n in sizes]  # spikes of the step before
    out: list[torch.Tensor] = []
    counts = [torch.zeros(batch, n) for n in sizes]
    seen: list[torch.Tensor] = []
    trace_i: list[list[torch.Tensor]] = [[] for _ in sizes]
    top = [0.0] * len(sizes)

    def spike_seen(v_pre: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
        seen.append(v_pre / threshold)
        return spike(v_pre, threshold)

    final = len(params) - 1
    for t in range(steps):
        z = x[t]
        for k, p in enumerate(params):
            z, i[k], v[k] = layer_step(p, z, i[k], v[k], last[k],
                                       spike=spike_seen if membrane and k == final else spike)
            last[k] = z
            counts[k] = counts[k] + z.detach()
            if currents:
                trace_i[k].append(i[k])
            if peaks:
                top[k] = max(top[k], float((p.gain * p.r * i[k]).abs().max()))
        out.append(z)
    return FloatTrace(output=torch.stack(out), counts=tuple(counts),
                      membrane=torch.stack(seen) if membrane else None,
                      currents=tuple(torch.stack(c) for c in trace_i) if currents else None,
                      u_peaks=tuple(top) if peaks else None)


def run_float(net: FloatNetwork, x: torch.Tensor, *, membrane: bool = False) -> FloatRun:
    """Run (T, B, n_in) input through the chain; returns output spikes, counts and current peaks
    (and, with ``membrane``, the output layer's membrane in units of its threshold)."""
    with torch.no_grad():
        trace = float_loop([LayerParams.of(layer) for layer in net.layers], x, membrane=membrane,
                           peaks=True)
    recording = Recording(
        output=trace.output.to(torch.uint8).numpy(),
        layer_names=tuple(layer.neuron for layer in net.layers),
        counts=tuple(c.to(torch.int64).numpy() for c in trace.counts),
        membrane=None if trace.membrane is None else trace.membrane.to(torch.float64).numpy(),
    )
    assert trace.u_peaks is not None
    return FloatRun(recording=recording, u_peaks=trace.u_peaks)
