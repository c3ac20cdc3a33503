"""APGD-CE and APGD-DLR (Croce & Hein, ICML 2020): step-size-free PGD with momentum.

The step size starts at 2 eps and halves at checkpoints w_j = ceil(p_j N) (p_0 = 0, p_1 = 0.22,
p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)) when, since the last checkpoint, fewer than
rho = 0.75 of the steps raised the loss, or neither the step size nor the best loss changed;
after halving, the iterate restarts from the best point. Momentum alpha = 0.75.
Returns per sample the first point the source misclassifies, else the highest-loss point.
"""

from __future__ import annotations

import math

import torch

from snn_deploy.attack.base import Attack, AttackContext, misclassified, normalized, project
from snn_deploy.attack.losses import LOSSES
from snn_deploy.attack.pgd import random_start

RHO, ALPHA = 0.75, 0.75


def checkpoints(iterations: int) -> list[int]:
    p = [0.0, 0.22]
    while p[-1] < 1:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    return sorted({math.ceil(round(q * iterations, 6)) for q in p[1:] if q <= 1})


def _col(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (like.dim() - 1)))


def apgd(ctx: AttackContext, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, eps: float,
         *, loss_name: str) -> torch.Tensor:
    s = ctx.settings
    if eps == 0:
        return x.clone()
    loss = LOSSES[loss_name]
    gen = torch.Generator().manual_seed(s.seed)
    found = x.clone()
    fooled = torch.zeros(len(x), dtype=torch.bool)
    marks = set(checkpoints(s.iterations))
    for _ in range(s.restarts):
        x_k = random_start(x, eps, s.norm, gen)
        step = torch.full((len(x),), 2.0 * eps)
        grad, logits = ctx.gradient(x_k, y, idx, loss)
        with torch.no_grad():
            f_k = loss(logits, y)
        f_max, x_max, grad_max, z_max = f_k.clone(), x_k.clone(), grad.clone(), logits.clone()
        x_prev = x_k.clone()
        successes = torch.zeros(len(x))
        last_mark, step_at_mark, f_max_at_mark = 0, step.clone(), f_max.clone()
        for k in range(s.iterations):
            new = misclassified(logits, y) & ~fooled
            found[new], fooled = x_k[new], fooled | new
            z = project(x_k + _col(step, x) * normalized(grad, s.norm), x, eps, s.norm)
            if k == 0:
                x_next = z
            else:
                x_next = project(x_k + ALPHA * (z - x_k) + (1 - ALPHA) * (x_k - x_prev),
                                 x, eps, s.norm)
            x_prev = x_k
            x_k = x_next
            grad, logits = ctx.gradient(x_k, y, idx, loss)
            with torch.no_grad():
                f_new = loss(logits, y)
            successes += (f_new > f_k).float()
            f_k = f_new
            improved = f_new > f_max
            f_max[improved], x_max[improved] = f_new[improved], x_k[improved]
            grad_max[improved], z_max[improved] = grad[improved], logits[improved]
            if k + 1 in marks:
                span = k + 1 - last_mark
                few = successes < RHO * span
                stuck = (step == step_at_mark) & (f_max == f_max_at_mark)
                halve = few | stuck
                step = torch.where(halve, step / 2, step)
                x_k = torch.where(_col(halve, x), x_max, x_k)
                grad = torch.where(_col(halve, x), grad_max, grad)
                logits = torch.where(halve[:, None], z_max, logits)
                successes.zero_()
                last_mark, step_at_mark, f_max_at_mark = k + 1, step.clone(), f_max.clone()
        new = misclassified(logits, y) & ~fooled
        found[new], fooled = x_k[new], fooled | new
        found[~fooled] = x_max[~fooled]
    return found


APGD_CE = Attack(name="apgd-ce", domain="input", uses="gradient",
                 run=lambda ctx, x, y, idx, eps: apgd(ctx, x, y, idx, eps, loss_name="ce"))
APGD_DLR = Attack(name="apgd-dlr", domain="input", uses="gradient",
                  run=lambda ctx, x, y, idx, eps: apgd(ctx, x, y, idx, eps, loss_name="dlr"))
