"""ANN-to-SNN conversion as Python functions, one per CLI command (``train --ann``, ``convert``).

``train_ann`` trains a ReLU ANN (``train/ann.py``) on a data set, ``save_ann``/``load_ann`` write
and read its weights-only checkpoint, and ``convert`` turns a saved ANN into a NIR graph of IF
neurons with balanced thresholds (``convert/ann_to_snn.py``), calibrated on the data set's
training split.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

from snn_deploy.convert.ann_to_snn import DEFAULT_PERCENTILE, BalancedLayer, ann_to_nir
from snn_deploy.convert.export import write_nir
from snn_deploy.data import load_dataset
from snn_deploy.errors import UserError
from snn_deploy.train.ann import (
    AnnConfig,
    AnnEpoch,
    AnnNetwork,
    AnnTrainResult,
    ann_accuracy,
    conv_layers,
    fit_ann,
    load_ann_checkpoint,
    mlp_layers,
    save_ann_checkpoint,
)

DEFAULT_HIDDEN = (128,)  # the deployable 64-128-10 MLP on digits


def train_ann(*, dataset: str = "digits", hidden: tuple[int, ...] | None = None,
              conv: bool = False, epochs: int = 30, lr: float = 1e-3, batch_size: int = 64,
              seed: int = 0, adversarial: str = "none", eps: float = 0.1, attack_steps: int = 10,
              beta: float = 6.0,
              on_epoch: Callable[[AnnEpoch], None] | None = None) -> AnnTrainResult:
    """Train a ReLU ANN: an MLP (Linear+ReLU ``hidden`` layers, default 128), or with ``conv``
    the small conv block (Conv2d 1->8 3x3, ReLU, AvgPool2d 2, Flatten) before ``hidden`` (default
    none) and the Linear output layer."""
    if hidden is not None and any(h < 1 for h in hidden):
        raise UserError(f"--hidden needs positive layer sizes, got {hidden}")
    for name, value in (("--epochs", epochs), ("--batch-size", batch_size)):
        if value < 1:
            raise UserError(f"{name} must be >= 1, got {value}")
    if not lr > 0:
        raise UserError(f"--lr must be > 0, got {lr}")
    split = load_dataset(dataset)
    if conv:
        if len(split.input_shape) != 2:
            raise UserError(f"--conv needs image data, {dataset} samples have shape"
                            f" {split.input_shape}")
        config = AnnConfig(input_shape=(1, *split.input_shape),
                           layers=conv_layers(hidden or (), split.n_classes),
                           n_classes=split.n_classes, dataset=dataset)
    else:
        config = AnnConfig(input_shape=(split.n_inputs,),
                           layers=mlp_layers(DEFAULT_HIDDEN if hidden is None else hidden,
                                             split.n_classes),
                           n_classes=split.n_classes, dataset=dataset)
    return fit_ann(config, split, epochs=epochs, seed=seed, lr=lr, batch_size=batch_size,
                   adversarial=adversarial, eps=eps, attack_steps=attack_steps, beta=beta,
                   on_epoch=on_epoch)


def save_ann(result: AnnTrainResult, path: str | Path, *, seed: int | None = None) -> None:
    """Write the trained ANN with how it was trained (``info``) as a weights-only checkpoint."""
    info: dict = {"test_accuracy": result.test_accuracy, "epochs": len(result.history),
                  "adversarial": result.adversarial, "eps": result.eps,
                  "attack_steps": result.attack_steps}
    if seed is not None:
        info["seed"] = seed
    save_ann_checkpoint(result.model, Path(path), extra=info)


def load_ann(path: str | Path) -> AnnNetwork:
    """Load an ANN checkpoint (``torch.load(weights_only=True)``; pickled objects are refused)."""
    return load_ann_checkpoint(Path(path))


@dataclasses.dataclass(frozen=True)
class ConvertSummary:
    """What ``convert`` wrote and the thresholds it chose, layer by layer (input side first)."""

    out: Path
    dataset: str
    steps: int
    encoding: str
    norm: str
    percentile: float | None
    threshold_scale: float
    calibration_samples: int
    ann_test_accuracy: float
    layers: tuple[BalancedLayer, ...]
    node_types: tuple[str, ...]  # NIR node types, input to output (the graph is a chain)


def convert(ann_path: str | Path, *, out: str | Path, dataset: str | None = None,
            steps: int = 32, norm: str = "max", percentile: float = DEFAULT_PERCENTILE,
            threshold_scale: float = 1.0, encoding: str = "direct",
            calibration_samples: int | None = None) -> ConvertSummary:
    """ANN checkpoint -> NIR file of IF neurons, thresholds balanced on the training split.

    Args:
        dataset: calibration data (default: the data set the ANN was trained on).
        calibration_samples: use the first N training samples (default: all of them).
        Others: see ``convert.ann_to_snn.ann_to_nir``.
    """
    model = load_ann(ann_path)
    name = dataset or model.config.dataset
    split = load_dataset(name)
    if split.n_inputs != model.config.n_inputs:
        raise UserError(f"{ann_path} takes {model.config.n_inputs} inputs, {name} samples have"
                        f" {split.n_inputs}")
    x, _ = split.part("train")
    if calibration_samples is not None:
        if calibration_samples < 0:
            raise UserError(f"calibration samples must be >= 0, got {calibration_samples}")
        x = x[:calibration_samples]
    conversion = ann_to_nir(model.net, input_shape=model.config.input_shape, calibration=x,
                            steps=steps, norm=norm, percentile=percentile,
                            threshold_scale=threshold_scale, encoding=encoding, dataset=name)
    write_nir(conversion.graph, out)
    x_test, y_test = split.part("test")
    return ConvertSummary(
        out=Path(out), dataset=name, steps=steps, encoding=encoding, norm=norm,
        percentile=conversion.percentile, threshold_scale=conversion.threshold_scale,
        calibration_samples=conversion.calibration_samples,
        ann_test_accuracy=ann_accuracy(model, x_test, y_test), layers=conversion.layers,
        node_types=tuple(type(node).__name__ for node in conversion.graph.nodes.values()),
    )

