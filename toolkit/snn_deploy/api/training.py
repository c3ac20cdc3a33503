"""``train``: the reference Norse LIF network, or with ``train_ann`` a ReLU ANN for ``convert``.

Workflow layer (``snn_deploy.api``): checks the options, loads the data set, trains
(``train.bptt``, ``train.ann``) and says what the checkpoint records about the run.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

from snn_deploy.coding import ENCODERS, encoded_width
from snn_deploy.convert import ann_api
from snn_deploy.data import load_dataset
from snn_deploy.errors import UserError
from snn_deploy.train.ann import AnnEpoch, AnnTrainResult
from snn_deploy.train.bptt import EpochStats, TrainOptions, TrainResult, train_snn
from snn_deploy.train.model import ModelConfig, save_checkpoint


@dataclasses.dataclass(frozen=True)
class TrainRun(TrainResult):
    """A trained LIF network (``TrainResult``) with the seed and epochs it was trained with."""

    seed: int = 0
    epochs: int = 0

    def to_json(self) -> dict:
        """What the checkpoint records about the run (its ``extra``)."""
        last = self.history[-1]
        return {"seed": self.seed, "epochs": self.epochs, "test_accuracy": self.test_accuracy,
                "train_accuracy": last.train_accuracy, "loss": last.loss,
                "options": dataclasses.asdict(self.options), "init_gains": list(self.init_gains)}

    def save(self, out: str | Path) -> None:
        """Write the checkpoint: the model with ``to_json()`` as its metadata."""
        save_checkpoint(self.model, Path(out), extra=self.to_json())

    def summary(self) -> str:
        """What ``train`` prints: the network, its accuracies and the initialisation's gains."""
        cfg, last, opt = self.model.config, self.history[-1], self.options
        kind = f"{'recurrent ' if cfg.recurrent else ''}LIF network ({opt.rule}, {opt.loss} loss"
        lines = [f"trained {'-'.join(str(n) for n in (cfg.input_size, *cfg.hidden, cfg.output_size))}"
                 f" {kind}, {cfg.encoding} coding, T={cfg.steps}) on {cfg.dataset}: train accuracy"
                 f" {last.train_accuracy:.4f}, test accuracy {self.test_accuracy:.4f}"]
        woken = [f"{g:.3g}" for g in self.init_gains if g != 1.0]
        if woken:
            gains = ", ".join(f"{g:.3g}" for g in self.init_gains)
            lines.append(f"init: silent hidden layers scaled up by {', '.join(woken)}"
                         f" (gains per hidden layer: {gains})")
        return "\n".join(lines)


