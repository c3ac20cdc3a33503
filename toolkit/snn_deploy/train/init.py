"""Stage 1: waking silent layers at initialisation (a data-driven weight gain per hidden layer).

With PyTorch's default initialisation (W ~ U(-1/sqrt(n_in), 1/sqrt(n_in))) the drive a layer gets
scales with its input's spike density. Rate and burst codings send about x T spikes per channel;
latency coding sends at most one, so at T = 16 the hidden layer of the digits model never reaches
threshold (0 spikes on 256 training samples, measured), the SuperSpike surrogate is almost zero
that far below threshold, and BPTT barely moves the weights (docs/coding.md).

``wake_silent_layers`` runs the freshly initialised network on training inputs and, for each hidden
layer whose mean activity is below ``SILENT_BELOW`` spikes per neuron and sample, multiplies its
feed-forward weights by the smallest gain g >= 1 (found by doubling, then bisection) at which the
activity reaches ``TARGET_ACTIVITY``. Layers that already fire are left exactly as they are, so
only (nearly) silent starts change. The idea is that of data-driven initialisations such as
LSUV (Mishkin & Matas 2016) and fluctuation-driven SNN initialisation (Rossbroich, Gygax & Zenke
2022): set the initial scale from the data's statistics. Only the training split is used.
"""

from __future__ import annotations

import torch

from snn_deploy.train.model import LIFNetwork

SILENT_BELOW = 0.05  # spikes per neuron and sample: below this a hidden layer counts as silent
TARGET_ACTIVITY = 0.5  # spikes per neuron and sample a woken layer is scaled up to
MAX_GAIN = 1024.0  # give up beyond this gain (a layer that no input reaches)
BISECTION_STEPS = 8


def _activity(model: LIFNetwork, spikes: torch.Tensor, k: int) -> float:
    with torch.no_grad():
        z = model.trace(spikes).spikes[k]
    return float(z.sum(dim=(0, 2)).mean()) / z.shape[2]


def wake_silent_layers(model: LIFNetwork, spikes: torch.Tensor) -> tuple[float, ...]:
    """Scale up the feed-forward weights of silent hidden layers in place (see the module
    docstring); ``spikes`` is (T, B, n_in) encoded training input. Returns each hidden layer's gain
    (1.0 where it was left alone)."""
    gains = []
    for k in range(len(model.config.hidden)):
        weight = model.synapses[k].weight
        if _activity(model, spikes, k) >= SILENT_BELOW:
            gains.append(1.0)
            continue
        base = weight.detach().clone()

        def active_at(g: float) -> bool:
            with torch.no_grad():
                weight.copy_(base * g)
            return _activity(model, spikes, k) >= TARGET_ACTIVITY

        lo, hi = 1.0, 2.0
        while not active_at(hi) and hi < MAX_GAIN:
            lo, hi = hi, hi * 2
        for _ in range(BISECTION_STEPS):
            mid = (lo + hi) / 2
            lo, hi = (lo, mid) if active_at(mid) else (mid, hi)
        with torch.no_grad():
            weight.copy_(base * hi)
        gains.append(hi)
    return tuple(gains)
