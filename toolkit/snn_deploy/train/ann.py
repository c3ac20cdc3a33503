"""Stage 1: a ReLU ANN (the source of ANN-to-SNN conversion), its training and its checkpoint.

The network is a ``torch.nn.Sequential`` described by a list of layer specs, one string each:

    "linear:N"   torch.nn.Linear(n_in, N)             (with bias)
    "conv:C:K"   torch.nn.Conv2d(c_in, C, K, padding=K // 2)   (with bias; "same" size for odd K)
    "avgpool:K"  torch.nn.AvgPool2d(K)                (stride K, no padding)
    "flatten"    torch.nn.Flatten()
    "relu"       torch.nn.ReLU()

Inputs are the data set's values in [0, 1], reshaped to ``input_shape`` ((n,) for an MLP, (1, H, W)
for a conv net); the output is (B, n_classes) logits. Training minimises the cross-entropy with
Adam, optionally on adversarial inputs (``train/adversarial.py``: PGD or TRADES, L-inf in [0, 1]).

The checkpoint is the LIF checkpoint's dict (``train/model.py``: format tag, version) with
``"kind": "ann"``, loadable with ``torch.load(path, weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from snn_deploy.data import Split
from snn_deploy.errors import InputFileError, UserError
from snn_deploy.train.adversarial import pgd_linf, trades_adversary, trades_loss
from snn_deploy.train.model import checkpoint_kind, load_weights, read_checkpoint, write_checkpoint

ANN_KIND = "ann"
# Identities in evaluation: they neither end a layer of neurons nor become a NIR node.
IDENTITY_LAYERS = (torch.nn.Dropout, torch.nn.Dropout2d, torch.nn.Identity)
ADVERSARIAL = ("none", "pgd", "trades")  # training modes, and the CLI's choices


@dataclasses.dataclass(frozen=True)
class AnnConfig:
    """Architecture (layer specs, see the module docstring) and the data set it was made for."""

    input_shape: tuple[int, ...]
    layers: tuple[str, ...]
    n_classes: int
    dataset: str = "digits"

    @property
    def n_inputs(self) -> int:
        return math.prod(self.input_shape)

    def to_dict(self) -> dict:
        return {"input_shape": list(self.input_shape), "layers": list(self.layers),
                "n_classes": self.n_classes, "dataset": self.dataset}

    @classmethod
    def from_dict(cls, d: dict) -> AnnConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise InputFileError(f"ANN checkpoint config has unknown keys: {sorted(unknown)}")
        return cls(input_shape=tuple(int(v) for v in d["input_shape"]),
                   layers=tuple(str(v) for v in d["layers"]), n_classes=int(d["n_classes"]),
                   dataset=str(d.get("dataset", "digits")))


def mlp_layers(hidden: tuple[int, ...], n_classes: int) -> tuple[str, ...]:
    """Specs of Linear+ReLU hidden layers and a Linear output layer (e.g. 64-128-10)."""
    return (*(s for h in hidden for s in (f"linear:{h}", "relu")), f"linear:{n_classes}")


# The small conv block of `train --ann --conv`: Conv2d 1 -> 8 (3x3), ReLU, AvgPool2d 2, Flatten.
CONV_CHANNELS, CONV_KERNEL, CONV_POOL = 8, 3, 2


def conv_layers(hidden: tuple[int, ...], n_classes: int) -> tuple[str, ...]:
    """Specs of the conv block above, then ``mlp_layers(hidden, n_classes)``."""
    return (f"conv:{CONV_CHANNELS}:{CONV_KERNEL}", "relu", f"avgpool:{CONV_POOL}", "flatten",
            *mlp_layers(hidden, n_classes))


def _module(spec: str, shape: tuple[int, ...]) -> torch.nn.Module:
    name, *args = spec.split(":")
    try:
        values = [int(a) for a in args]
    except ValueError:
        raise UserError(f"layer spec {spec!r}: arguments must be integers") from None
    arity = {"linear": 1, "conv": 2, "avgpool": 1, "flatten": 0, "relu": 0}
    if name not in arity or len(values) != arity[name] or any(v < 1 for v in values):
        raise UserError(f"layer spec {spec!r}: expected linear:N, conv:C:K, avgpool:K, flatten or"
                        " relu with positive integers")
    if name in ("conv", "avgpool") and len(shape) != 3:
        raise UserError(f"layer spec {spec!r} needs (C, H, W) input, gets {shape}")
    if name == "linear":
        if len(shape) != 1:
            raise UserError(f"layer spec {spec!r} needs flat input, gets {shape}: add 'flatten'")
        return torch.nn.Linear(shape[0], values[0])
    if name == "conv":
        return torch.nn.Conv2d(shape[0], values[0], values[1], padding=values[1] // 2)
    if name == "avgpool":
        return torch.nn.AvgPool2d(values[0])
    return torch.nn.Flatten() if name == "flatten" else torch.nn.ReLU()


def build_sequential(config: AnnConfig) -> torch.nn.Sequential:
    """The ``torch.nn.Sequential`` a config describes (fresh, randomly initialised weights)."""
    if not config.layers:
        raise UserError("an ANN needs at least one layer")
    modules: list[torch.nn.Module] = []
    x = torch.zeros(1, *config.input_shape)
    for spec in config.layers:
        modules.append(_module(spec, tuple(x.shape[1:])))
        with torch.no_grad():
            x = modules[-1](x)
    if tuple(x.shape[1:]) != (config.n_classes,):
        raise UserError(f"the layers {list(config.layers)} end in shape {tuple(x.shape[1:])},"
                        f" not ({config.n_classes},) class scores")
    return torch.nn.Sequential(*modules)


class AnnNetwork(torch.nn.Module):
    """A ReLU ANN: flat (B, n) or shaped (B, *input_shape) values -> (B, n_classes) logits."""

    def __init__(self, config: AnnConfig):
        super().__init__()
        self.config = config
        self.net = build_sequential(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.reshape(x.shape[0], *self.config.input_shape))


def neuron_activations(net: torch.nn.Sequential, x: torch.Tensor
                       ) -> list[tuple[str, torch.Tensor]]:
    """The outputs of every ReLU, and the final output unless the net ends in a ReLU (Dropout and
    Identity after it aside).

    These are the layers that become spiking neurons on conversion; each is named by the index in
    ``net`` of its ReLU, or ``str(len(net))`` for the output layer, which are the names the NIR
    graph gives its IF nodes (``convert/ann_to_snn.py``).
    """
    out: list[tuple[str, torch.Tensor]] = []
    h = x
    for i, module in enumerate(net):
        h = module(h)
        if isinstance(module, torch.nn.ReLU):
            out.append((str(i), h))
    last = [m for m in net if not isinstance(m, IDENTITY_LAYERS)]
    if not last or not isinstance(last[-1], torch.nn.ReLU):
        out.append((str(len(net)), h))
    return out


@dataclasses.dataclass(frozen=True)
class AnnEpoch:
    epoch: int
    loss: float
    train_accuracy: float  # on the clean training inputs of the epoch


@dataclasses.dataclass(frozen=True)
class AnnTrainResult:
    model: AnnNetwork
    history: tuple[AnnEpoch, ...]
    test_accuracy: float
    adversarial: str
    eps: float
    attack_steps: int


def ann_accuracy(model: AnnNetwork, x: torch.Tensor, y: torch.Tensor, *,
                 batch_size: int = 512) -> float:
    """Share of (N, n) inputs whose largest logit is the label's."""
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            logits = model(x[start:start + batch_size])
            correct += int((logits.argmax(dim=1) == y[start:start + batch_size]).sum())
    return correct / max(len(x), 1)


