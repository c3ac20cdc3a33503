"""Membrane-potential perturbation mean square as an evaluation output (Ding et al., ICML 2024).

``--perturbation gaussian:SIGMA``: every test value gets seeded Gaussian noise of std SIGMA
(clipped to [0, 1]); clean and noisy sets are encoded with the same encoder seeds, and the float
model's last LIF layer is run on both: the report gets mean_t,b,i Y^2 (train/stability.py, volts^2).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from snn_deploy.data import Split
from snn_deploy.errors import UserError
from snn_deploy.evaluate.accuracy import encoded_batches
from snn_deploy.targets import Target
from snn_deploy.train.stability import perturbation_ms

KINDS = ("gaussian",)


@dataclasses.dataclass(frozen=True)
class Perturbation:
    kind: str
    sigma: float

    @classmethod
    def parse(cls, text: str) -> Perturbation:
        kind, _, value = text.partition(":")
        if kind not in KINDS:
            raise UserError(f"--perturbation {text!r}: unknown kind {kind!r} (use gaussian:SIGMA)")
        try:
            sigma = float(value)
        except ValueError:
            raise UserError(f"--perturbation {text!r}: SIGMA must be a number") from None
        if not (sigma > 0 and np.isfinite(sigma)):
            raise UserError(f"--perturbation {text!r}: SIGMA must be > 0")
        return cls(kind=kind, sigma=sigma)


def perturbation_report(target: Target, split: Split, spec: Perturbation, *, limit: int | None,
                        steps: int, seed: int) -> dict:
    """The membrane-perturbation MS of the model's float form (the Deployment's source graph)."""
    model = target.checkpoint if target.checkpoint is not None else target.network
    if model is None:
        raise UserError(f"{target.path}: --perturbation needs a float model (checkpoint, NIR graph,"
                        " or a Deployment that carries its source graph)")
    x, _ = split.part("test")
    if limit is not None:
        x = x[:limit]
    gen = torch.Generator().manual_seed(seed * 7907 + 1)
    noisy = (x + spec.sigma * torch.randn(x.shape, generator=gen)).clamp(0.0, 1.0)
    encoding = str(target.coding.get("encoding", "rate"))
    total, count = 0.0, 0
    for clean_b, noisy_b in zip(encoded_batches(x, encoding=encoding, steps=steps, seed=seed),
                                encoded_batches(noisy, encoding=encoding, steps=steps, seed=seed)):
        total += perturbation_ms(model, clean_b, noisy_b) * clean_b.shape[1]
        count += clean_b.shape[1]
    return {"perturbation": f"{spec.kind}:{spec.sigma:g}", "perturbation_ms": total / count,
            "perturbation_ms_unit": "volts^2 (float model's last LIF layer)"}
