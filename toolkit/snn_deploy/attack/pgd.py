"""PGD (Madry et al. 2018): iterated projected steepest ascent from a random start, with restarts.

Keeps, per sample, the iterate the *source* scores worst (lowest margin; with ``--eot K``, of the
logits averaged over the K encoder draws), so a restart or a later step can only improve the
attack; the backend verifies the result afterwards.
"""

from __future__ import annotations

import torch

from snn_deploy.attack.base import Attack, AttackContext, margin, normalized, project
from snn_deploy.attack.losses import cross_entropy


def random_start(x: torch.Tensor, eps: float, norm: str, gen: torch.Generator) -> torch.Tensor:
    if norm == "linf":
        delta = (torch.rand(x.shape, generator=gen) * 2 - 1) * eps
    else:
        d = torch.randn(x.shape, generator=gen)
        d = d / d.flatten(1).norm(dim=1).clamp(min=1e-12).view(-1, *([1] * (x.dim() - 1)))
        r = torch.rand((x.shape[0],), generator=gen) ** (1.0 / x[0].numel())
        delta = d * (eps * r).view(-1, *([1] * (x.dim() - 1)))
    return project(x + delta.to(x.dtype), x, eps, norm)


def pgd(ctx: AttackContext, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor,
        eps: float) -> torch.Tensor:
    s = ctx.settings
    if eps == 0:
        return x.clone()
    step = s.step_size if s.step_size is not None else 2.5 * eps / s.iterations
    gen = torch.Generator().manual_seed(s.seed)
    best = x.clone()
    best_margin = torch.full((len(x),), float("inf"))
    for _ in range(s.restarts):
        x_adv = random_start(x, eps, s.norm, gen)
        for _ in range(s.iterations):
            grad, logits = ctx.gradient(x_adv, y, idx, cross_entropy)
            m = margin(logits, y)
            better = m < best_margin
            best[better], best_margin[better] = x_adv[better], m[better]
            x_adv = project(x_adv + step * normalized(grad, s.norm), x, eps, s.norm)
        m = margin(ctx.expected_logits(x_adv, idx), y)
        better = m < best_margin
        best[better], best_margin[better] = x_adv[better], m[better]
    return best


PGD = Attack(name="pgd", domain="input", uses="gradient", run=pgd)