def _loss(model: AnnNetwork, xb: torch.Tensor, yb: torch.Tensor, *, adversarial: str, eps: float,
          attack_steps: int, beta: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, clean logits) of one batch."""
    if adversarial == "none":
        logits = model(xb)
        return F.cross_entropy(logits, yb), logits
    model.eval()
    if adversarial == "pgd":
        x_adv = pgd_linf(model, xb, yb, eps=eps, steps=attack_steps, generator=gen)
    else:
        x_adv = trades_adversary(model, xb, eps=eps, steps=attack_steps, generator=gen)
    model.train()
    logits = model(xb)
    if adversarial == "pgd":
        return F.cross_entropy(model(x_adv), yb), logits
    return trades_loss(logits, model(x_adv), yb, beta=beta), logits


def fit_ann(config: AnnConfig, split: Split, *, epochs: int, seed: int, lr: float = 1e-3,
            batch_size: int = 64, adversarial: str = "none", eps: float = 0.1,
            attack_steps: int = 10, beta: float = 6.0,
            on_epoch: Callable[[AnnEpoch], None] | None = None) -> AnnTrainResult:
    """Train with Adam on the train split; deterministic for a given seed.

    Args:
        adversarial: "none" (cross-entropy on clean inputs), "pgd" (cross-entropy on PGD inputs,
            Madry et al. 2018) or "trades" (Zhang et al. 2019, with ``beta``).
        eps: L-inf radius of the training attack, in input units ([0, 1] values).
        attack_steps: ascent steps of the training attack.
    """
    if adversarial not in ADVERSARIAL:
        raise UserError(f"unknown adversarial training {adversarial!r}: choose from"
                        f" {', '.join(ADVERSARIAL)}")
    if adversarial != "none" and not (0 < eps <= 1 and attack_steps >= 1):
        raise UserError(f"adversarial training needs 0 < eps <= 1 and steps >= 1, got eps {eps},"
                        f" steps {attack_steps}")
    if beta < 0:
        raise UserError(f"TRADES beta must be >= 0, got {beta}")
    torch.manual_seed(seed)
    model = AnnNetwork(config)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    x_train, y_train = split.part("train")
    gen = torch.Generator().manual_seed(seed)
    history = []
    for epoch in range(epochs):
        order = torch.randperm(len(x_train), generator=gen)
        total, correct = 0.0, 0
        model.train()
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            loss, logits = _loss(model, x_train[idx], y_train[idx], adversarial=adversarial,
                                 eps=eps, attack_steps=attack_steps, beta=beta, gen=gen)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss) * len(idx)
            correct += int((logits.detach().argmax(dim=1) == y_train[idx]).sum())
        stats = AnnEpoch(epoch=epoch + 1, loss=total / len(order),
                         train_accuracy=correct / len(order))
        history.append(stats)
        if on_epoch is not None:
            on_epoch(stats)
    x_test, y_test = split.part("test")
    return AnnTrainResult(model=model, history=tuple(history),
                          test_accuracy=ann_accuracy(model, x_test, y_test),
                          adversarial=adversarial, eps=eps if adversarial != "none" else 0.0,
                          attack_steps=attack_steps if adversarial != "none" else 0)


def save_ann_checkpoint(model: AnnNetwork, path: Path, *, extra: dict | None = None) -> None:
    """Write weights and config as a weights-only checkpoint (atomically)."""
    write_checkpoint(model, kind=ANN_KIND, path=path, extra=extra)


def ann_from_payload(payload: dict, path: Path) -> AnnNetwork:
    """The ANN of a checkpoint payload read by ``train.model.read_checkpoint``."""
    kind = checkpoint_kind(payload)
    if kind != ANN_KIND:
        raise InputFileError(f"{path} holds a model of kind {kind!r}, not an ANN")
    try:
        config = AnnConfig.from_dict(payload["config"])
    except (KeyError, TypeError, ValueError, UserError) as exc:
        raise InputFileError(f"{path}: the ANN config is unusable: {exc}") from None
    model = load_weights(lambda: AnnNetwork(config), payload.get("state_dict"), path)
    model.eval()
    return model


def load_ann_checkpoint(path: Path) -> AnnNetwork:
    """Load a checkpoint written by ``save_ann_checkpoint``; never unpickles arbitrary objects."""
    return ann_from_payload(read_checkpoint(Path(path)), Path(path))
