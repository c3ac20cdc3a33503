"""Exact activity counts from a Recording: spikes, synaptic operations and neuron updates.

A synaptic operation is one spike (or one non-zero graded input) delivered over one non-zero
synapse. Layer l receives

    synops_l = sum over its sources j of events_j x (non-zero synapses from j into l)
               + sum over its own neurons i of spikes_i x (non-zero recurrent synapses out of i)

where the sources are the input channels (l = 0) or the previous layer's neurons. Every allocated
neuron is updated once per time step: updates_l = neurons_l x steps. These are exact counts; any
energy figure is priced from them afterwards (``evaluate/energy.py``).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from snn_deploy.quantize.deployment import QuantLayer
from snn_deploy.run.recording import Recording


@dataclasses.dataclass(frozen=True)
class ActivityCounts:
    """Per-sample means over a batch (floats), in total and per layer (input side first).

    ``synops_per_sample`` is the sum of ``layer_synops_per_sample``; ``layer_synops_per_sample``
    counts the operations *arriving at* each layer (feed-forward and recurrent).
    """

    spikes_per_sample: float
    synops_per_sample: float
    layer_spikes_per_sample: tuple[float, ...]
    layer_synops_per_sample: tuple[float, ...]
    layer_updates_per_sample: tuple[float, ...]


def fanout(layer: QuantLayer) -> np.ndarray:
    """(n_in,) int64: the non-zero synapses out of each presynaptic neuron into ``layer``: a
    Dense's column counts; for a Conv, summed over the kernel taps and output positions that read
    the neuron (zero padding reads none); an input layer has no synapses (its data enter as bias
    or current)."""
    if layer.kind == "dense":
        return np.count_nonzero(layer.weights, axis=0).astype(np.int64)
    if layer.kind == "input":
        return np.zeros(layer.size, dtype=np.int64)
    g = layer.conv
    assert g is not None
    (c_in, h, w), (c_out, h_out, w_out) = g.in_shape, g.out_shape
    (sy, sx), (py, px), (dy, dx) = g.stride, g.padding, g.dilation
    per_in, per_out = c_in // g.groups, c_out // g.groups
    fan = np.zeros((c_in, h + 2 * py, w + 2 * px), dtype=np.int64)
    for k in range(g.groups):
        taps = np.count_nonzero(layer.weights[k * per_out:(k + 1) * per_out], axis=0)
        for ky in range(g.kernel[0]):
            for kx in range(g.kernel[1]):
                fan[k * per_in:(k + 1) * per_in, ky * dy:ky * dy + sy * (h_out - 1) + 1:sy,
                    kx * dx:kx * dx + sx * (w_out - 1) + 1:sx] += taps[:, ky, kx, None, None]
    return fan[:, py:py + h, px:px + w].reshape(-1)


def layer_synops(recording: Recording, input_events: np.ndarray,
                 weight_matrices: list[np.ndarray],
                 recurrent: list[np.ndarray | None] | None = None) -> list[np.ndarray]:
    """Per layer, (B,) int64 synaptic operations arriving at it in each sample (see module doc).
    ``weight_matrices``: per layer its (n_out, n_in) weights, or its (n_in,) ``fanout``."""
    sources = [np.asarray(input_events, dtype=np.int64),
               *(np.asarray(c, dtype=np.int64) for c in recording.counts[:-1])]
    # a source's non-zero fan-out into layer l: the non-zero entries of its column of W_l
    per_layer = [src @ (w if w.ndim == 1 else np.count_nonzero(w, axis=0))
                 for src, w in zip(sources, weight_matrices)]
    for i, rec in enumerate(recurrent or []):
        if rec is not None:
            own = np.asarray(recording.counts[i], dtype=np.int64)
            per_layer[i] = per_layer[i] + own @ np.count_nonzero(rec, axis=0)
    return per_layer


def activity(recording: Recording, input_events: np.ndarray,
             weight_matrices: list[np.ndarray],
             recurrent: list[np.ndarray | None] | None = None, *, steps: int) -> ActivityCounts:
    """Count spikes, synaptic operations and neuron updates.

    Args:
        recording: the backend's output.
        input_events: (B, n_in) number of non-zero input events per input channel and sample.
        weight_matrices: (n_out, n_in) weights of each layer, or its (n_in,) ``fanout``, input
            side first.
        recurrent: per layer, its (n, n) recurrent weights or None; a spike also travels over
            the non-zero recurrent synapses of its own layer.
        steps: time steps per sample; every neuron is updated on every one of them.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if len(weight_matrices) != len(recording.counts):
        raise ValueError(f"{len(weight_matrices)} weight matrices for {len(recording.counts)}"
                         " recorded layers")
    synops = layer_synops(recording, input_events, weight_matrices, recurrent)
    spikes = sum(c.sum(axis=1) for c in recording.counts)
    return ActivityCounts(
        spikes_per_sample=float(np.mean(spikes)),
        synops_per_sample=float(np.mean(sum(synops))),
        layer_spikes_per_sample=tuple(float(c.sum(axis=1).mean()) for c in recording.counts),
        layer_synops_per_sample=tuple(float(s.mean()) for s in synops),
        layer_updates_per_sample=tuple(float(c.shape[1] * steps) for c in recording.counts),
    )
