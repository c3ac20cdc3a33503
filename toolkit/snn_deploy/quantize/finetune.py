"""Stage 3 (quantize): gradient fine-tuning of a Deployment's thresholds and weights through the
differentiable twin, the ``grad`` and ``robust`` modes of ``quantize.retune``.

Per batch (Adam, surrogate gradients through the twin, whose forward equals the integer simulator):

    grad     L = CE(z(x), y) + gamma * mean_k ((r_k - r*_k) / r*_k)**2
    robust   L = CE(z(x), y) + gamma * ... + beta * KL(softmax z(x) || softmax z(x_adv))   (TRADES)

with z the output spike counts over the T steps (the spike-count decoder's logits, as in
``train.bptt``), r_k layer k's mean rate on the batch and r*_k the float network's (CE on counts
alone lowers every threshold: more spikes make larger logits; measured +60 % spikes on digits for no
accuracy), x encoded with the Deployment's coding and frozen encoder noise (x and x_adv see
the same Bernoulli draws), x_adv made per batch by RFGSM or PGD through the twin. The KL term is
TRADES' reference code, ``KLDivLoss(log_softmax(z_adv), softmax(z_clean))`` (Zhang et al. 2019).
After every step each threshold is clamped to [max(lo, 0.03 * vth_0), hi] (Özdenizci & Legenstein,
TMLR 2024) and each weight mantissa to its Dense grid's range. After every epoch the twin's integers
are written into a Deployment and scored by the *exact* simulator; the best epoch is kept (epoch 0,
the input Deployment, included), so fine-tuning never lowers the selection-set score.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Protocol, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from snn_deploy.coding import Coding, encode
from snn_deploy.errors import UserError
from snn_deploy.quantize.dense_grid import lava_dense_grid
from snn_deploy.quantize.deployment import Deployment, QuantLayer

# Lower bound on a fine-tuned threshold, relative to its value before fine-tuning: Özdenizci &
# Legenstein (TMLR 2024, arXiv 2311.09266) clamp fine-tuned thresholds at >= 0.03 (REFERENCES.md 4).
VTH_FLOOR = 0.03
# L-inf budget (input units in [0, 1]) of robust mode's training examples when none is given: the
# eps at which the demo reports PGD robust accuracy.
DEFAULT_EPS = 0.1
# TRADES' trade-off between the clean loss and the KL term (Zhang et al. 2019: beta = 6 on CIFAR-10).
DEFAULT_BETA = 6.0
# Defaults measured on the digits 64-128-10 model (T = 32, the 1437 training samples, 2 CPU cores,
# torch 2.3): grad 8 epochs 2.7 s (3.4 s with weights), robust 10 epochs 16 s with weights; robust
# accuracy under PGD at eps 0.1 still rose from 5 epochs (0.59) to 10 (0.68).
DEFAULT_EPOCHS = {"grad": 8, "robust": 10}
DEFAULT_LR = 0.02  # Adam step on thresholds, relative to each layer's starting vth
# Adam step on weight mantissas, relative to the grid's range (256 on Loihi 2): about 1.3 mantissa
# units a step, whatever the grid's LSB (measured: 0.5 LSB a step on a 3-bit grid diverges).
DEFAULT_WEIGHT_LR = 0.005
# Weight of the rate-drift penalty: at 0, digits' grad lowered both thresholds by a third (+60 %
# spikes) for no test accuracy; at 1 they rose by 0 to 40 % (3 seeds), with weights by -15 to +10 %.
DEFAULT_RATE_WEIGHT = 1.0
ADVERSARY_ATTACKS = ("rfgsm", "pgd")
RATE_FLOOR = 1e-3  # spikes/neuron/step: a silent layer's rate drift is measured against this

Counts = Sequence[np.ndarray]  # per layer, (B, n) spike counts of each neuron over the T steps
Fixed = Callable[[Deployment, torch.Tensor], Counts]


class TwinOutput(Protocol):
    @property
    def layers(self) -> tuple[torch.Tensor, ...]:
        """Per layer (T, B, n) spikes, carrying surrogate gradients; the last is the output."""


class Twin(Protocol):
    """What fine-tuning uses of ``run.twin.EmulatorTwin``: a forward bit-identical to the integer
    simulator, per-layer float parameters ``weights`` (mantissas) and ``vth``, and ``quantized()``,
    the integers the forward pass uses now."""

    weights: torch.nn.ParameterList
    vth: torch.nn.ParameterList

    def __call__(self, x: torch.Tensor) -> TwinOutput: ...

    def quantized(self) -> list[dict[str, Any]]: ...

    def requires_grad_(self, requires_grad: bool = True) -> Any: ...


@dataclasses.dataclass(frozen=True)
class Adversary:
    """How ``robust`` makes its training examples in the input space [0, 1] (L-inf ball of eps).

    ``rfgsm``: x' = x + alpha * sign(N(0, 1)), then one FGSM step of eps - alpha (Tramer et al.
    2018, who take alpha = eps / 2); ``pgd``: ``steps`` steps of 2.5 * eps / steps from a uniform
    random start (Madry et al. 2018). Both ascend CE(z, y) through the twin.
    """

    eps: float = DEFAULT_EPS
    attack: str = "rfgsm"
    alpha: float | None = None  # None: eps / 2
    steps: int = 1  # PGD only
    beta: float = DEFAULT_BETA

    def __post_init__(self) -> None:
        if self.attack not in ADVERSARY_ATTACKS:
            raise UserError(f"unknown training attack {self.attack!r}: choose from"
                            f" {', '.join(ADVERSARY_ATTACKS)}")
        if not (math.isfinite(self.eps) and 0 < self.eps <= 1):
            raise UserError(f"eps must be in (0, 1] (input units), got {self.eps}")
        if self.alpha is not None and not 0 <= self.alpha <= self.eps:
            raise UserError(f"RFGSM's alpha must be in [0, eps = {self.eps}], got {self.alpha}")
        if self.steps < 1:
            raise UserError(f"PGD steps must be >= 1, got {self.steps}")
        if not (math.isfinite(self.beta) and self.beta >= 0):
            raise UserError(f"the TRADES weight beta must be >= 0, got {self.beta}")


@dataclasses.dataclass(frozen=True)
class EpochRecord:
    """One epoch (epoch 0: before any step). Accuracies are the exact simulator's on the selection
    set; ``robust_accuracy`` counts a sample when both its clean input and the adversarial one made
    through the twin are classified correctly (None in ``grad`` mode)."""

    epoch: int
    loss: float | None
    accuracy: float
    robust_accuracy: float | None
    vth: tuple[int, ...]

    @property
    def score(self) -> float:
        """What the best epoch maximises: accuracy, plus robust accuracy in ``robust`` mode."""
        return self.accuracy + (self.robust_accuracy or 0.0)


@dataclasses.dataclass(frozen=True)
class Settings:
    epochs: int
    lr: float
    weight_lr: float
    rate_weight: float
    batch_size: int
    seed: int
    adversary: Adversary | None  # None: ``grad``


def settings(*, mode: str, epochs: int | None, lr: float | None, weight_lr: float,
             rate_weight: float, batch_size: int, seed: int, adversary: Adversary | None
             ) -> Settings:
    """Fill in the defaults for ``mode`` and refuse impossible values (UserError)."""
    epochs = DEFAULT_EPOCHS[mode] if epochs is None else epochs
    lr = DEFAULT_LR if lr is None else lr
    if not isinstance(epochs, int) or epochs < 1:
        raise UserError(f"epochs must be an integer >= 1, got {epochs!r}")
    if not (math.isfinite(lr) and lr > 0):
        raise UserError(f"the threshold learning rate must be > 0, got {lr}")
    if not (math.isfinite(weight_lr) and weight_lr >= 0):
        raise UserError(f"the weight learning rate must be >= 0 (0: thresholds only), got {weight_lr}")
    if not (math.isfinite(rate_weight) and rate_weight >= 0):
        raise UserError(f"the rate penalty weight must be >= 0, got {rate_weight}")
    if batch_size < 1:
        raise UserError(f"batch size must be >= 1, got {batch_size}")
    return Settings(epochs=epochs, lr=float(lr), weight_lr=float(weight_lr),
                    rate_weight=float(rate_weight), batch_size=batch_size, seed=seed,
                    adversary=(adversary or Adversary()) if mode == "robust" else None)


@dataclasses.dataclass(frozen=True)
class Finetuned:
    deployment: Deployment
    history: tuple[EpochRecord, ...]
    best_epoch: int


def batch_seed(seed: int, epoch: int, batch: int) -> int:
    """Distinct, reproducible encoder seeds for every batch of every epoch (as ``train.bptt``)."""
    return (seed * 1_000_003 + epoch * 10_007 + batch + 1) % (2**63 - 1)


def encoded(x: torch.Tensor, *, coding: Coding, seed: int) -> torch.Tensor:
    """(B, n) values -> (T, B, n) encoder output with straight-through gradients (d s / d x = 1)
    and the noise of ``seed``, so inputs of the same shape and seed share their Bernoulli draws."""
    steps = coding.steps
    exact = encode(x.detach(), encoding=coding.encoding, steps=steps, seed=seed)
    xs = x.unsqueeze(0).expand(steps, *x.shape)
    return xs + (exact - xs).detach()


def logits(twin: Twin, x: torch.Tensor, *, coding: dict, seed: int) -> torch.Tensor:
    """(B, C) output spike counts of (B, n) values through the twin."""
    return twin(encoded(x, coding=coding, seed=seed)).layers[-1].sum(dim=0)


def adversarial(twin: Twin, x: torch.Tensor, y: torch.Tensor, adv: Adversary, *, coding: dict,
                seed: int, gen: torch.Generator) -> torch.Tensor:
    """RFGSM or PGD examples (detached) in the eps-ball around x, within [0, 1]."""

    def ascent(x_now: torch.Tensor) -> torch.Tensor:
        xg = x_now.detach().clone().requires_grad_(True)
        loss = F.cross_entropy(logits(twin, xg, coding=coding, seed=seed), y, reduction="sum")
        (g,) = torch.autograd.grad(loss, xg)
        return g.sign()

    def project(x_new: torch.Tensor) -> torch.Tensor:
        return torch.minimum(torch.maximum(x_new, x - adv.eps), x + adv.eps).clamp(0.0, 1.0)

    if adv.attack == "rfgsm":
        alpha = adv.eps / 2 if adv.alpha is None else adv.alpha
        x1 = project(x + alpha * torch.randn(x.shape, generator=gen).sign())
        return project(x1 + (adv.eps - alpha) * ascent(x1)).detach()
    x_adv = project(x + (torch.rand(x.shape, generator=gen) * 2 - 1) * adv.eps)
    for _ in range(adv.steps):
        x_adv = project(x_adv + 2.5 * adv.eps / adv.steps * ascent(x_adv))
    return x_adv.detach()


def loss_of(twin: Twin, x: torch.Tensor, y: torch.Tensor, adv: Adversary | None, *, coding: dict,
            seed: int, gen: torch.Generator, rates: Sequence[float], rate_weight: float
            ) -> torch.Tensor:
    """CE(z(x), y) + rate_weight * mean_k ((r_k - rates_k) / rates_k)**2, plus
    beta * KL(p_clean || p_adv) with an adversary (TRADES)."""
    layers = twin(encoded(x, coding=coding, seed=seed)).layers
    z = layers[-1].sum(dim=0)
    loss = F.cross_entropy(z, y)
    if rate_weight > 0:
        drift = torch.stack([(s.mean() - r) / max(r, RATE_FLOOR) for s, r in zip(layers, rates)])
        loss = loss + rate_weight * (drift ** 2).mean()
    if adv is None or adv.beta == 0:
        return loss
    x_adv = adversarial(twin, x, y, adv, coding=coding, seed=seed, gen=gen)
    z_adv = logits(twin, x_adv, coding=coding, seed=seed)
    kl = F.kl_div(F.log_softmax(z_adv, dim=1), F.softmax(z, dim=1), reduction="batchmean")
    return loss + adv.beta * kl


def with_vth(layer: QuantLayer, vth: int, dep: Deployment) -> QuantLayer:
    """``layer`` with a new threshold; ``stats.threshold_saturated`` then says whether it sits at a
    limit of the profile's range."""
    if vth == layer.vth:
        return layer
    at_limit = vth <= 0 or vth >= dep.profile.vth_max
    return dataclasses.replace(layer, vth=int(vth),
                               stats=dataclasses.replace(layer.stats, threshold_saturated=at_limit))


