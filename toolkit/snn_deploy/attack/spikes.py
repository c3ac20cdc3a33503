"""Attacks on the encoded spike train itself (threat model ``spikes``, attack stage).

x is the (T, B, n) float32 0/1 output of a binary encoder (rate coding); eps is a whole-number
budget per sample:

    spike-flip    deletion and insertion: at most eps bits of the sample's T x n train flipped
                  (0 -> 1 or 1 -> 0), each bit at most once, so the Hamming distance to the clean
                  train is <= eps;
    spike-jitter  timing: every spike moves by at most eps steps and each channel keeps its spike
                  count (each spike remembers its clean step t0 and only ever moves within
                  [t0 - eps, t0 + eps], so a matching of clean to adversarial spikes within eps
                  exists).

Both are gradient-guided greedy searches on the gradient source. With the loss L = -margin(z, y)
to maximise (z = ``ctx.source.spike_logits(s)``, the surrogate-gradient twin by default) and
g = dL/ds, the first-order gain of inserting a spike at (t, j) is +g[t, j], of deleting one
-g[t, j], and of moving one from t to t' in channel j g[t', j] - g[t, j]. Each round recomputes g at
the current train and proposes the k moves with the largest positive gains (spike-flip: k starts
at the whole budget; spike-jitter: at one move per channel, the channel's best). The proposal is
kept when the source margin does not rise (ties are kept: integer spike counts have plateaus),
otherwise that sample's k halves: applying every positive-gain move at once overshoots and, left
alone, cycles between two trains. A sample stops once the source misclassifies it (``base.misclassified``),
when k reaches 0, or when no move has a positive gain. Arguments: ``ctx.settings.iterations``
rounds at most. Outputs stay binary; the backend verifies them afterwards.
"""

from __future__ import annotations

from typing import Callable

import torch

from snn_deploy.attack.base import Attack, AttackContext, margin, misclassified
from snn_deploy.coding import BINARY_ENCODINGS
from snn_deploy.errors import UserError

FLIP_UNIT = "spikes flipped per sample"
JITTER_UNIT = "time steps"


def _check(ctx: AttackContext, s: torch.Tensor, eps: float, name: str, unit: str) -> int:
    """The integer budget; refuses graded (non-spike) input and fractional or negative eps."""
    if ctx.encoder.encoding not in BINARY_ENCODINGS:
        raise UserError(f"{name} changes spike trains, but encoding {ctx.encoder.encoding!r} feeds"
                        " graded values (direct coding), not spikes: use a spike encoding"
                        f" ({', '.join(sorted(BINARY_ENCODINGS))})")
    graded = (s != 0) & (s != 1)
    if graded.any():
        raise UserError(f"{name} needs binary 0/1 spike trains, got {int(graded.sum())} graded"
                        f" values of {s.numel()} (e.g. {float(s[graded][0]):g}); direct coding"
                        " feeds graded currents, which have no spikes to flip or move")
    if not (eps >= 0 and float(eps).is_integer()):
        raise UserError(f"{name}: eps counts {unit}, a whole number >= 0; got {eps}")
    return int(eps)


