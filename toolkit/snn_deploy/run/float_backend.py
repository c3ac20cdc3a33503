"""The ``float`` backend: a NIR layer chain (``convert.nirgraph.FloatNetwork``) run in torch.

Implements the discretised dynamics documented in ``convert.nirgraph`` in float32, in the same
operation order as Norse's ``lif_feed_forward_step``, so a Norse model and its exported graph agree.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from snn_deploy.convert.nirgraph import FloatNetwork
from snn_deploy.run.recording import Recording


@dataclasses.dataclass(frozen=True)
class FloatRun:
    recording: Recording
    u_peaks: tuple[float, ...]  # per layer, max |mem_gain * r * I| over the run (voltage units)


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a), dtype=torch.float32)


def run_float(net: FloatNetwork, x: torch.Tensor) -> FloatRun:
    """Run (T, B, n_in) input through the chain; returns output spikes, counts and current peaks."""
    steps, batch = x.shape[0], x.shape[1]
    x = x.reshape(steps, batch, -1).to(torch.float32)
    params = []
    for layer in net.layers:
        s = layer.spec
        params.append(dict(
            w=_t(layer.weight), b=_t(layer.bias), syn_keep=_t(s.syn_keep), gain=_t(s.mem_gain),
            leak=s.leak, r=_t(s.r), w_in=_t(s.w_in), v_leak=_t(s.v_leak),
            th=_t(s.v_threshold), v_reset=_t(s.v_reset),
        ))
    i_state = [torch.zeros(batch, layer.size) for layer in net.layers]
    v_state = [torch.zeros(batch, layer.size) for layer in net.layers]
    counts = [torch.zeros(batch, layer.size) for layer in net.layers]
    peaks = [0.0] * len(net.layers)
    out = []
    with torch.no_grad():
        for t in range(steps):
            z = x[t]
            for k, p in enumerate(params):
                syn_in = p["w_in"] * (z @ p["w"].T + p["b"])
                i_new = p["syn_keep"] * i_state[k] + syn_in
                drive = p["r"] * i_new
                v = v_state[k]
                if p["leak"]:
                    v = v + p["gain"] * ((p["v_leak"] - v) + drive)
                else:
                    v = v + drive
                z = (v > p["th"]).to(torch.float32)
                v_state[k] = torch.where(z > 0, p["v_reset"].expand_as(v), v)
                i_state[k] = i_new
                counts[k] += z
                peaks[k] = max(peaks[k], float((p["gain"] * drive).abs().max()))
            out.append(z)
    recording = Recording(
        output=torch.stack(out).to(torch.uint8).numpy(),
        layer_names=tuple(layer.neuron for layer in net.layers),
        counts=tuple(c.to(torch.int64).numpy() for c in counts),
    )
    return FloatRun(recording=recording, u_peaks=tuple(peaks))
