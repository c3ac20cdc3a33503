"""Surrogate-gradient training through time of ``LIFNetwork`` under a learning rule, a decoder's loss
and optional stability terms.

Per batch (x values in [0, 1], y labels), with E the rule's loss (``train.rules``) on the decoder's
logits (``coding``) and x' a perturbed input (``train.perturbed``):

    loss = E(x)                                                          no perturbation
    loss = kappa * E(x) + (1 - kappa) * E(x') + alpha * mean(Y^2)         with noise or an adversary

where x' = clip(x + sigma N(0, 1)) (``noise_sigma``) or an FGSM/PGD example of radius eps, and Y the
membrane-potential perturbation of the last LIF layer between the two passes (``train.stability``,
Ding et al., ICML 2024). Both passes use the rule's gradient cuts, so under a local rule the
regulariser, like E, trains only the last layer; the adversarial example itself is made with the
whole network's gradient (an attacker's view). The perturbed values are encoded with the clean
batch's encoder seed. Norse's SuperSpike surrogate stands in for the threshold's derivative.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import torch

from snn_deploy.coding import decoder_logits, decoder_predict, encode
from snn_deploy.data import Split
from snn_deploy.errors import UserError
from snn_deploy.train.init import wake_silent_layers
from snn_deploy.train.model import LIFNetwork, ModelConfig
from snn_deploy.train.perturbed import ADVERSARIES, adversarial_values, gaussian_values
from snn_deploy.train.rules import RULES, RuleLoss, fixed_feedback
from snn_deploy.train.stability import perturbation_loss

# Training losses and the output decoder each one trains for (the checkpoint's "decoder").
LOSSES: dict[str, str] = {"count": "spike_count", "first_spike": "first_spike",
                          "max_membrane": "max_membrane"}
FEEDBACK_SEED_OFFSET = 7_919  # decolle readouts / eprop feedback: drawn from seed + this offset
INITS = ("auto", "default")  # auto: wake silent hidden layers (train.init); default: PyTorch's
INIT_SAMPLES = 256  # training samples the auto initialisation looks at


@dataclasses.dataclass(frozen=True)
class TrainOptions:
    """How to train (the architecture and coding are in ``ModelConfig``).

    rule: a key of ``train.rules.RULES``; loss: a key of ``LOSSES``; decoder_beta: first-spike
    logits scale (1 / step); noise_sigma: Gaussian noise on input values; adversarial: "none",
    "fgsm" or "pgd" with radius eps (input units) and attack_steps (PGD); kappa: weight of the
    clean loss when there is a perturbed pass; perturbation_weight: alpha of mean(Y^2);
    init: a key of ``INITS``.
    """

    rule: str = "bptt"
    loss: str = "count"
    decoder_beta: float = 1.0
    noise_sigma: float = 0.0
    adversarial: str = "none"
    eps: float = 0.1
    attack_steps: int = 7
    kappa: float = 0.5
    perturbation_weight: float = 0.0
    init: str = "auto"

    @property
    def decoder(self) -> str:
        return LOSSES[self.loss]

    @property
    def perturbed(self) -> bool:
        return self.noise_sigma > 0 or self.adversarial != "none"

    def check(self) -> None:
        """Raise ``UserError`` naming the first bad option and its value."""
        if self.rule not in RULES:
            raise UserError(f"unknown rule {self.rule!r}: choose from {', '.join(RULES)}")
        if self.loss not in LOSSES:
            raise UserError(f"unknown loss {self.loss!r}: choose from {', '.join(LOSSES)}")
        if self.init not in INITS:
            raise UserError(f"unknown init {self.init!r}: choose from {', '.join(INITS)}")
        if self.adversarial not in ADVERSARIES:
            raise UserError(f"unknown adversarial training {self.adversarial!r}: choose from"
                            f" {', '.join(ADVERSARIES)}")
        for name, value in (("decoder beta", self.decoder_beta), ("noise sigma", self.noise_sigma),
                            ("eps", self.eps), ("kappa", self.kappa),
                            ("perturbation weight", self.perturbation_weight)):
            if not math.isfinite(value):
                raise UserError(f"{name} must be finite, got {value}")
        if self.decoder_beta <= 0:
            raise UserError(f"decoder beta must be > 0, got {self.decoder_beta}")
        if self.noise_sigma < 0 or self.perturbation_weight < 0:
            raise UserError(f"noise sigma and perturbation weight must be >= 0, got"
                            f" {self.noise_sigma} and {self.perturbation_weight}")
        if not 0 <= self.kappa <= 1:
            raise UserError(f"kappa must lie in [0, 1], got {self.kappa}")
        if self.adversarial != "none" and not 0 < self.eps <= 1:
            raise UserError(f"eps must lie in (0, 1] (input values are in [0, 1]), got {self.eps}")
        if self.adversarial == "pgd" and self.attack_steps < 1:
            raise UserError(f"attack steps must be >= 1, got {self.attack_steps}")
        if self.noise_sigma > 0 and self.adversarial != "none":
            raise UserError(f"choose Gaussian-noise training (noise sigma {self.noise_sigma}) or"
                            f" adversarial training ({self.adversarial}), not both")
        if self.perturbation_weight > 0 and not self.perturbed:
            raise UserError("the perturbation regulariser compares a clean and a perturbed pass:"
                            " give a noise sigma > 0 or an adversarial training kind")


@dataclasses.dataclass(frozen=True)
class EpochStats:
    epoch: int
    loss: float
    train_accuracy: float
    perturbation_ms: float | None = None  # mean(Y^2) over the epoch's batches, with a perturbation


@dataclasses.dataclass(frozen=True)
class TrainResult:
    model: LIFNetwork
    history: tuple[EpochStats, ...]
    test_accuracy: float
    options: TrainOptions = TrainOptions()
    init_gains: tuple[float, ...] = ()  # per hidden layer, the auto initialisation's weight gain


def _batch_seed(seed: int, epoch: int, batch: int) -> int:
    # Distinct, reproducible encoder seeds for every batch of every epoch.
    return (seed * 1_000_003 + epoch * 10_007 + batch) % (2**63 - 1)


def model_accuracy(model: LIFNetwork, x: torch.Tensor, y: torch.Tensor, *, seed: int,
                   batch_size: int = 512) -> float:
    """Accuracy of the Norse model on (N, n) inputs, encoded with the model's own coding and read
    with its own decoder."""
    cfg = model.config
    correct = 0
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            xb = encode(x[start:start + batch_size], encoding=cfg.encoding, steps=cfg.steps,
                        seed=seed + start)
            trace = model.trace(xb)
            pred = decoder_predict(trace.output, decoder=cfg.decoder, membrane=trace.membrane)
            correct += int((pred == y[start:start + batch_size]).sum())
    return correct / max(len(x), 1)


def _logits(model: LIFNetwork, s: torch.Tensor, *, decoder: str, beta: float) -> torch.Tensor:
    trace = model.trace(s)
    return decoder_logits(trace.output, decoder=decoder, beta=beta, membrane=trace.membrane)


@dataclasses.dataclass(frozen=True)
class BatchLoss:
    loss: torch.Tensor
    clean: RuleLoss
    perturbation_ms: float | None


def batch_loss(model: LIFNetwork, x: torch.Tensor, y: torch.Tensor, *, options: TrainOptions,
               seed: int, feedback: tuple[torch.Tensor, ...]) -> BatchLoss:
    """The loss of one batch of (B, n) values (see the module docstring)."""
    cfg = model.config
    rule = RULES[options.rule]

    def run(values: torch.Tensor) -> RuleLoss:
        spikes = encode(values, encoding=cfg.encoding, steps=cfg.steps, seed=seed)
        return rule(model, spikes, y, decoder=cfg.decoder, beta=cfg.decoder_beta,
                    feedback=feedback)

    clean = run(x)
    if not options.perturbed:
        return BatchLoss(loss=clean.total, clean=clean, perturbation_ms=None)
    gen = torch.Generator().manual_seed(seed)
    if options.noise_sigma > 0:
        x_pert = gaussian_values(x, sigma=options.noise_sigma, generator=gen)
    else:
        x_pert = adversarial_values(
            lambda s: _logits(model, s, decoder=cfg.decoder, beta=cfg.decoder_beta),
            x, y, kind=options.adversarial, eps=options.eps, steps=options.attack_steps,
            encoding=cfg.encoding, time_steps=cfg.steps, seed=seed, generator=gen)
    pert = run(x_pert)
    ms = perturbation_loss(model, clean.trace, pert.trace)
    loss = options.kappa * clean.total + (1 - options.kappa) * pert.total
    if options.perturbation_weight > 0:
        loss = loss + options.perturbation_weight * ms
    return BatchLoss(loss=loss, clean=clean, perturbation_ms=float(ms))


def train_snn(config: ModelConfig, split: Split, *, epochs: int, seed: int, lr: float = 2e-3,
              batch_size: int = 64, options: TrainOptions = TrainOptions(),
              on_epoch: Callable[[EpochStats], None] | None = None) -> TrainResult:
    """Train with Adam on the train split; deterministic for a given seed.

    ``config.decoder`` must be the one ``options.loss`` trains (``LOSSES``)."""
    options.check()
    if config.decoder != options.decoder:
        raise UserError(f"loss {options.loss!r} trains the {options.decoder} decoder, the model"
                        f" config names {config.decoder!r}")
    torch.manual_seed(seed)
    model = LIFNetwork(config)
    feedback = fixed_feedback(model, seed=seed + FEEDBACK_SEED_OFFSET)
    x_train, y_train = split.part("train")
    gains: tuple[float, ...] = ()
    if options.init == "auto":
        gains = wake_silent_layers(model, encode(x_train[:INIT_SAMPLES], encoding=config.encoding,
                                                 steps=config.steps, seed=seed))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    history = []
    for epoch in range(epochs):
        order = torch.randperm(len(x_train), generator=gen)
        total_loss, correct, ms_sum, batches = 0.0, 0, 0.0, 0
        model.train()
        for b, start in enumerate(range(0, len(order), batch_size)):
            idx = order[start:start + batch_size]
            step = batch_loss(model, x_train[idx], y_train[idx], options=options,
                              seed=_batch_seed(seed, epoch, b), feedback=feedback)
            opt.zero_grad()
            step.loss.backward()
            opt.step()
            total_loss += float(step.clean.task) * len(idx)
            pred = decoder_predict(step.clean.trace.output, decoder=config.decoder,
                                   membrane=step.clean.trace.membrane)
            correct += int((pred == y_train[idx]).sum())
            ms_sum += step.perturbation_ms or 0.0
            batches += 1
        stats = EpochStats(epoch=epoch + 1, loss=total_loss / len(order),
                           train_accuracy=correct / len(order),
                           perturbation_ms=ms_sum / batches if options.perturbed else None)
        history.append(stats)
        if on_epoch is not None:
            on_epoch(stats)
    model.eval()
    x_test, y_test = split.part("test")
    return TrainResult(model=model, history=tuple(history), options=options, init_gains=gains,
                       test_accuracy=model_accuracy(model, x_test, y_test, seed=seed))
