"""Stage 1: inner maximisations for adversarial training (input space [0, 1], L-inf) of ReLU ANNs
and of LIF networks (through a straight-through encoder, ``train.perturbed``).

FGSM (Goodfellow et al., "Explaining and Harnessing Adversarial Examples", ICLR 2015):

    x' = clip_[0,1]( x + eps * sign(grad_x CE(f(x), y)) )

PGD (Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks", ICLR 2018):
start at a uniform point of the eps-ball, then ``steps`` times

    x' <- clip_[0,1]( clip_[x-eps, x+eps]( x' + alpha * sign(grad_x' CE(f(x'), y)) ) )

TRADES (Zhang et al., "Theoretically Principled Trade-off between Robustness and Accuracy",
ICML 2019): the same projected ascent on KL(p(x) || p(x')) from x + 0.001 N(0, 1), and the loss

    CE(f(x), y) + beta * KL(p(x) || p(x')) / B            p = softmax(f(.))

Both are here, not in ``attack/``, because training comes before the attack stage (a stage never
imports a later one) and these only ever attack a float torch model.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

Model = Callable[[torch.Tensor], torch.Tensor]

# Step size alpha = STEP_FACTOR * eps / steps, so the ascent can cross the ball 2.5 times
# (Madry et al. 2018, section 5, use 2.5 eps / steps as well).
STEP_FACTOR = 2.5
# TRADES starts from x + TRADES_INIT_STD * N(0, 1) (Zhang et al. 2019, reference code train_trades).
TRADES_INIT_STD = 0.001


def _project(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    return torch.minimum(torch.maximum(x_adv, x - eps), x + eps).clamp(0.0, 1.0)


def _ascend(loss_of: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
            x_adv: torch.Tensor, *, eps: float, steps: int) -> torch.Tensor:
    alpha = STEP_FACTOR * eps / steps
    x_adv = _project(x_adv, x, eps)
    for _ in range(steps):
        x_adv = x_adv.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(loss_of(x_adv), x_adv)
        x_adv = _project(x_adv.detach() + alpha * grad.sign(), x, eps)
    return x_adv.detach()


def fgsm_linf(model: Model, x: torch.Tensor, y: torch.Tensor, *, eps: float) -> torch.Tensor:
    """Adversarial inputs (same shape as x, values in [0, 1]) by one signed-gradient step of eps.

    Args:
        model: maps inputs to (B, C) logits.
        x: clean inputs in [0, 1]; y: (B,) int64 labels; eps: L-inf radius in input units.
    """
    x_adv = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(x_adv), y, reduction="sum"), x_adv)
    return _project(x.detach() + eps * grad.sign(), x, eps).detach()


def pgd_linf(model: Model, x: torch.Tensor, y: torch.Tensor, *, eps: float, steps: int,
             generator: torch.Generator) -> torch.Tensor:
    """Adversarial inputs (same shape as x, values in [0, 1]) by PGD on the cross-entropy.

    Args:
        model: maps inputs to (B, C) logits.
        x: clean inputs in [0, 1]; y: (B,) int64 labels.
        eps: L-inf radius in input units; steps: ascent steps (>= 1).
        generator: seeds the random start.
    """
    start = x + (torch.rand(x.shape, generator=generator) * 2 - 1) * eps
    return _ascend(lambda xa: F.cross_entropy(model(xa), y, reduction="sum"), x, start,
                   eps=eps, steps=steps)


def trades_adversary(model: Model, x: torch.Tensor, *, eps: float, steps: int,
                     generator: torch.Generator) -> torch.Tensor:
    """TRADES' inner maximisation: inputs that move the prediction furthest from p(x) in KL."""
    with torch.no_grad():
        p_clean = F.softmax(model(x), dim=1)
    start = x + TRADES_INIT_STD * torch.randn(x.shape, generator=generator)
    return _ascend(lambda xa: F.kl_div(F.log_softmax(model(xa), dim=1), p_clean, reduction="sum"),
                   x, start, eps=eps, steps=steps)


def trades_loss(logits_clean: torch.Tensor, logits_adv: torch.Tensor, y: torch.Tensor, *,
                beta: float) -> torch.Tensor:
    """CE(f(x), y) + beta * KL(p(x) || p(x')) averaged over the batch."""
    kl = F.kl_div(F.log_softmax(logits_adv, dim=1), F.softmax(logits_clean, dim=1),
                  reduction="batchmean")
    return F.cross_entropy(logits_clean, y) + beta * kl