def weight_limits(layer: QuantLayer, dep: Deployment) -> tuple[int, int]:
    """The lowest and highest mantissa Lava's Dense keeps for this layer's sign mode and bits."""
    lo, hi = lava_dense_grid(np.array([-(1 << 20), 1 << 20]), sign_mode=layer.sign_mode,
                             num_weight_bits=layer.num_weight_bits,
                             weight_bits=dep.profile.weight_bits)
    return int(lo), int(hi)


def weight_step(layer: QuantLayer, dep: Deployment) -> int:
    """The Dense grid's LSB: Lava drops weight_bits - num_weight_bits low bits, one more in mixed
    sign mode (``lava.utils.weightutils.truncate_weights``)."""
    return 1 << (dep.profile.weight_bits - layer.num_weight_bits + int(layer.sign_mode == "mixed"))


def cell_centre(layer: QuantLayer, dep: Deployment) -> float:
    """Offset from a grid value to the middle of the float values the twin maps onto it.

    The twin rounds, then truncates to the grid (Lava's ``>> drop << drop``, on |w| in inhibitory
    mode), so the values that become g are [g - 1/2, g + step - 1/2) (mirrored for inhibitory
    layers): a float weight started *at* g would fall to the next grid point on the smallest step
    one way, one started at the centre moves as easily either way. The small margin keeps it off
    round's ties.
    """
    offset = (weight_step(layer, dep) - 1) / 2 - 1e-3
    return -offset if layer.sign_mode == "inhibitory" else offset


