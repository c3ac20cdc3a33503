"""What every attack works with: frozen input encoding, a gradient source, a query oracle.

Threat models
    ``input``   the attacker changes the values in [0, 1] that the encoder turns into spikes
                (L-inf or L2 ball of radius eps, clipped to [0, 1]);
    ``spikes``  the attacker changes the encoded spike train itself (T, B, n) 0/1: eps is a budget
                in spikes (deletion/insertion) or in steps (timing jitter).

Stochastic encoders are *frozen*: sample i's encoder noise is drawn once, from the same generator
calls as ``evaluate`` (chunks of ``BATCH`` samples seeded by (seed, chunk)), so clean accuracy here
equals ``evaluate``'s, any subset of samples can be re-encoded identically, and every adversarial
input is verified on the backend with exactly the spikes the attack saw. Gradients through the
encoder are straight-through (a Bernoulli spike's expectation is its probability); EOT averages
gradients over ``eot`` encoder draws (draw 0 is the frozen one), and attacks score their iterates
by the logits averaged over the same draws.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Protocol

import torch

from snn_deploy.coding import (
    BINARY_ENCODINGS,
    STOCHASTIC_ENCODINGS,
    encode,
    encode_with_uniforms,
    straight_through_values,
)
from snn_deploy.errors import UserError

BATCH = 512  # the encoder chunk of evaluate.accuracy.encoded_batches (kept equal by a test)
NORMS = ("linf", "l2")


class FrozenEncoder:
    """The evaluation's encoder with per-sample noise fixed, for (B, n) inputs and sample indices."""

    def __init__(self, encoding: str, *, steps: int, seed: int, n_samples: int, n_inputs: int):
        self.encoding, self.steps, self.seed = encoding, steps, seed
        self.stochastic = encoding in STOCHASTIC_ENCODINGS
        self.binary = encoding in BINARY_ENCODINGS
        self.noise: torch.Tensor | None = None
        if self.stochastic:  # the uniforms rate_encode draws, chunk by chunk, as evaluate does
            chunks = []
            for j, start in enumerate(range(0, n_samples, BATCH)):
                gen = torch.Generator().manual_seed(seed * 1_000_003 + j)
                size = min(BATCH, n_samples - start)
                chunks.append(torch.rand((steps, size, n_inputs), generator=gen))
            self.noise = torch.cat(chunks, dim=1)

    def _uniforms(self, idx: torch.Tensor, draw: int) -> torch.Tensor:
        assert self.noise is not None
        if draw == 0:
            return self.noise[:, idx]
        gen = torch.Generator().manual_seed(self.seed * 7919 + draw)
        return torch.rand((self.steps, len(idx), self.noise.shape[2]), generator=gen)

    def spikes(self, x: torch.Tensor, idx: torch.Tensor, draw: int = 0) -> torch.Tensor:
        """(B, n) values -> (T, B, n) float32 encoder output (no gradient)."""
        x = x.detach().to(torch.float32).clamp(0.0, 1.0)
        if not self.stochastic:  # deterministic encoders need no frozen noise
            return encode(x, encoding=self.encoding, steps=self.steps, seed=self.seed)
        return encode_with_uniforms(x, self._uniforms(idx, draw), encoding=self.encoding,
                                    steps=self.steps)

    def differentiable(self, x: torch.Tensor, idx: torch.Tensor, draw: int = 0) -> torch.Tensor:
        """Encoder output with straight-through gradients to x: d spikes / d x = 1 (for fusion,
        per stacked channel, so a value's gradient is the sum over its channels)."""
        exact = self.spikes(x, idx, draw)
        xs = straight_through_values(x, encoding=self.encoding, steps=self.steps)
        return xs + (exact - xs).detach()


class Source(Protocol):
    """A differentiable stand-in for the deployed model (the gradient source)."""

    name: str

    def spike_logits(self, s: torch.Tensor) -> torch.Tensor:
        """(T, B, n) encoder output -> (B, C) logits of the deployed decoder (spike counts,
        -beta * first-spike times or beta * max membrane), differentiable with respect to s."""


@dataclasses.dataclass(frozen=True)
class AttackSettings:
    norm: str = "linf"
    iterations: int = 20
    restarts: int = 1
    step_size: float | None = None  # None: each attack's default relative to eps
    eot: int = 1  # encoder draws averaged per gradient (stochastic encoders)
    queries: int = 1000  # budget of query-based attacks
    seed: int = 0

    def __post_init__(self) -> None:
        if self.norm not in NORMS:
            raise UserError(f"unknown norm {self.norm!r}: choose from {', '.join(NORMS)}")
        for name in ("iterations", "restarts", "eot", "queries"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name} must be >= 1, got {getattr(self, name)}")
        if self.step_size is not None and not self.step_size > 0:
            raise UserError(f"--step-size must be > 0, got {self.step_size}")


