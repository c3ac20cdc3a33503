"""Stage 1: perturbed inputs for noise and adversarial training of LIF networks (Ding et al., "Robust
Stable Spiking Neural Networks", ICML 2024: Gaussian-noise training and FGSM adversarial training;
PGD as in Madry et al. 2018).

Perturbations act on the input values x in [0, 1] before encoding, and the perturbed values are
encoded with the clean batch's encoder seed (common random numbers), so the two spike trains differ
only where the values do. Gradients with respect to x pass the encoder straight through:
d encode(x)_t / dx = 1 at every step t (the expectation's gradient for rate coding, E[z_t] = x,
and exact for direct coding; a straight-through estimate for the deterministic spike codings).
"""

from __future__ import annotations

from typing import Callable

import torch

from snn_deploy.coding import encode, fold_channels
from snn_deploy.train.adversarial import fgsm_linf, pgd_linf

ADVERSARIES = ("none", "fgsm", "pgd")


class _StraightThroughEncode(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, encoding: str, steps: int, seed: int) -> torch.Tensor:
        ctx.encoding = encoding
        return encode(x.detach(), encoding=encoding, steps=steps, seed=seed)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return fold_channels(grad.sum(dim=0), encoding=ctx.encoding), None, None, None


def encode_straight_through(x: torch.Tensor, *, encoding: str, steps: int,
                            seed: int) -> torch.Tensor:
    """``coding.encode`` (exactly the same (T, B, k n) float32 values) with the gradient
    sum_t dL/dz_t with respect to the (B, n) values x (summed over the k stacked channels of fusion
    coding)."""
    return _StraightThroughEncode.apply(x, encoding, steps, seed)


def gaussian_values(x: torch.Tensor, *, sigma: float, generator: torch.Generator) -> torch.Tensor:
    """clip_[0,1](x + sigma * N(0, 1)), same shape as x."""
    return (x + sigma * torch.randn(x.shape, generator=generator)).clamp(0.0, 1.0)


def adversarial_values(logits_of_spikes: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                       y: torch.Tensor, *, kind: str, eps: float, steps: int, encoding: str,
                       time_steps: int, seed: int, generator: torch.Generator) -> torch.Tensor:
    """FGSM or PGD values (B, n) in [0, 1] within eps of x in L-inf.

    Args:
        logits_of_spikes: (T, B, n) encoded input -> (B, C) logits (the model and its decoder).
        kind: "fgsm" or "pgd"; steps: PGD steps; encoding, time_steps, seed: the encoder's.
        generator: PGD's random start.
    """
    def model(v: torch.Tensor) -> torch.Tensor:
        return logits_of_spikes(encode_straight_through(v, encoding=encoding, steps=time_steps,
                                                        seed=seed))

    if kind == "fgsm":
        return fgsm_linf(model, x, y, eps=eps)
    if kind == "pgd":
        return pgd_linf(model, x, y, eps=eps, steps=steps, generator=generator)
    raise ValueError(f"unknown adversary {kind!r}: {', '.join(ADVERSARIES[1:])}")
