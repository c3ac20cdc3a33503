"""Output decoders: the output layer's (T, B, C) spikes (or membrane) -> (B, C) logits,
differentiable:

spike_count  logits = sum_t z_t (the counts).
first_spike  logits = -beta * t_first, with the soft first-spike time (Ding et al. 2023, arXiv
             2306.05654, "first-spike decoding"; steps counted from 0, T when a neuron never fires)

                 t_first = sum_t t z_t prod_{s<t} (1 - z_s) + T prod_{s<T} (1 - z_s)

             which equals the hard first-spike time on 0/1 spikes and passes the spikes' surrogate
             gradients: d t_first / d z_t = t - t_first for t before the first spike (an earlier
             spike lowers t_first), 0 after it. Prediction: the earliest first spike; ties go to
             the lowest class index (the argmax of the logits).
average      logits = the mean spike count of each of G equal populations of output neurons
             (the coding's "decoder_groups", G classes; lava-dl netx's ``average`` readout, which
             N-TIDIGITS uses: 242 neurons, 11 classes of 22). Ties: the lowest class.
max_membrane logits = beta * max_t m_t, m_t the output layer's membrane potential at step t in
             units of its threshold (v_t / v_th), taken *before* the threshold test and reset: the
             value the threshold sees. The output layer keeps its threshold and reset (it is the
             same LIF layer on every backend, so Lava runs it unchanged); its spikes are ignored by
             this decoder. Ties go to the lowest class index. Backends provide m (Recording.membrane,
             run.twin.TwinOutput.membrane, train.model.Trace.membrane).

Keys of ``DECODERS`` are the values of the coding's "decoder" entry (``ModelConfig.decoder``, the NIR
metadata and the Deployment's coding).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import torch

from snn_deploy.errors import UserError


def spike_count(spikes: torch.Tensor) -> torch.Tensor:
    """Spike-count decoder: (T, B, C) output spikes -> (B, C) counts (the logits)."""
    return spikes.sum(dim=0)


def predict(spikes: torch.Tensor) -> torch.Tensor:
    """Class with the most output spikes; ties go to the lowest class index. (T, B, C) -> (B,)."""
    return spike_count(spikes).argmax(dim=1)


def first_spike_times(spikes: torch.Tensor) -> torch.Tensor:
    """(T, B, C) spikes -> (B, C) soft first-spike times in steps (T where there is no spike)."""
    steps = spikes.shape[0]
    silent = torch.cumprod(1.0 - spikes, dim=0)  # prod_{s<=t} (1 - z_s)
    before = torch.cat([torch.ones_like(silent[:1]), silent[:-1]])  # prod_{s<t} (1 - z_s)
    t = torch.arange(steps, dtype=spikes.dtype).view(-1, *([1] * (spikes.dim() - 1)))
    return (t * spikes * before).sum(dim=0) + steps * silent[-1]


def first_spike_logits(spikes: torch.Tensor, *, beta: float) -> torch.Tensor:
    """(T, B, C) spikes -> (B, C) logits -beta * t_first."""
    return -beta * first_spike_times(spikes)


def count_logits(spikes: torch.Tensor, *, beta: float) -> torch.Tensor:
    """(T, B, C) spikes -> (B, C) spike counts; ``beta`` is not used."""
    del beta
    return spike_count(spikes)


def average_logits(spikes: torch.Tensor, *, beta: float, groups: int = 1) -> torch.Tensor:
    """(T, B, G k) spikes -> (B, G) mean spike count of each population of k neurons; ``beta``
    is not used."""
    del beta
    counts = spike_count(spikes)
    if counts.shape[-1] % groups:
        raise UserError(f"the average readout splits {counts.shape[-1]} output neurons into"
                        f" {groups} equal populations: {counts.shape[-1]} is no multiple")
    return counts.reshape(*counts.shape[:-1], groups, -1).mean(dim=-1)


def max_membrane_logits(membrane: torch.Tensor, *, beta: float) -> torch.Tensor:
    """(T, B, C) membrane potentials (units of the threshold) -> (B, C) logits beta * max_t m_t."""
    return beta * membrane.max(dim=0).values


Decoder = Callable[..., torch.Tensor]

DECODERS: dict[str, Decoder] = {
    "spike_count": count_logits,
    "first_spike": first_spike_logits,
    "max_membrane": max_membrane_logits,
    "average": average_logits,
}
# Decoders that read the output layer's membrane potential instead of its spikes.
MEMBRANE_DECODERS = frozenset({"max_membrane"})


def decoder_logits(spikes: torch.Tensor, *, decoder: str, beta: float,
                   membrane: torch.Tensor | None = None, groups: int = 1) -> torch.Tensor:
    """(T, B, C) output spikes (or, for a membrane decoder, the (T, B, C) ``membrane``) -> (B, C)
    logits of the named decoder (a key of ``DECODERS``; ``groups`` for the average readout)."""
    if decoder == "average":
        return average_logits(spikes, beta=beta, groups=groups)
    if decoder in MEMBRANE_DECODERS:
        if membrane is None:
            raise ValueError(f"the {decoder} decoder needs the output layer's membrane potential")
        return DECODERS[decoder](membrane, beta=beta)
    return DECODERS[decoder](spikes, beta=beta)


@dataclasses.dataclass(frozen=True)
class DecoderSpec:
    """The output decoder a model was trained for: a key of ``DECODERS`` and its logit scale beta
    (1 / step for first_spike, 1 / threshold for max_membrane; spike_count ignores it), and the
    number of populations ``groups`` the average readout splits the output neurons into."""

    name: str = "spike_count"
    beta: float = 1.0
    groups: int = 1

    def __post_init__(self) -> None:
        if self.name not in DECODERS:
            raise UserError(f"unknown decoder {self.name!r}: known are {', '.join(DECODERS)}")
        if not (math.isfinite(self.beta) and self.beta > 0):
            raise UserError(f"decoder beta must be finite and > 0, got {self.beta}")
        if self.groups < 1:
            raise UserError(f"decoder groups must be >= 1, got {self.groups}")

    @property
    def reads_membrane(self) -> bool:
        return self.name in MEMBRANE_DECODERS

    def logits(self, spikes: torch.Tensor, membrane: torch.Tensor | None = None) -> torch.Tensor:
        """(T, B, C) output spikes (and membrane) -> (B, C) logits, differentiable."""
        return decoder_logits(spikes, decoder=self.name, beta=self.beta, membrane=membrane,
                              groups=self.groups)

    def predict(self, spikes: torch.Tensor, membrane: torch.Tensor | None = None) -> torch.Tensor:
        """(T, B, C) output spikes (and membrane) -> (B,) int64 classes (ties: lowest index)."""
        return decoder_predict(spikes, decoder=self.name, membrane=membrane, groups=self.groups)


def decoder_predict(spikes: torch.Tensor, *, decoder: str,
                    membrane: torch.Tensor | None = None, groups: int = 1) -> torch.Tensor:
    """(T, B, C) output spikes (and membrane) -> (B,) int64 classes of the named decoder (ties:
    lowest index)."""
    m = None if membrane is None else membrane.detach()
    return decoder_logits(spikes.detach(), decoder=decoder, beta=1.0, membrane=m,
                          groups=groups).argmax(dim=1)