# (x or spikes, idx) -> (B, C) logits of the deployed decoder, computed on the backend's arithmetic
Oracle = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclasses.dataclass
class AttackContext:
    """Everything an attack may use. ``oracle`` queries the target backend (no gradients) and
    counts its queries; ``spike_oracle`` does the same for spike-train inputs."""

    source: Source
    encoder: FrozenEncoder
    settings: AttackSettings
    oracle: Oracle
    spike_oracle: Oracle
    queries_used: int = 0

    def logits(self, x: torch.Tensor, idx: torch.Tensor, draw: int = 0) -> torch.Tensor:
        """Source logits of (B, n) inputs through the frozen encoder (differentiable in x)."""
        return self.source.spike_logits(self.encoder.differentiable(x, idx, draw))

    def draws(self) -> int:
        """Encoder draws an expectation is taken over: ``eot`` for a stochastic encoder, else 1."""
        return self.settings.eot if self.encoder.stochastic else 1

    def expected_logits(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Source logits averaged over the EOT draws (no gradient): what an attack scores its
        iterates by, so that with ``--eot K`` it keeps the point that is adversarial in
        expectation, not the one that best exploits the frozen draw."""
        with torch.no_grad():
            return sum(self.logits(x, idx, d) for d in range(self.draws())) / self.draws()

    def gradient(self, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor,
                 loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """EOT gradient of the per-sample ``loss(logits, y)`` summed, and the logits averaged
        over the same draws (``expected_logits`` of x; draw 0's alone when ``eot`` is 1)."""
        draws = self.draws()
        grad = torch.zeros_like(x)
        total = None
        for d in range(draws):
            xg = x.detach().clone().requires_grad_(True)
            z = self.logits(xg, idx, d)
            (g,) = torch.autograd.grad(loss(z, y).sum(), xg)
            grad += g / draws
            total = z.detach() if total is None else total + z.detach()
        assert total is not None
        return grad, total / draws

    def query(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        self.queries_used += len(idx)
        return self.oracle(x, idx)

    def query_spikes(self, s: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        self.queries_used += len(idx)
        return self.spike_oracle(s, idx)


def misclassified(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B,) bool: the decoder no longer predicts y. Its argmax breaks ties towards the lowest class
    index (``coding.decoder_predict``), so a tie with a class above y still counts as
    correct: ``margin <= 0`` alone would stop an attack at a point that is no adversarial example
    (spike counts tie often)."""
    return logits.argmax(dim=1) != y


def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Correct-class logit minus the best other one: what attacks lower. Whether a point is
    misclassified is ``misclassified`` (0 is either, by the tie rule)."""
    logits = logits.to(torch.float32) if not logits.is_floating_point() else logits
    correct = logits.gather(1, y[:, None])[:, 0]
    other = logits.clone()
    other.scatter_(1, y[:, None], float("-inf"))
    return correct - other.max(dim=1).values


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """Project onto the eps-ball around x (per sample) intersected with [0, 1]."""
    delta = x_adv - x
    if norm == "linf":
        delta = delta.clamp(-eps, eps)
    else:
        n = delta.flatten(1).norm(dim=1).clamp(min=1e-12)
        delta = delta * (eps / n).clamp(max=1.0).view(-1, *([1] * (delta.dim() - 1)))
    return (x + delta).clamp(0.0, 1.0)


def normalized(g: torch.Tensor, norm: str) -> torch.Tensor:
    """The steepest-ascent direction of unit norm: sign(g) for L-inf, g / ||g||_2 for L2."""
    if norm == "linf":
        return g.sign()
    n = g.flatten(1).norm(dim=1).clamp(min=1e-12)
    return g / n.view(-1, *([1] * (g.dim() - 1)))


@dataclasses.dataclass(frozen=True)
class Attack:
    """A registered attack: ``run(ctx, x, y, idx, eps) -> adversarial x`` (same shape as x).

    ``domain`` is ``input`` ((B, n) values in [0, 1]) or ``spikes`` ((T, B, n) spike trains);
    ``uses`` says what it needs: ``gradient`` (the source) or ``queries`` (the oracle) or nothing.
    """

    name: str
    domain: str
    uses: str
    run: Callable[[AttackContext, torch.Tensor, torch.Tensor, torch.Tensor, float], torch.Tensor]
    eps_unit: str = "input range [0, 1]"
