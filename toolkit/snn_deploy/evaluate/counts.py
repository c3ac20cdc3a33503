"""Exact activity counts from a Recording: spikes and synaptic operations per sample.

A synaptic operation is one spike (or one non-zero graded input) delivered over one non-zero
synapse: synops = sum over sources of events x non-zero fan-out.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from snn_deploy.run.recording import Recording


@dataclasses.dataclass(frozen=True)
class ActivityCounts:
    """Per-sample means over a batch (floats) and per-layer spike means."""

    spikes_per_sample: float
    synops_per_sample: float
    layer_spikes_per_sample: tuple[float, ...]


def fan_out(weight_matrices: list[np.ndarray]) -> list[np.ndarray]:
    """Non-zero fan-out of every source neuron: input first, then each layer (the last has 0)."""
    outs = [np.count_nonzero(w, axis=0) for w in weight_matrices]
    last = np.zeros(weight_matrices[-1].shape[0], dtype=np.int64)
    return outs + [last]


def activity(recording: Recording, input_events: np.ndarray,
             weight_matrices: list[np.ndarray],
             recurrent: list[np.ndarray | None] | None = None) -> ActivityCounts:
    """Count spikes and synaptic operations.

    Args:
        recording: the backend's output.
        input_events: (B, n_in) number of non-zero input events per input channel and sample.
        weight_matrices: (n_out, n_in) weights of each layer, input side first.
        recurrent: per layer, its (n, n) recurrent weights or None; a spike also travels over
            the non-zero recurrent synapses of its own layer.
    """
    fo = fan_out(weight_matrices)
    per_sample = input_events @ fo[0]
    for counts, fan in zip(recording.counts, fo[1:]):
        per_sample = per_sample + counts @ fan
    for counts, rec in zip(recording.counts, recurrent or []):
        if rec is not None:
            per_sample = per_sample + counts @ np.count_nonzero(rec, axis=0)
    spikes = sum(c.sum(axis=1) for c in recording.counts)
    return ActivityCounts(
        spikes_per_sample=float(np.mean(spikes)),
        synops_per_sample=float(np.mean(per_sample)),
        layer_spikes_per_sample=tuple(float(c.sum(axis=1).mean()) for c in recording.counts),
    )
