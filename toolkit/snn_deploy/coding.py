"""A model's coding: input encoders, output decoders, and the ``Coding`` a file records.

Encoders map values in [0, 1] to float32 tensors of shape (T, B, k n), time-major as in Norse,
where k is the encoding's number of stacked channels per input value (``channels``): 1, or
``len(FUSION_PARTS)`` for fusion coding.

Decoders map the output layer's (T, B, C) spikes (or membrane) to (B, C) logits, differentiable:
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
from typing import Callable, Mapping

import numpy as np
import torch

from snn_deploy.bounds import MAX_STEPS
from snn_deploy.errors import UserError, brief


def rate_encode(x: torch.Tensor, *, steps: int, seed: int) -> torch.Tensor:
    """Bernoulli rate coding: a spike at step t with probability x, independently per step.

    Args:
        x: (B, n) values in [0, 1].
        steps: number of time steps T.
        seed: seeds the generator, so the same call gives the same spikes.

    Returns:
        (T, B, n) float32 tensor of 0/1 spikes.
    """
    gen = torch.Generator().manual_seed(seed)
    u = torch.rand((steps, *x.shape), generator=gen)
    return (u < x.clamp(0.0, 1.0).unsqueeze(0)).to(torch.float32)


def direct_encode(x: torch.Tensor, *, steps: int, seed: int) -> torch.Tensor:
    """Direct coding: the value itself is injected as a constant current at every step.

    ``seed`` is accepted for a uniform signature and ignored (the coding is deterministic).

    Returns:
        (T, B, n) float32 tensor, x repeated T times.
    """
    del seed
    return x.to(torch.float32).unsqueeze(0).expand(steps, *x.shape).contiguous()


def latency_encode(x: torch.Tensor, *, steps: int, seed: int) -> torch.Tensor:
    """Latency (time-to-first-spike) coding: one spike at step floor((1 - x) T), none for x = 0.

    Larger values spike earlier (x = 1 at step 0). Deterministic; ``seed`` is ignored. Ding et al.
    2023 (arXiv 2306.05654), Sec. "encoding schemes".

    Returns:
        (T, B, n) float32 tensor with at most one spike per channel.
    """
    del seed
    x = x.clamp(0.0, 1.0).to(torch.float32)
    when = torch.floor((1.0 - x) * steps)  # x = 0 -> T: outside the window, no spike
    t = torch.arange(steps, dtype=torch.float32).view(-1, *([1] * x.dim()))
    return (t == when.unsqueeze(0)).to(torch.float32)


def burst_first_encode(x: torch.Tensor, *, steps: int, seed: int) -> torch.Tensor:
    """Burst-first coding: a spike at every step t with t / T < x (a burst from step 0 whose
    length codes the value). Deterministic; ``seed`` is ignored. Ding et al. 2023 ("pre")."""
    del seed
    x = x.clamp(0.0, 1.0).to(torch.float32)
    t = torch.arange(steps, dtype=torch.float32).view(-1, *([1] * x.dim())) / steps
    return (t < x.unsqueeze(0)).to(torch.float32)


def burst_last_encode(x: torch.Tensor, *, steps: int, seed: int) -> torch.Tensor:
    """Burst-last coding: a spike at every step t with t / T >= 1 - x (a burst that ends at the
    last step). Deterministic; ``seed`` is ignored. Ding et al. 2023 ("post")."""
    del seed
    x = x.clamp(0.0, 1.0).to(torch.float32)
    t = torch.arange(steps, dtype=torch.float32).view(-1, *([1] * x.dim())) / steps
    return ((t >= 1.0 - x.unsqueeze(0)) & (x.unsqueeze(0) > 0)).to(torch.float32)


# Fusion coding (Ding et al. 2023, arXiv 2306.05654, "coding fusion"; Nat. Commun. 2025): the same
# values encoded by several codings, stacked as channels. For flat inputs the channel blocks are
# concatenated along the feature axis in this order: [rate(x) | latency(x) | burst-first(x)].
FUSION_PARTS = ("rate", "latency", "burst-first")


def fusion_encode(x: torch.Tensor, *, steps: int, seed: int) -> torch.Tensor:
    """Fusion coding: ``FUSION_PARTS`` applied to the same (B, n) values, concatenated along the
    last axis. The rate part draws the same numbers as ``rate_encode`` with this seed.

    Returns:
        (T, B, 3 n) float32 tensor of 0/1 spikes.
    """
    return torch.cat([ENCODERS[part](x, steps=steps, seed=seed) for part in FUSION_PARTS], dim=-1)



Encoder = Callable[..., torch.Tensor]

ENCODERS: dict[str, Encoder] = {
    "rate": rate_encode,
    "direct": direct_encode,
    "latency": latency_encode,
    "burst-first": burst_first_encode,
    "burst-last": burst_last_encode,
    "fusion": fusion_encode,
}

# Encodings whose output is binary spikes (the others carry graded values).
BINARY_ENCODINGS = frozenset({"rate", "latency", "burst-first", "burst-last", "fusion"})
# Encodings that draw random numbers (evaluation seeds them; attacks freeze or average them).
STOCHASTIC_ENCODINGS = frozenset({"rate", "fusion"})


def channels(encoding: str) -> int:
    """Encoded channels per input value: ``len(FUSION_PARTS)`` for fusion, else 1 (also for names
    that are no encoding, such as an ANN's "none")."""
    return len(FUSION_PARTS) if encoding == "fusion" else 1


def encoded_width(encoding: str, n_inputs: int) -> int:
    """Width of the encoded input (what the network's first layer takes) for n_inputs values."""
    return channels(encoding) * n_inputs


def encode_with_uniforms(x: torch.Tensor, uniforms: torch.Tensor, *, encoding: str,
                         steps: int) -> torch.Tensor:
    """A stochastic encoding with its random numbers given: (B, n) values and (T, B, n) uniforms
    in [0, 1) (the numbers ``rate_encode`` would draw) -> what ``encode`` gives for them."""
    rate = (uniforms < x.clamp(0.0, 1.0).unsqueeze(0)).to(torch.float32)
    if encoding == "rate":
        return rate
    if encoding == "fusion":
        rest = [ENCODERS[p](x, steps=steps, seed=0) for p in FUSION_PARTS if p != "rate"]
        return torch.cat([rate, *rest], dim=-1)
    raise UserError(f"encoding {encoding!r} draws no random numbers")


def straight_through_values(x: torch.Tensor, *, encoding: str, steps: int) -> torch.Tensor:
    """(B, n) values -> (T, B, k n): x repeated over time and over the k stacked channels, the
    stand-in whose gradient the encoders pass straight through (d spikes / d x = 1 per channel)."""
    return x.repeat(1, channels(encoding)).unsqueeze(0).expand(steps, -1, -1)


def fold_channels(grad: torch.Tensor, *, encoding: str) -> torch.Tensor:
    """(..., k n) gradient with respect to the encoded channels -> (..., n), summing each value's
    k stacked channels (the adjoint of the channel repetition in ``straight_through_values``)."""
    k = channels(encoding)
    if k == 1:
        return grad
    return grad.reshape(*grad.shape[:-1], k, grad.shape[-1] // k).sum(dim=-2)


def encode(x: torch.Tensor, *, encoding: str, steps: int, seed: int) -> torch.Tensor:
    """Encode (B, n) inputs with the named encoder (a key of ``ENCODERS``)."""
    if encoding not in ENCODERS:
        raise UserError(f"unknown encoding {encoding!r}: choose from {', '.join(ENCODERS)}")
    if not 1 <= steps <= MAX_STEPS:
        raise UserError(f"--steps must be in 1..{MAX_STEPS}, got {steps}")
    return ENCODERS[encoding](x, steps=steps, seed=seed)


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


DEFAULT_STEPS = 32  # a coding's steps where the file records none


def _number(value: object) -> float | None:
    """A single finite number from a file's metadata, else None."""
    arr = np.asarray(value) if not isinstance(value, dict) else np.asarray(None)
    if arr.size != 1 or arr.dtype.kind not in "iuf":
        return None
    number = float(arr.reshape(-1)[0])
    return number if math.isfinite(number) else None


def _checked_entry(key: str, value: object, *, where: str) -> object:
    """One coding entry read from a file, checked and in its Python type (see ``Coding``)."""
    value = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    number = _number(value)
    what = f"{where}: {key}"
    if key == "steps":
        if number is None or number != round(number) or not 1 <= number <= MAX_STEPS:
            raise UserError(f"{what} must be a whole number in 1..{MAX_STEPS}, got {brief(value)}")
        return int(number)
    if key == "decoder_groups":
        if number is None or number != round(number) or not 1 <= number <= MAX_STEPS:
            raise UserError(f"{what} must be a whole number in 1..{MAX_STEPS}, got {brief(value)}")
        return int(number)
    if key == "decoder_beta":
        if number is None:
            raise UserError(f"{what} must be a finite number, got {brief(value)}")
        return number
    if key in Coding.TEXT_KEYS and not isinstance(value, str):
        raise UserError(f"{what} must be text, got {brief(value)}")
    return value


@dataclasses.dataclass(frozen=True)
class Coding:
    """The coding a model file records (a NIR graph's ``metadata["snn_deploy"]``, a Deployment's
    ``coding`` group, a netx file's ``snn_deploy_coding``), checked once when the file is read.

    Entries (the defaults hold where a file has none):

        encoding      a key of ``ENCODERS``, or "none" for an ANN (default "rate")
        steps         time steps T per sample, 1..MAX_STEPS (default ``DEFAULT_STEPS``, 32)
        dataset       the data set the model was trained on (default "digits")
        decoder       a key of ``DECODERS`` (default "spike_count")
        decoder_beta  the decoder's logit scale, finite and > 0 (default 1)
        decoder_groups  the average readout's populations (classes), >= 1 (default 1)

    ``entries`` keeps every entry as the file holds it, in its order, other tools' keys too (e.g.
    "writer"), so that a Deployment made from a graph writes the same coding back.
    """

    entries: tuple[tuple[str, object], ...] = ()

    TEXT_KEYS = ("encoding", "dataset", "decoder")

    @classmethod
    def read(cls, raw: object, *, where: str) -> Coding:
        """A coding read from a file, each value checked (``steps`` a whole number in
        1..MAX_STEPS, ``decoder_beta`` a finite number, names text, the decoder known); ``where``
        names the coding in the one-line UserError."""
        if isinstance(raw, Coding):
            return raw
        if not isinstance(raw, Mapping):
            raise UserError(f"{where} is {brief(raw)}, not a group of values")
        coding = cls(tuple((str(key), _checked_entry(str(key), value, where=where))
                           for key, value in raw.items()))
        try:
            coding.decoder  # noqa: B018 -- checks the decoder's name and beta
        except UserError as exc:
            raise UserError(f"{where}: {exc}") from None
        return coding

    @classmethod
    def of(cls, **entries: object) -> Coding:
        """A coding from values this program chose (a training config, an ANN), checked alike."""
        return cls.read(entries, where="coding")

    def _get(self, key: str, default: object) -> object:
        return next((value for k, value in self.entries if k == key), default)

    @property
    def encoding(self) -> str:
        return str(self._get("encoding", "rate"))

    @property
    def steps(self) -> int:
        return int(self._get("steps", DEFAULT_STEPS))

    @property
    def dataset(self) -> str:
        return str(self._get("dataset", "digits"))

    @property
    def decoder(self) -> DecoderSpec:
        return DecoderSpec(name=str(self._get("decoder", "spike_count")),
                           beta=float(self._get("decoder_beta", 1.0)),
                           groups=int(self._get("decoder_groups", 1)))

    @property
    def binary(self) -> bool:
        """Whether the encoded input is 0/1 spikes (else graded values)."""
        return self.encoding in BINARY_ENCODINGS

    def to_dict(self) -> dict:
        """The entries as a dict, in the file's order (what the writers record)."""
        return dict(self.entries)