def _gradient(ctx: AttackContext, s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """g = d(-margin)/ds per sample, from the gradient source."""
    sg = s.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(-margin(ctx.source.spike_logits(sg), y).sum(), sg)
    return g.to(torch.float32)


def _forward_margin(ctx: AttackContext, s: torch.Tensor, y: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """The source's margin and whether it misclassifies (``base.misclassified``)."""
    with torch.no_grad():
        logits = ctx.source.spike_logits(s).to(torch.float32)
        return margin(logits, y), misclassified(logits, y)


# propose(state at the rows, g, k) -> (proposed state, moves made per row): at most k[b] moves
Propose = Callable[[list[torch.Tensor], torch.Tensor, torch.Tensor],
                   tuple[list[torch.Tensor], torch.Tensor]]


def _search(ctx: AttackContext, y: torch.Tensor, state: list[torch.Tensor], k: torch.Tensor,
            rounds: int, propose: Propose) -> torch.Tensor:
    """Greedy search with a per-sample step size ``k`` (moves per round).

    ``state[0]`` is the spike train (T, B, n); the other tensors (batch dimension 1) are the
    attack's bookkeeping. A proposal replaces a sample's state when the source margin does not rise
    (ties accepted: integer counts have plateaus); otherwise k halves, and a sample with k = 0,
    nothing to propose or misclassified stops. The accepted state never scores worse, so the last one
    is the best seen.
    """
    state = [t.detach().clone() for t in state]
    k = k.clone()
    m, wrong = _forward_margin(ctx, state[0], y)
    for _ in range(rounds):
        a = ((~wrong) & (k > 0)).nonzero()[:, 0]
        if not len(a):
            break
        g = _gradient(ctx, state[0][:, a], y[a])
        proposal, moves = propose([t[:, a] for t in state], g, k[a])
        m_new, w_new = _forward_margin(ctx, proposal[0], y[a])
        ok = (moves > 0) & (m_new <= m[a])
        for t, p in zip(state, proposal):
            t[:, a[ok]] = p[:, ok]
        m[a[ok]], wrong[a[ok]] = m_new[ok], w_new[ok]
        k[a[~ok]] = torch.where(moves[~ok] > 0, k[a[~ok]] // 2, 0)
    return state[0]


def _top_per_row(gain: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, m) gains -> (row, column) of each row's k[b] largest positive gains."""
    kmax = min(int(k.max()), gain.shape[1])
    vals, cols = gain.topk(kmax, dim=1)
    take = (torch.arange(kmax) < k[:, None]) & (vals > 0)
    rows = torch.arange(len(gain))[:, None].expand(-1, kmax)
    return rows[take], cols[take]


def spike_flip(ctx: AttackContext, s: torch.Tensor, y: torch.Tensor, idx: torch.Tensor,
               eps: float) -> torch.Tensor:
    budget = _check(ctx, s, eps, "spike-flip", FLIP_UNIT)
    steps, batch, n = s.shape
    if budget == 0 or batch == 0:
        return s.clone()

    def propose(state: list[torch.Tensor], g: torch.Tensor, k: torch.Tensor
                ) -> tuple[list[torch.Tensor], torch.Tensor]:
        cur, clean = state
        flipped = cur != clean  # each bit flips at most once: the flips are the difference
        k = torch.minimum(k, budget - flipped.sum(dim=(0, 2)))
        gain = torch.where(cur > 0, -g, g).masked_fill(flipped, float("-inf"))
        b, col = _top_per_row(gain.permute(1, 0, 2).reshape(len(k), steps * n), k)
        t, j = col // n, col % n
        new = cur.clone()
        new[t, b, j] = 1.0 - new[t, b, j]
        return [new, clean], torch.bincount(b, minlength=len(k))

    k0 = torch.full((batch,), budget)
    return _search(ctx, y, [s, s], k0, ctx.settings.iterations, propose)


def spike_jitter(ctx: AttackContext, s: torch.Tensor, y: torch.Tensor, idx: torch.Tensor,
                 eps: float) -> torch.Tensor:
    reach = _check(ctx, s, eps, "spike-jitter", JITTER_UNIT)
    steps, batch, n = s.shape
    reach = min(reach, steps - 1)
    if reach == 0 or batch == 0:
        return s.clone()

    def propose(state: list[torch.Tensor], g: torch.Tensor, k: torch.Tensor
                ) -> tuple[list[torch.Tensor], torch.Tensor]:
        cur, origin = state
        spike = cur > 0
        best_gain = torch.full(cur.shape, float("-inf"))
        best_to = torch.zeros(cur.shape, dtype=torch.long)
        for d in range(-reach, reach + 1):  # every target within reach of the spike's clean step
            to = origin + d
            inside = (to >= 0) & (to < steps)
            to = to.clamp(0, steps - 1)
            free = spike & inside & (cur.gather(0, to) == 0)
            gain = (g.gather(0, to) - g).masked_fill(~free, float("-inf"))
            better = gain > best_gain
            best_gain = torch.where(better, gain, best_gain)
            best_to = torch.where(better, to, best_to)
        gain, src = best_gain.max(dim=0)  # per (sample, channel): the one spike to move
        dst = best_to.gather(0, src[None])[0]
        b, j = _top_per_row(gain, k)
        t0, t1 = src[b, j], dst[b, j]
        new, new_origin = cur.clone(), origin.clone()
        new[t0, b, j], new[t1, b, j] = 0.0, 1.0
        new_origin[t1, b, j] = origin[t0, b, j]
        return [new, new_origin], torch.bincount(b, minlength=len(k))

    origin = torch.arange(steps).view(steps, 1, 1).expand(s.shape)  # each spike's clean step
    k0 = torch.full((batch,), n)
    return _search(ctx, y, [s, origin], k0, ctx.settings.iterations, propose)


SPIKE_FLIP = Attack(name="spike-flip", domain="spikes", uses="gradient", run=spike_flip,
                    eps_unit=FLIP_UNIT)
SPIKE_JITTER = Attack(name="spike-jitter", domain="spikes", uses="gradient", run=spike_jitter,
                      eps_unit=JITTER_UNIT)
