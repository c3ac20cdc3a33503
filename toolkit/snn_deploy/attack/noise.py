"""Random noise at the attacks' eps: the baseline every attack must beat (attack stage).

Norm: L-inf and L2. Uses neither gradients nor, with one restart, queries. Arguments:
``ctx.settings.restarts`` draws per sample, ``ctx.settings.seed``. Shapes: x (B, n) in [0, 1] ->
x + delta, projected onto the eps-ball and [0, 1] (``project``).

The noise, per sample:

    uniform   L-inf  delta_j ~ U[-eps, eps], independent: uniform in the eps-cube;
              L2     delta = eps u / ||u||_2, u_j ~ U[-1, 1]: a cube-shaped direction;
    gaussian  L-inf  delta_j ~ N(0, eps^2), clipped to [-eps, eps] (sigma = eps: about 32% of the
                     coordinates sit on the faces of the cube);
              L2     delta = eps g / ||g||_2, g ~ N(0, I): a uniformly random direction.

L2 noise always spends the whole budget (norm eps before the [0, 1] clip): a draw inside the ball
would be weaker noise of the same kind, and the baseline should be the strongest noise of its kind.
With restarts R > 1 every sample takes up to R draws, each checked on the target backend through
``ctx.query`` (one counted query per draw), and keeps the draw with the lowest margin; a sample
stops at the first draw the backend misclassifies. Every sample draws from its own random stream
(``draws.SampleStreams``), so its noise does not depend on the other samples in the batch.
"""

from __future__ import annotations

from typing import Callable

import torch

from snn_deploy.attack.base import Attack, AttackContext, margin, misclassified, project
from snn_deploy.attack.draws import SampleStreams

Draw = Callable[[SampleStreams, int, str, torch.Tensor], torch.Tensor]


def _l2_sphere(d: torch.Tensor) -> torch.Tensor:
    return d / d.norm(dim=1, keepdim=True).clamp(min=1e-12)


def uniform_delta(streams: SampleStreams, n: int, norm: str, rows: torch.Tensor) -> torch.Tensor:
    """(B, n) uniform noise of unit radius (multiply by eps)."""
    u = streams.uniforms(n, rows=rows) * 2 - 1
    return u if norm == "linf" else _l2_sphere(u)


def gaussian_delta(streams: SampleStreams, n: int, norm: str, rows: torch.Tensor) -> torch.Tensor:
    """(B, n) Gaussian noise of unit scale (multiply by eps; L-inf is clipped by ``project``)."""
    g = streams.normals(n, rows=rows)
    return g if norm == "linf" else _l2_sphere(g)


def _noise(name: str, draw: Draw) -> Callable[..., torch.Tensor]:
    def run(ctx: AttackContext, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor,
            eps: float) -> torch.Tensor:
        norm, restarts = ctx.settings.norm, ctx.settings.restarts
        x = x.detach().to(torch.float32)
        if eps == 0 or len(x) == 0:
            return x.clone()
        streams = SampleStreams(idx, seed=ctx.settings.seed, stream=f"{name}-{norm}")
        every = torch.arange(len(x))
        best = project(x + eps * draw(streams, x.shape[1], norm, every), x, eps, norm)
        if restarts == 1:
            return best
        logits = ctx.query(best, idx).to(torch.float32)
        m, wrong = margin(logits, y), misclassified(logits, y)
        for _ in range(restarts - 1):
            a = (~wrong).nonzero()[:, 0]
            if not len(a):
                break
            cand = project(x[a] + eps * draw(streams, x.shape[1], norm, a), x[a], eps, norm)
            logits = ctx.query(cand, idx[a]).to(torch.float32)
            mc, wc = margin(logits, y[a]), misclassified(logits, y[a])
            ok = mc < m[a]
            best[a[ok]], m[a[ok]], wrong[a[ok]] = cand[ok], mc[ok], wc[ok]
        return best

    return run


UNIFORM = Attack(name="uniform", domain="input", uses="nothing", run=_noise("uniform", uniform_delta))
GAUSSIAN = Attack(name="gaussian", domain="input", uses="nothing",
                  run=_noise("gaussian", gaussian_delta))
