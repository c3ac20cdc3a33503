"""Per-sample losses attacks maximise, on (B, C) logits (output spike counts)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, y, reduction="none")


def dlr(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Difference of logits ratio (Croce & Hein 2020): -(z_y - max_{i!=y} z_i) / (z_1 - z_3),
    invariant to the logits' scale; z_1 >= z_2 >= z_3 are the sorted logits. The denominator gets
    +1 (not 1e-12): spike-count logits are integers and often tie."""
    ordered, _ = logits.sort(dim=1, descending=True)
    correct = logits.gather(1, y[:, None])[:, 0]
    best_other = torch.where(ordered[:, 0] == correct, ordered[:, 1], ordered[:, 0])
    return -(correct - best_other) / (ordered[:, 0] - ordered[:, 2] + 1.0)


LOSSES = {"ce": cross_entropy, "dlr": dlr}