def train(*, dataset: str, hidden: tuple[int, ...], encoding: str, steps: int, epochs: int,
          seed: int, lr: float, batch_size: int, recurrent: bool = False, rule: str = "bptt",
          loss: str = "count", decoder_beta: float = 1.0, noise_sigma: float = 0.0,
          adversarial: str = "none", eps: float = 0.1, attack_steps: int | None = None,
          kappa: float = 0.5, perturbation_weight: float = 0.0, init: str = "auto",
          on_epoch: Callable[[EpochStats], None] | None = None) -> TrainRun:
    """Train the reference Norse LIF network on a data set.

    ``recurrent``: hidden layers with recurrent weights (exported as NIR cycles). ``rule``: bptt,
    decolle or eprop (``train.rules``). ``loss``: count, first_spike or max_membrane, which also
    sets the decoder recorded in the checkpoint ("spike_count"; "first_spike": logits
    -decoder_beta * t_first; "max_membrane": logits decoder_beta * max_t v_t / v_th; coding.md).
    Stability (``train.bptt``): ``noise_sigma`` (Gaussian-noise training) or ``adversarial`` fgsm|pgd
    with ``eps`` and ``attack_steps`` (default ``TrainOptions``'); ``kappa`` weighs the clean loss
    against the perturbed one; ``perturbation_weight`` is alpha of the membrane-perturbation
    regulariser. ``init``: auto (wake silent hidden layers, ``train.init``) or default (PyTorch's
    initialisation as it is). ``TrainRun.save`` writes the checkpoint.
    """
    if encoding not in ENCODERS:
        raise UserError(f"unknown encoding {encoding!r}: choose from {', '.join(ENCODERS)}")
    if not hidden or any(h < 1 for h in hidden):
        raise UserError(f"--hidden needs positive layer sizes, got {hidden}")
    for name, value in (("--steps", steps), ("--epochs", epochs), ("--batch-size", batch_size)):
        if value < 1:
            raise UserError(f"{name} must be >= 1, got {value}")
    if not lr > 0:
        raise UserError(f"--lr must be > 0, got {lr}")
    options = TrainOptions(rule=rule, loss=loss, decoder_beta=decoder_beta,
                           noise_sigma=noise_sigma, adversarial=adversarial, eps=eps,
                           attack_steps=TrainOptions.attack_steps if attack_steps is None
                           else attack_steps, kappa=kappa,
                           perturbation_weight=perturbation_weight, init=init)
    options.check()
    split = load_dataset(dataset)
    config = ModelConfig(input_size=encoded_width(encoding, split.n_inputs), hidden=hidden,
                         output_size=split.n_classes,
                         encoding=encoding, steps=steps, dataset=dataset, recurrent=recurrent,
                         decoder=options.decoder, decoder_beta=decoder_beta)
    result = train_snn(config, split, epochs=epochs, seed=seed, lr=lr, batch_size=batch_size,
                       options=options, on_epoch=on_epoch)
    return TrainRun(**{f.name: getattr(result, f.name) for f in dataclasses.fields(TrainResult)},
                    seed=seed, epochs=epochs)


@dataclasses.dataclass(frozen=True)
class AnnTrainRun(AnnTrainResult):
    """A trained ReLU ANN (``AnnTrainResult``) with the seed it was trained with."""

    seed: int | None = None
    conv: bool = False
    dataset: str = "digits"

    def to_json(self) -> dict:
        """What the checkpoint records about the run (``convert.ann_api.save_ann``'s ``info``)."""
        info: dict = {"test_accuracy": self.test_accuracy, "epochs": len(self.history),
                      "adversarial": self.adversarial, "eps": self.eps,
                      "attack_steps": self.attack_steps}
        return info if self.seed is None else {**info, "seed": self.seed}

    def save(self, out: str | Path) -> None:
        """Write the weights-only ANN checkpoint."""
        ann_api.save_ann(self, out, seed=self.seed)

    def summary(self) -> str:
        how = "" if self.adversarial == "none" else \
            f", {self.adversarial} adversarial training at eps {self.eps:g}"
        return (f"trained ReLU ANN ({'conv' if self.conv else 'MLP'}{how}) on {self.dataset}:"
                f" test accuracy {self.test_accuracy:.4f}")


def train_ann(*, dataset: str = "digits", hidden: tuple[int, ...] | None = None,
              conv: bool = False, epochs: int = 30, lr: float = 1e-3, batch_size: int = 64,
              seed: int = 0, adversarial: str = "none", eps: float = 0.1,
              attack_steps: int | None = None, beta: float = 6.0,
              on_epoch: Callable[[AnnEpoch], None] | None = None) -> AnnTrainRun:
    """Train a ReLU ANN for ``convert`` (``convert.ann_api.train_ann``: an MLP, or with ``conv``
    a small conv block first); ``attack_steps`` defaults to ann_api's; ``AnnTrainRun.save``
    writes the checkpoint."""
    steps_kw: dict[str, Any] = {} if attack_steps is None else {"attack_steps": attack_steps}
    result = ann_api.train_ann(dataset=dataset, hidden=hidden, conv=conv, epochs=epochs, lr=lr,
                               batch_size=batch_size, seed=seed, adversarial=adversarial, eps=eps,
                               beta=beta, on_epoch=on_epoch, **steps_kw)
    return AnnTrainRun(**{f.name: getattr(result, f.name)
                          for f in dataclasses.fields(AnnTrainResult)}, seed=seed, conv=conv,
                       dataset=dataset)
