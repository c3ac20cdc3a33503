"""The ``float`` backend: a NIR layer chain (``convert.nirgraph.FloatNetwork``) run in torch.

Implements the discretised dynamics documented in ``convert.nirgraph`` in float32, in the same
operation order as Norse's ``lif_feed_forward_step``, so a Norse model and its exported graph agree.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
import torch

from snn_deploy.convert.nirgraph import FloatLayer, FloatNetwork
from snn_deploy.run.recording import Recording


@dataclasses.dataclass(frozen=True)
class FloatRun:
    recording: Recording
    u_peaks: tuple[float, ...]  # per layer, max |mem_gain * r * I| over the run (voltage units)


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a), dtype=torch.float32)


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

    @classmethod
    def of(cls, layer: FloatLayer) -> LayerParams:
        s = layer.spec
        rec = None if layer.recurrent is None else _t(layer.recurrent)
        rec_b = None if layer.recurrent_bias is None else _t(layer.recurrent_bias)
        return cls(w=_t(layer.weight), b=_t(layer.bias), syn_keep=_t(s.syn_keep),
                   gain=_t(s.mem_gain), leak=s.leak, r=_t(s.r), w_in=_t(s.w_in),
                   v_leak=_t(s.v_leak), v_threshold=_t(s.v_threshold), v_reset=_t(s.v_reset),
                   rec=rec, rec_b=rec_b, subtract=s.reset == "subtract")


def heaviside(v: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    return (v > threshold).to(torch.float32)


def layer_step(p: LayerParams, x: torch.Tensor, i: torch.Tensor, v: torch.Tensor,
               z_prev: torch.Tensor, spike: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
               = heaviside) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One step of one layer: (input, current, voltage, last spikes) -> (spikes, current, voltage).
    ``spike(v, threshold)`` is the threshold function (a surrogate-gradient one for attacks)."""
    syn = x @ p.w.T + p.b
    if p.rec is not None and p.rec_b is not None:
        syn = syn + z_prev @ p.rec.T + p.rec_b
    i = p.syn_keep * i + p.w_in * syn
    if p.leak:
        v = v + p.gain * ((p.v_leak - v) + p.r * i)
    else:
        v = v + p.r * i
    z = spike(v, p.v_threshold)
    if p.subtract:
        return z, i, v - z.detach() * p.v_threshold
    return z, i, torch.where(z.detach() > 0, p.v_reset.expand_as(v), v)


def run_float(net: FloatNetwork, x: torch.Tensor) -> FloatRun:
    """Run (T, B, n_in) input through the chain; returns output spikes, counts and current peaks."""
    steps, batch = x.shape[0], x.shape[1]
    x = x.reshape(steps, batch, -1).to(torch.float32)
    params = [LayerParams.of(layer) for layer in net.layers]
    current = [torch.zeros(batch, layer.size) for layer in net.layers]
    voltage = [torch.zeros(batch, layer.size) for layer in net.layers]
    counts = [torch.zeros(batch, layer.size) for layer in net.layers]
    last = [torch.zeros(batch, layer.size) for layer in net.layers]  # spikes of the step before
    peaks = [0.0] * len(net.layers)
    out = []
    with torch.no_grad():
        for t in range(steps):
            z = x[t]
            for k, p in enumerate(params):
                z, current[k], voltage[k] = layer_step(p, z, current[k], voltage[k], last[k])
                last[k] = z
                counts[k] += z
                peaks[k] = max(peaks[k], float((p.gain * p.r * current[k]).abs().max()))
            out.append(z)
    recording = Recording(
        output=torch.stack(out).to(torch.uint8).numpy(),
        layer_names=tuple(layer.neuron for layer in net.layers),
        counts=tuple(c.to(torch.int64).numpy() for c in counts),
    )
    return FloatRun(recording=recording, u_peaks=tuple(peaks))
