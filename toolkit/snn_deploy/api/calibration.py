"""Calibration input for ``deploy`` and what a source model's own reset changes.

Workflow layer (``snn_deploy.api``): data set or ``.npy`` file -> encoded (T, N, n) input; the
float graph run with NIR's reset against the source model's (``SOURCE_RESETS``).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from snn_deploy.api.inputs import load_npy
from snn_deploy.coding import BINARY_ENCODINGS, encode
from snn_deploy.convert.nirgraph import SOURCE_RESETS, FloatNetwork, with_reset
from snn_deploy.data import load_dataset
from snn_deploy.errors import UserError
from snn_deploy.quantize.fidelity import count_correlation
from snn_deploy.run.float_backend import run_float

CALIBRATION_SAMPLES = 256  # training samples used to calibrate the peak synaptic current
# Random input on which deploy measures what a source model's reset by subtraction changes
# (when no calibration data is given): Bernoulli spikes, fixed seed.
EFFECT_SAMPLES, EFFECT_STEPS, EFFECT_RATE = 16, 100, 0.1



def calibration_input(network: FloatNetwork, *, dataset: str | None, calibration: str | None,
                      seed: int) -> torch.Tensor | None:
    """Encoded calibration input (T, N, n) from a data set's train split or a .npy file.

    A file holds either values in [0, 1], (N, n) or (N, *input_shape), which the graph's own
    coding (its metadata, else rate coding over 32 steps) turns into spikes, or input already
    encoded, (T, N, n) or (T, N, *input_shape): 0/1 spikes, or levels in [0, 1] for a graph with
    graded (direct-coded) input.
    """
    coding = network.coding
    encoding, steps = coding.encoding, coding.steps
    if dataset is not None and calibration is not None:
        raise UserError("give --dataset or --calibration, not both")
    shape = network.shape
    layouts = "(N, n) or (N, *input) values, (T, N, n) or (T, N, *input) spikes"
    want = f"input {shape}, n = {network.input_size}"
    if dataset is not None:
        x = load_dataset(dataset).x_train[:CALIBRATION_SAMPLES]
        what = f"the {dataset} data set"
    elif calibration is not None:
        raw = load_npy(calibration)
        what = str(calibration)
        encoded = raw.ndim == len(shape) + 2 and tuple(raw.shape[2:]) == shape or \
            raw.ndim == 3 and raw.shape[2] == network.input_size
        if raw.ndim < 2 or 0 in raw.shape:
            raise UserError(f"{what}: calibration data of shape {raw.shape}: give {layouts}"
                            f" ({want})")
        if encoded:
            graded = encoding not in BINARY_ENCODINGS
            if not graded and not np.isin(raw, (0, 1)).all():
                raise UserError(f"{what}: encoded calibration input {raw.shape} for a graph that"
                                " takes spikes holds values other than 0 and 1")
            x = torch.from_numpy(raw.reshape(raw.shape[0], raw.shape[1], -1)).to(torch.float32)
        else:
            x = torch.from_numpy(raw.reshape(len(raw), -1)).to(torch.float32)
        if x.min() < 0 or x.max() > 1:
            raise UserError(f"{what}: calibration values must lie in [0, 1], got"
                            f" {float(x.min()):.4g}..{float(x.max()):.4g}")
    else:
        return None
    if x.ndim == 2:  # values -> the graph's own coding
        x = encode(x, encoding=encoding, steps=steps, seed=seed)
    x = x.reshape(x.shape[0], x.shape[1], -1)
    if x.shape[-1] != network.input_size:
        raise UserError(f"{what} gives {x.shape[-1]} input channels after {encoding} coding, the"
                        f" graph takes {network.input_size} ({want}): give {layouts}")
    return x



@dataclasses.dataclass(frozen=True)
class SourceEffect:
    """What running the graph as its source model did (``source_reset``) instead of as NIR and a
    Loihi 2 LIF do (reset to v_reset, one spike per step) changes in the float graph.

    ``layer_change``: per layer (name, relative change of the total spike count, NIR vs source);
    ``count_corr``: Pearson correlation of the output spike counts over (sample, neuron);
    ``argmax_same``: share of samples whose output argmax (spike count) is the same.
    """

    source_reset: str
    where: str
    samples: int
    layer_change: tuple[tuple[str, float], ...]
    count_corr: float
    argmax_same: float

    def message(self) -> str:
        changes = ", ".join(f"{name} {100 * c:+.1f}%" for name, c in self.layer_change)
        return (f"the source model ran its neurons as {self.source_reset!r}"
                f" ({SOURCE_RESETS[self.source_reset]}), NIR and a Loihi 2 LIF reset to v_reset"
                f" with one spike per step: on {self.where}, spike counts NIR vs source: {changes};"
                f" output spike counts correlate {self.count_corr:.3f}, output argmax unchanged"
                f" on {100 * self.argmax_same:.1f}% of {self.samples} samples")


def reset_effect(network: FloatNetwork, x: torch.Tensor, *, source_reset: str = "subtract",
                 where: str = "the given input") -> SourceEffect:
    """What running the neurons as the source model did (``SOURCE_RESETS``) instead of resetting
    to v_reset (NIR, Loihi 2) changes in the float graph on input ``x`` (T, B, n)."""
    nir_run = run_float(network, x).recording
    src = run_float(with_reset(network, source_reset), x).recording
    changes = tuple((name, (int(a.sum()) - int(b.sum())) / max(int(b.sum()), 1))
                    for name, a, b in zip(nir_run.layer_names, nir_run.counts, src.counts))
    same = float(np.mean(nir_run.counts[-1].argmax(axis=1) == src.counts[-1].argmax(axis=1)))
    return SourceEffect(source_reset=source_reset, where=where, samples=int(x.shape[1]),
                        layer_change=changes, count_corr=count_correlation(nir_run.counts[-1],
                                                     src.counts[-1]),
                        argmax_same=same)


def random_spikes(network: FloatNetwork, *, seed: int, samples: int = EFFECT_SAMPLES,
                  steps: int = EFFECT_STEPS, rate: float = EFFECT_RATE) -> torch.Tensor:
    """(steps, samples, n) Bernoulli(rate) spikes from a seeded generator."""
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand((steps, samples, network.input_size), generator=gen) < rate).float()

