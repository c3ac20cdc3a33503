"""What a backend produced for a batch of samples."""

from __future__ import annotations

import dataclasses

import numpy as np

NJ_PER_J = 1e9


@dataclasses.dataclass(frozen=True)
class OnChipMeasurement:
    """Time and energy that Lava's profiler measured on the chip for one whole run (basis
    "measured"), as opposed to counts priced with a profile's per-operation constants.

    The run holds every sample back to back plus the L pipeline steps at its end (run/lava_sim.py),
    so per-sample figures are the run's totals divided by the samples, pipeline fill included.

    Attributes:
        samples: samples in the run.
        steps: time steps the chip ran (samples x T + L).
        time_s: execution time of the run (s), the sum of the profiler's per-step times.
        energy_j: total energy of the run (J), static included; None where it was not measured.
        static_energy_j: the static (leakage) part of ``energy_j`` (J), None where not given.
        source: how it was measured (the Lava profiler, the system).
    """

    samples: int
    steps: int
    time_s: float
    energy_j: float | None
    static_energy_j: float | None
    source: str
    basis: str = "measured"

    @property
    def time_per_step_s(self) -> float:
        return self.time_s / self.steps

    @property
    def energy_per_sample_nj(self) -> float | None:
        return None if self.energy_j is None else self.energy_j * NJ_PER_J / self.samples


@dataclasses.dataclass(frozen=True)
class Recording:
    """Output spikes and exact per-neuron spike counts of one backend run.

    Attributes:
        output: (T, B, C) uint8 spikes of the output layer, aligned with the input time steps.
        layer_names: neuron node id of each layer, input side first.
        counts: per layer, (B, n) int64 spike counts over the T steps of each sample.
        on_chip: what the chip's profiler measured (loihi2 backend only), else None.
        membrane: (T, B, C) float64 output-layer membrane potential before the threshold test and
            reset, in units of the threshold, when it was asked for (the max-membrane decoder,
            run/membrane.py), else None.
    """

    output: np.ndarray
    layer_names: tuple[str, ...]
    counts: tuple[np.ndarray, ...]
    on_chip: OnChipMeasurement | None = None
    membrane: np.ndarray | None = None

    @property
    def batch(self) -> int:
        return int(self.output.shape[1])
