"""Every layer's spikes, u and v on the emulator, in each layer's own shape, as netx's probes
show them: what ``snn-deploy run --record`` writes, to debug a deployment layer by layer.

Time is the emulator's local time by default (layer l at step k sees layer l - 1's spikes of
step k, every sample from rest); with a ``Pipeline`` it is Lava's global time with netx's resets.
The v that a probe shows in the step a neuron spikes differs: Lava's ``v.get()`` reads the state
after the reset (0); the Loihi 2 probes that recorded lava-dl's PilotNet ground truth
(``tests/lava/lib/dl/netx/gts/pilotnet_lif``) read 128 there, while the state itself goes on from
0, as the next steps of those recordings show. ``v_convention`` picks one.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from snn_deploy.errors import UserError
from snn_deploy.quantize.deployment import Deployment
from snn_deploy.run.emulator import Pipeline, run_layers

PROBES = ("spikes", "u", "v")
V_CONVENTIONS = ("lava", "chip")
CHIP_V_AT_SPIKE = 128  # what the chip's v probe reads in the step a neuron spikes


@dataclasses.dataclass(frozen=True)
class LayerProbe:
    """One layer's recorded arrays, time-major: (T, B, *shape), shape (C, H, W) or (n,)."""

    name: str
    spikes: np.ndarray  # uint8
    u: np.ndarray  # int64
    v: np.ndarray  # int64

    def arrays(self, probes: tuple[str, ...]) -> dict[str, np.ndarray]:
        return {probe: getattr(self, probe) for probe in probes}


def parse_probes(text: str) -> tuple[str, ...]:
    """"spikes,u,v" -> ("spikes", "u", "v"), refusing unknown names."""
    names = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [name for name in names if name not in PROBES]
    if unknown or not names:
        raise UserError(f"--record {text!r}: choose from {', '.join(PROBES)}, comma-separated")
    return names


def probe_layers(dep: Deployment, x: torch.Tensor, *, input_as: str = "spikes",
                 pipeline: Pipeline | None = None, v_convention: str = "lava",
                 device: str = "cpu") -> list[LayerProbe]:
    """Run (T, B, n) input on the emulator recording every layer (``run.emulator.run_layers``)."""
    if v_convention not in V_CONVENTIONS:
        raise UserError(f"unknown v convention {v_convention!r}: choose from"
                        f" {', '.join(V_CONVENTIONS)}")
    traces = run_layers(dep, x, device=device, record_state=True, input_as=input_as,
                        pipeline=pipeline)
    probes = []
    for layer, trace in zip(dep.layers, traces):
        shape = (*trace.spikes.shape[:2], *(layer.shape or (layer.size,)))
        spikes = trace.spikes.cpu().numpy()
        v = trace.v.cpu().numpy()  # type: ignore[union-attr]
        if v_convention == "chip":
            v = np.where(spikes, CHIP_V_AT_SPIKE, v)
        probes.append(LayerProbe(name=layer.neuron, spikes=spikes.astype(np.uint8).reshape(shape),
                                 u=trace.u.cpu().numpy().reshape(shape),  # type: ignore[union-attr]
                                 v=v.reshape(shape)))
    return probes
