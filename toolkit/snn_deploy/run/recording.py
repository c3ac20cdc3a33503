"""What a backend produced for a batch of samples."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Recording:
    """Output spikes and exact per-neuron spike counts of one backend run.

    Attributes:
        output: (T, B, C) uint8 spikes of the output layer, aligned with the input time steps.
        layer_names: neuron node id of each layer, input side first.
        counts: per layer, (B, n) int64 spike counts over the T steps of each sample.
    """

    output: np.ndarray
    layer_names: tuple[str, ...]
    counts: tuple[np.ndarray, ...]

    @property
    def batch(self) -> int:
        return int(self.output.shape[1])
