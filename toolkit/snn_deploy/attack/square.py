"""Square attack (Andriushchenko, Croce, Flammarion, Hein, ECCV 2020, arXiv 1912.00049): score-based
black-box random search over square-shaped updates.

Norm: L-inf and L2. Uses only the target backend's scores, through ``ctx.query`` (output spike
counts; every query is counted). Arguments: ``ctx.settings.queries`` queries per sample (the clean
query included), ``ctx.settings.seed``. Shapes: x (B, n) in [0, 1] -> x_adv (B, n) inside the
eps-ball and [0, 1].

The input is an h x h image when n is a perfect square (digits: 8 x 8), else a 1 x n signal whose
"squares" are windows of consecutive coordinates (L-inf only). Per sample:

1. query the clean input; a sample the backend already misclassifies is returned unchanged;
2. start from vertical stripes, x + eps * sign(column) (L-inf), or from a grid of pseudo-Gaussian
   bumps of random sign scaled to norm eps (L2); the start is taken whatever its score;
3. iteration i of N proposes one random window of side s_i = round(sqrt(p_i n)) (L-inf: the window
   set to x +- eps, one sign; L2: a bump added in window 1, the mass of window 2 moved into it, the
   total norm kept at eps), where p_i follows the paper's piecewise-constant schedule;
4. a proposal replaces the current point when its margin z_y - max_{k != y} z_k is <= the current
   one. The reference code requires <, but spike-count logits are integers and tie often:
   accepting ties lets the search drift across plateaus. A sample stops once it is
   misclassified (``base.misclassified``: ties go to the lowest class).

Every sample draws from its own random stream (``draws.SampleStreams``), so its result does not
depend on the other samples in the batch.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from snn_deploy.attack.base import Attack, AttackContext, margin, misclassified, project
from snn_deploy.attack.draws import SampleStreams
from snn_deploy.errors import UserError

# p_init: the fraction of the input a window covers at first. AutoAttack's default for Square on
# MNIST/CIFAR-10-sized images (fra31/auto-attack, autoattack/square.py, p_init=.8); the paper's
# ImageNet runs use 0.05 (L-inf) and 0.1 (L2) (max-andr/square-attack, attack.py --p).
P_INIT = 0.8
# p_i = p_init / 2**k, k = the number of these iterations passed, for a run of 10,000 iterations,
# rescaled to the budget (max-andr/square-attack, attack.py, p_selection).
SCHEDULE_LENGTH = 10_000
P_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
# A proposal "changes nothing" below this difference (the reference implementation's 10**-7).
SAME = 1e-7
BLOCK = 128  # iterations of random numbers drawn per sample at a time


def p_schedule(i: int, n_iters: int, p_init: float = P_INIT) -> float:
    """The window fraction at iteration i of n_iters."""
    it = int(i / n_iters * SCHEDULE_LENGTH)
    return p_init / 2 ** sum(it > b for b in P_HALVINGS)


@dataclasses.dataclass(frozen=True)
class Grid:
    """The input as an h x w image, row-major (h = 1 for a 1-D signal)."""

    h: int
    w: int

    @classmethod
    def of(cls, n: int) -> Grid:
        r = math.isqrt(n)
        return cls(r, r) if r * r == n else cls(1, n)

    def linf_window(self, p: float) -> tuple[int, int]:
        """(rows, columns) of the L-inf window: side round(sqrt(p n)) in [1, h - 1] for an image,
        length round(p n) in [1, n - 1] for a signal (the reference code's bounds)."""
        if self.h == 1:
            return 1, min(max(round(p * self.w), 1), max(self.w - 1, 1))
        side = min(max(round(math.sqrt(p * self.h * self.w)), 1), max(self.h - 1, 1))
        return side, side

    def l2_side(self, p: float) -> int:
        """The L2 window side: round(sqrt(p n)), at least 3 and odd (reference code), at most h."""
        s = max(round(math.sqrt(p * self.h * self.w)), 3)
        return min(s + 1 - s % 2, self.h)

    def window(self, rows: int, cols: int, u_row: torch.Tensor, u_col: torch.Tensor
               ) -> torch.Tensor:
        """(B, rows * cols) flat indices of windows placed by uniforms in [0, 1) (one per sample)."""
        top = (u_row * (self.h - rows + 1)).long().clamp(max=self.h - rows)
        left = (u_col * (self.w - cols + 1)).long().clamp(max=self.w - cols)
        r = top[:, None] + torch.arange(rows)
        c = left[:, None] + torch.arange(cols)
        return (r[:, :, None] * self.w + c[:, None, :]).reshape(len(top), rows * cols)


def _sign(u: torch.Tensor) -> torch.Tensor:
    return torch.where(u < 0.5, -1.0, 1.0)


def _rectangle_bump(a: int, b: int) -> torch.Tensor:
    """(a, b) nested rectangles weighted 1 / (k + 1)^2, unit L2 norm (pseudo_gaussian_pert_rectangles)."""
    bump = torch.zeros(a, b, dtype=torch.float64)
    r, c = a // 2, b // 2
    for k in range(max(a // 2 + 1, b // 2 + 1)):
        bump[max(r, 0):min(r + 2 * k + 1, a), max(c, 0):min(c + 2 * k + 1, b)] += 1.0 / (k + 1) ** 2
        r, c = r - 1, c - 1
    norm = bump.norm()
    return bump / norm if norm > 0 else bump


def eta(s: int) -> torch.Tensor:
    """The L2 update's (s, s) shape: a positive bump over a negative one, unit norm
    (meta_pseudo_gaussian_pert with two sub-squares)."""
    d = torch.zeros(s, s, dtype=torch.float64)
    d[:s // 2] = _rectangle_bump(s // 2, s)
    d[s // 2:] = -_rectangle_bump(s - s // 2, s)
    return (d / d.norm()).to(torch.float32)


def _bumps(x: torch.Tensor, u: torch.Tensor, grid: Grid, eps: float) -> torch.Tensor:
    """L2 start: bumps of side max(h // 5, 1) on a grid, random sign and orientation each, scaled to
    norm eps (u: (B, 2 * bumps) uniforms)."""
    s = max(grid.h // 5, 1)
    start = (grid.h - 5 * s) // 2
    places = [start + k * s for k in range(grid.h // s) if start + k * s + s <= grid.h]
    delta = torch.zeros_like(x).view(len(x), grid.h, grid.w)
    e = eta(s)
    k = 0
    for top in places:
        for left in places:
            shape = torch.where(u[:, k, None, None] > 0.5, e.T, e)
            delta[:, top:top + s, left:left + s] += shape * _sign(u[:, k + 1])[:, None, None]
            k += 2
    delta = delta.reshape(len(x), -1)
    return x + eps * delta / delta.norm(dim=1, keepdim=True).clamp(min=1e-12)


def _n_bumps(grid: Grid) -> int:
    s = max(grid.h // 5, 1)
    start = (grid.h - 5 * s) // 2
    return sum(start + k * s + s <= grid.h for k in range(grid.h // s)) ** 2


def _linf_proposal(x: torch.Tensor, best: torch.Tensor, u: torch.Tensor, p: float, grid: Grid,
                   eps: float) -> torch.Tensor:
    """One window set to x +- eps; the sign that changes something (u: (B, 3) uniforms)."""
    win = grid.window(*grid.linf_window(p), u[:, 0], u[:, 1])
    sign = _sign(u[:, 2:3])
    xw = x.gather(1, win)
    new = (xw + sign * eps).clamp(0.0, 1.0)
    same = ((new - best.gather(1, win)).abs() < SAME).all(dim=1, keepdim=True)
    new = torch.where(same, (xw - sign * eps).clamp(0.0, 1.0), new)
    return best.scatter(1, win, new)


def _l2_proposal(x: torch.Tensor, best: torch.Tensor, u: torch.Tensor, p: float, grid: Grid,
                 eps: float) -> torch.Tensor:
    """Window 1 gets a random bump plus its old direction; window 2's mass moves into it; the
    perturbation is rescaled to norm eps (u: (B, 6) uniforms)."""
    s = grid.l2_side(p)
    delta = best - x
    w1 = grid.window(s, s, u[:, 0], u[:, 1])
    w2 = grid.window(s, s, u[:, 2], u[:, 3])
    d1 = delta.gather(1, w1)
    norm_image = delta.norm(dim=1, keepdim=True)
    both = torch.zeros_like(delta, dtype=torch.bool).scatter(1, w1, True).scatter(1, w2, True)
    norm_windows = (delta * both).norm(dim=1, keepdim=True)
    e = eta(s)
    shape = torch.where(u[:, 5:6] > 0.5, e.T.reshape(1, -1), e.reshape(1, -1))
    new = shape * _sign(u[:, 4:5]) + d1 / (1e-12 + d1.norm(dim=1, keepdim=True))
    room = (eps ** 2 - norm_image ** 2).clamp(min=0.0) + norm_windows ** 2
    new = new / (1e-12 + new.norm(dim=1, keepdim=True)) * room.sqrt()
    delta = delta.scatter(1, w2, 0.0).scatter(1, w1, new)
    return x + eps * delta / delta.norm(dim=1, keepdim=True).clamp(min=1e-12)


def _score(ctx: AttackContext, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """One counted query: the margin and whether the point is misclassified."""
    logits = ctx.query(x, idx).to(torch.float32)
    return margin(logits, y), misclassified(logits, y)


def square(ctx: AttackContext, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor,
           eps: float) -> torch.Tensor:
    settings = ctx.settings
    norm = settings.norm
    x = x.detach().to(torch.float32)
    if eps == 0 or len(x) == 0:
        return x.clone()
    grid = Grid.of(x.shape[1])
    if norm == "l2" and grid.h == 1:
        raise UserError(f"square l2 needs a square image input (n = h * h), got n = {x.shape[1]}")
    best = x.clone()
    m, wrong = _score(ctx, x, y, idx)
    n_iters = settings.queries - 1  # the start and the proposals, as the paper counts them
    if n_iters < 1 or bool(wrong.all()):
        return best
    streams = SampleStreams(idx, seed=settings.seed, stream=f"square-{norm}")
    if norm == "linf":
        stripes = _sign(streams.uniforms(grid.w)) * eps  # one sign per column
        start = x + stripes.repeat(1, grid.h)
        per_step, proposal = 3, _linf_proposal
    else:
        start = _bumps(x, streams.uniforms(2 * _n_bumps(grid)), grid, eps)
        per_step, proposal = 6, _l2_proposal
    a = (~wrong).nonzero()[:, 0]
    best[a] = project(start[a], x[a], eps, norm)
    m[a], wrong[a] = _score(ctx, best[a], y[a], idx[a])
    u = torch.zeros(len(x), BLOCK, per_step)
    for i in range(n_iters - 1):
        a = (~wrong).nonzero()[:, 0]
        if not len(a):
            break
        if i % BLOCK == 0:
            u[a] = streams.uniforms(BLOCK, per_step, rows=a)
        cand = proposal(x[a], best[a], u[a, i % BLOCK], p_schedule(i, n_iters), grid, eps)
        cand = project(cand, x[a], eps, norm)
        mc, wc = _score(ctx, cand, y[a], idx[a])
        ok = mc <= m[a]
        best[a[ok]], m[a[ok]], wrong[a[ok]] = cand[ok], mc[ok], wc[ok]
    return best


SQUARE = Attack(name="square", domain="input", uses="queries", run=square)
