"""FGSM (Goodfellow et al. 2015): one step of size eps along the loss gradient's steepest ascent."""

from __future__ import annotations

import torch

from snn_deploy.attack.base import Attack, AttackContext, normalized, project
from snn_deploy.attack.losses import cross_entropy


def fgsm(ctx: AttackContext, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor,
         eps: float) -> torch.Tensor:
    if eps == 0:
        return x.clone()
    grad, _ = ctx.gradient(x, y, idx, cross_entropy)
    return project(x + eps * normalized(grad, ctx.settings.norm), x, eps, ctx.settings.norm)


FGSM = Attack(name="fgsm", domain="input", uses="gradient", run=fgsm)