def with_weights(layer: QuantLayer, weights: np.ndarray, dep: Deployment) -> QuantLayer:
    """``layer`` with new mantissas (on Lava's grid); ``stats.weights_saturated`` moves by the
    change in the number of feed-forward mantissas at the grid's limits."""
    weights = np.asarray(weights, dtype=np.int32)
    if np.array_equal(weights, layer.weights):
        return layer
    lo, hi = weight_limits(layer, dep)

    def at_limits(w: np.ndarray) -> int:
        return int(np.sum((w <= lo) | (w >= hi)))

    saturated = max(layer.stats.weights_saturated + at_limits(weights) - at_limits(layer.weights), 0)
    return dataclasses.replace(layer, weights=weights, stats=dataclasses.replace(
        layer.stats, weights_saturated=saturated))


def snapshot(dep: Deployment, twin: Twin, *, weights: bool) -> Deployment:
    """The Deployment whose integers the twin's forward pass uses now."""
    layers = []
    for layer, q in zip(dep.layers, twin.quantized()):
        layer = with_vth(layer, int(q["vth"]), dep)
        layers.append(with_weights(layer, q["weights"], dep) if weights else layer)
    return dataclasses.replace(dep, layers=tuple(layers))


def predictions(counts: Counts) -> np.ndarray:
    """The deployed decoder's class: most output spikes, ties to the lowest index."""
    return np.asarray(counts[-1]).argmax(axis=1)


