"""Surrogate-gradient backpropagation through time for ``LIFNetwork``.

Loss: cross-entropy of the output spike counts (the spike-count decoder's logits). Norse's LIFCell
uses the SuperSpike surrogate for the threshold's derivative.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import torch

from snn_deploy.coding import encode, predict
from snn_deploy.data import Split
from snn_deploy.train.model import LIFNetwork, ModelConfig


@dataclasses.dataclass(frozen=True)
class EpochStats:
    epoch: int
    loss: float
    train_accuracy: float


@dataclasses.dataclass(frozen=True)
class TrainResult:
    model: LIFNetwork
    history: tuple[EpochStats, ...]
    test_accuracy: float


def _batch_seed(seed: int, epoch: int, batch: int) -> int:
    # Distinct, reproducible encoder seeds for every batch of every epoch.
    return (seed * 1_000_003 + epoch * 10_007 + batch) % (2**63 - 1)


def model_accuracy(model: LIFNetwork, x: torch.Tensor, y: torch.Tensor, *, seed: int,
                   batch_size: int = 512) -> float:
    """Accuracy of the Norse model on (N, n) inputs, encoded with the model's own coding."""
    cfg = model.config
    correct = 0
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            xb = encode(x[start:start + batch_size], encoding=cfg.encoding, steps=cfg.steps,
                        seed=seed + start)
            correct += int((predict(model(xb)) == y[start:start + batch_size]).sum())
    return correct / max(len(x), 1)


def train_bptt(config: ModelConfig, split: Split, *, epochs: int, seed: int, lr: float = 2e-3,
               batch_size: int = 64,
               on_epoch: Callable[[EpochStats], None] | None = None) -> TrainResult:
    """Train with Adam on the train split; deterministic for a given seed."""
    torch.manual_seed(seed)
    model = LIFNetwork(config)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    x_train, y_train = split.part("train")
    gen = torch.Generator().manual_seed(seed)
    history = []
    for epoch in range(epochs):
        order = torch.randperm(len(x_train), generator=gen)
        total_loss, correct = 0.0, 0
        model.train()
        for b, start in enumerate(range(0, len(order), batch_size)):
            idx = order[start:start + batch_size]
            xb = encode(x_train[idx], encoding=config.encoding, steps=config.steps,
                        seed=_batch_seed(seed, epoch, b))
            out = model(xb)
            loss = torch.nn.functional.cross_entropy(out.sum(0), y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total_loss += float(loss) * len(idx)
            correct += int((predict(out.detach()) == y_train[idx]).sum())
        stats = EpochStats(epoch=epoch + 1, loss=total_loss / len(order),
                           train_accuracy=correct / len(order))
        history.append(stats)
        if on_epoch is not None:
            on_epoch(stats)
    model.eval()
    x_test, y_test = split.part("test")
    return TrainResult(model=model, history=tuple(history),
                       test_accuracy=model_accuracy(model, x_test, y_test, seed=seed))
