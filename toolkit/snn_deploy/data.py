"""Data sets as float32 tensors in [0, 1] with one fixed, seeded, stratified train/test split.

scikit-learn's digits (8x8 images, 16 grey levels, 1797 samples, 10 classes) ships inside
scikit-learn and is the embedded default: nothing is downloaded.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from snn_deploy.errors import UserError

SPLIT_SEED = 0  # the one split every command uses; changing it changes every reported number
TEST_FRACTION = 0.2


@dataclasses.dataclass(frozen=True)
class Split:
    """A data set split into train and test parts; inputs are flattened, in [0, 1], float32."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    input_shape: tuple[int, ...]
    n_classes: int

    @property
    def n_inputs(self) -> int:
        return int(np.prod(self.input_shape))

    def part(self, which: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``"train"`` or ``"test"`` -> (inputs (N, n) float32, labels (N,) int64)."""
        if which == "train":
            return self.x_train, self.y_train
        if which == "test":
            return self.x_test, self.y_test
        raise UserError(f"unknown split {which!r}: use 'train' or 'test'")


def _digits() -> Split:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = (bunch.data / 16.0).astype(np.float32)  # 16 grey levels -> [0, 1]
    y = bunch.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=TEST_FRACTION, stratify=y, random_state=SPLIT_SEED
    )
    return Split(
        name="digits",
        x_train=torch.from_numpy(x_tr),
        y_train=torch.from_numpy(y_tr),
        x_test=torch.from_numpy(x_te),
        y_test=torch.from_numpy(y_te),
        input_shape=(8, 8),
        n_classes=10,
    )


DATASETS = {"digits": _digits}


def load_dataset(name: str) -> Split:
    """Load a data set by name (a key of ``DATASETS``)."""
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}: choose from {', '.join(DATASETS)}")
    return DATASETS[name]()
