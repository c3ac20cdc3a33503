"""Input encoders: values in [0, 1] -> float32 tensors of shape (T, B, k n), time-major as in
Norse, where k is the encoding's number of stacked channels per input value (``channels``): 1, or
``len(FUSION_PARTS)`` for fusion coding.
"""

from __future__ import annotations

from typing import Callable

import torch

from snn_deploy.bounds import MAX_STEPS
from snn_deploy.errors import UserError


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
