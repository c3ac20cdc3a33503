"""The output layer's membrane potential on the deployed backends, for the max-membrane decoder.

Lava's LIF (and the emulator, ``run_layers(..., record_state=True)``) expose u and v *after* the
step's reset. The decoder reads v *before* the threshold test (coding.py), which the v half
of Lava's fixed-point step (``lif_core.v_update``) gives from the previous step's v and this step's
u, with v_{-1} = 0 at each sample's first step (LIFReset zeroes u and v there). Computed on exact
integers (float64) and divided by the threshold vth << 6, so emulator and lava-sim give the same
numbers whenever their u and v agree (tests/test_codings_decoders.py checks it on Lava).
"""

from __future__ import annotations

import numpy as np
import torch

from snn_deploy.quantize.deployment import Deployment
from snn_deploy.run.emulator import CHUNK, run_layers, spike_counts
from snn_deploy.run.layer_constants import LayerConstants, require_dense
from snn_deploy.run.lif_core import ALWAYS, torch_ops, v_update
from snn_deploy.run.recording import Recording


def pre_reset_membrane(dep: Deployment, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(T, B, C) integer u and post-reset v of the output layer, each sample in local time from
    zero state -> (T, B, C) float64 v before threshold and reset, in units of vth << 6."""
    c = LayerConstants.of(dep.layers[-1], dep, torch.device("cpu"), 1)
    v = v.to(torch.float64)
    before = torch.cat([torch.zeros_like(v[:1]), v[:-1]])
    pre = v_update(torch_ops(), ALWAYS)(before, u.to(torch.float64), c.bias, c.v_keep,
                                        float(dep.profile.state_max))
    return pre / max(c.vth, 1.0)


class MembraneEmulator:
    """The emulator (``run.emulator.run_layers`` in chunks of ``CHUNK`` samples, every sample from
    rest as on lava-sim) recording the output layer's pre-reset membrane as well."""

    def __init__(self, dep: Deployment, *, device: str | torch.device = "cpu"):
        require_dense(dep, "the membrane readout")
        self.dep, self.device = dep, torch.device(device)

    def run(self, x: np.ndarray | torch.Tensor) -> Recording:
        """(T, B, n) input -> Recording with ``membrane`` (T, B, C) float64."""
        x = torch.as_tensor(np.asarray(x)) if isinstance(x, np.ndarray) else x
        outputs, counts, membranes = [], [], []
        for start in range(0, x.shape[1], CHUNK):
            traces = run_layers(self.dep, x[:, start:start + CHUNK], device=self.device,
                                record_state=True)
            last = traces[-1]
            if last.u is None or last.v is None:
                raise RuntimeError("run_layers(record_state=True) returned no u and v")
            outputs.append(last.spikes.to(torch.uint8).cpu().numpy())
            counts.append([spike_counts(t.spikes).cpu().numpy() for t in traces])
            membranes.append(pre_reset_membrane(self.dep, last.u.cpu(), last.v.cpu()).numpy())
        return Recording(
            output=np.concatenate(outputs, axis=1),
            layer_names=tuple(layer.neuron for layer in self.dep.layers),
            counts=tuple(np.concatenate(c) for c in zip(*counts)),
            membrane=np.concatenate(membranes, axis=1),
        )


def lava_membrane(dep: Deployment, u: np.ndarray, v: np.ndarray, *, steps: int, batch: int
                  ) -> np.ndarray:
    """The output layer's u and v recorded on one Lava run ((B*T + L, C) each, global time) ->
    (T, B, C) pre-reset membrane aligned with the input, as ``pre_reset_membrane``."""
    depth = dep.depth
    local = [torch.as_tensor(a[depth:depth + batch * steps].reshape(batch, steps, -1)
                             .transpose(1, 0, 2).astype(np.int64)) for a in (u, v)]
    return pre_reset_membrane(dep, local[0], local[1]).numpy()