def _evaluate(dep: Deployment, twin: Twin, select: tuple[torch.Tensor, torch.Tensor], s: Settings,
              fixed: Fixed, epoch: int, loss: float | None) -> EpochRecord:
    x, y = select
    coding = dep.coding
    clean = predictions(fixed(dep, encoded(x, coding=coding, seed=s.seed).detach())) == y.numpy()
    robust = None
    if s.adversary is not None:  # the same random starts every epoch: scores stay comparable
        gen = torch.Generator().manual_seed(s.seed + 1)
        x_adv = torch.cat([adversarial(twin, x[i:i + s.batch_size], y[i:i + s.batch_size],
                                       s.adversary, coding=coding, seed=s.seed, gen=gen)
                           for i in range(0, len(x), s.batch_size)])
        adv_ok = predictions(fixed(dep, encoded(x_adv, coding=coding, seed=s.seed).detach())) \
            == y.numpy()
        robust = float((clean & adv_ok).mean())
    return EpochRecord(epoch=epoch, loss=loss, accuracy=float(clean.mean()),
                       robust_accuracy=robust, vth=tuple(layer.vth for layer in dep.layers))


@dataclasses.dataclass(frozen=True)
class _Clamps:
    """Per layer, the range each threshold and each weight parameter is clamped to after a step."""

    vth: list[tuple[float, float]]
    weights: list[tuple[float, float]]  # empty when weights are not trained

    def apply(self, twin: Twin) -> None:
        with torch.no_grad():
            for p, (lo, hi) in zip(twin.vth, self.vth):
                p.clamp_(lo, hi)
            for w, (lo, hi) in zip(twin.weights, self.weights):
                w.clamp_(lo, hi)


