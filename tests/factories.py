"""Tiny factories shared by the tests: random float layer chains of CUBA LIF neurons."""

from __future__ import annotations

import numpy as np
from snn_deploy.convert.nirgraph import FloatLayer, FloatNetwork, NeuronSpec


def random_network(sizes, *, seed: int, mean: float = 0.4, theta: float = 1.0,
                   steps: int = 9) -> FloatNetwork:
    """A chain of CubaLIF layers (syn_keep 0.8, mem_gain 0.1) with normal(mean, 1) weights
    scaled by 6 / sqrt(fan-in), so that a few input spikes make it spike."""
    rng = np.random.default_rng(seed)
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        full = lambda v: np.full(n_out, float(v))  # noqa: E731
        spec = NeuronSpec(kind="CubaLIF", syn_keep=full(0.8), mem_gain=full(0.1), leak=True,
                          r=full(1), w_in=full(1), v_leak=full(0), v_threshold=full(theta),
                          v_reset=full(0))
        weight = rng.normal(mean, 1.0, size=(n_out, n_in)) * 6 / np.sqrt(n_in)
        layers.append(FloatLayer(synapse=f"fc{i}", neuron=f"lif{i}", weight=weight,
                                 bias=np.zeros(n_out), spec=spec))
    return FloatNetwork(dt=1e-3, input_size=sizes[0], layers=tuple(layers),
                        coding={"encoding": "rate", "steps": steps})