def _optimizer(twin: Twin, dep: Deployment, s: Settings, bounds: tuple[int, int]
               ) -> tuple[torch.optim.Optimizer, _Clamps]:
    """Adam over the thresholds (step ``lr`` x the starting vth) and, with ``weight_lr > 0``, the
    weights (step ``weight_lr`` x the grid's range), each weight moved to the centre of its cell."""
    twin.requires_grad_(False)
    groups: list[dict[str, Any]] = []
    clamps = _Clamps(vth=[], weights=[])
    with torch.no_grad():
        for p in twin.vth:
            v0 = float(p)
            clamps.vth.append((max(float(bounds[0]), math.ceil(VTH_FLOOR * v0)), float(bounds[1])))
            groups.append({"params": [p.requires_grad_(True)], "lr": s.lr * max(v0, 1.0)})
        if s.weight_lr > 0:
            conv = next((layer.neuron for layer in dep.layers if layer.kind != "dense"), None)
            if conv is not None:  # a Conv's weights are not on the Dense grid these helpers use
                raise UserError(f"weight fine-tuning runs on dense layers only so far, and"
                                f" {conv} is not one: fine-tune the thresholds (weight_lr 0)")
            for w, layer in zip(twin.weights, dep.layers):
                lo, hi = weight_limits(layer, dep)
                centre = cell_centre(layer, dep)
                w.add_(centre)  # the same integers, now in the middle of their cells
                clamps.weights.append((lo + centre, hi + centre))
                groups.append({"params": [w.requires_grad_(True)],
                               "lr": s.weight_lr * max(hi, -lo)})
    clamps.apply(twin)
    return torch.optim.Adam(groups), clamps


def finetune(dep: Deployment, *, x: torch.Tensor, y: torch.Tensor,
             select: tuple[torch.Tensor, torch.Tensor], fixed: Fixed,
             make_twin: Callable[[Deployment], Twin], settings: Settings,
             bounds: tuple[int, int], rates: Sequence[float]) -> Finetuned:
    """Fine-tune ``dep`` on (x, y) (values in [0, 1], labels) and keep the epoch with the best
    exact-simulator score on ``select``; ``bounds`` is the allowed integer range of thresholds,
    ``rates`` the per-layer mean rates (spikes/neuron/step) the rate penalty pulls towards."""
    s = settings
    twin = make_twin(dep)
    opt, clamps = _optimizer(twin, dep, s, bounds)
    current = snapshot(dep, twin, weights=s.weight_lr > 0)
    history = [_evaluate(current, twin, select, s, fixed, 0, None)]
    best, best_epoch = current, 0
    gen = torch.Generator().manual_seed(s.seed)
    for epoch in range(1, s.epochs + 1):
        order = torch.randperm(len(x), generator=gen)
        total = 0.0
        for b, start in enumerate(range(0, len(x), s.batch_size)):
            idx = order[start:start + s.batch_size]
            loss = loss_of(twin, x[idx], y[idx], s.adversary, coding=dep.coding,
                           seed=batch_seed(s.seed, epoch, b), gen=gen, rates=rates,
                           rate_weight=s.rate_weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
            clamps.apply(twin)
            total += float(loss) * len(idx)
        current = snapshot(dep, twin, weights=s.weight_lr > 0)
        history.append(_evaluate(current, twin, select, s, fixed, epoch, total / len(x)))
        if history[-1].score > history[best_epoch].score:
            best, best_epoch = current, epoch
    return Finetuned(deployment=best, history=tuple(history), best_epoch=best_epoch)
