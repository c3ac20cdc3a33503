"""Membrane-potential perturbation mean square as an evaluation output (Ding et al., ICML 2024).

``--perturbation gaussian:SIGMA``: every test value gets seeded Gaussian noise of std SIGMA
(clipped to [0, 1]). ``--perturbation fgsm:EPS``: the adversarial set instead, one FGSM step of
size EPS (L-inf, clipped to [0, 1]; Goodfellow et al. 2015) on the float model's own decoder
logits, with surrogate gradients and the encoder passed straight through, its noise frozen as the
evaluation draws it (attack/base.py ``FrozenEncoder``). Clean and perturbed sets are encoded with
the same encoder seeds, and the float model's last LIF layer is run on both: the report gets
mean_t,b,i Y^2 (train/stability.py, volts^2).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from snn_deploy.attack.base import BATCH, FrozenEncoder
from snn_deploy.attack.sources import FloatSource
from snn_deploy.convert.nirgraph import FloatNetwork
from snn_deploy.data import Split
from snn_deploy.errors import UserError
from snn_deploy.evaluate.accuracy import encoded_batches
from snn_deploy.run.float_backend import LayerParams, float_loop
from snn_deploy.targets import Target
from snn_deploy.train.adversarial import fgsm_linf
from snn_deploy.train.model import LIFNetwork
from snn_deploy.train.stability import check_same_shape, membrane_perturbation, perturbation_ms

KINDS = ("gaussian", "fgsm")  # noise of std SIGMA, or an FGSM step of size EPS


@dataclasses.dataclass(frozen=True)
class Perturbation:
    kind: str
    sigma: float

    @classmethod
    def parse(cls, text: str) -> Perturbation:
        kind, _, value = text.partition(":")
        if kind not in KINDS:
            raise UserError(f"--perturbation {text!r}: unknown kind {kind!r} (use gaussian:SIGMA or"
                            " fgsm:EPS)")
        try:
            sigma = float(value)
        except ValueError:
            raise UserError(f"--perturbation {text!r}: its size must be a number") from None
        if not (sigma > 0 and np.isfinite(sigma)):
            raise UserError(f"--perturbation {text!r}: its size must be > 0")
        return cls(kind=kind, sigma=sigma)


def perturbation_report(target: Target, split: Split, spec: Perturbation, *, limit: int | None,
                        steps: int, seed: int) -> dict:
    """The membrane-perturbation MS of the model's float form (the Deployment's source graph)."""
    model = target.float_model
    if model is None:
        raise UserError(f"{target.path}: --perturbation needs a float model (checkpoint, NIR graph,"
                        " or a Deployment that carries its source graph)")
    x, y = split.part("test")
    if limit is not None:
        x, y = x[:limit], y[:limit]
    encoding = target.coding.encoding
    if spec.kind == "fgsm":
        noisy = fgsm_set(target, x, y, eps=spec.sigma, encoding=encoding, steps=steps, seed=seed)
    else:
        gen = torch.Generator().manual_seed(seed * 7907 + 1)
        noisy = (x + spec.sigma * torch.randn(x.shape, generator=gen)).clamp(0.0, 1.0)
    total, count = 0.0, 0
    for clean_b, noisy_b in zip(encoded_batches(x, encoding=encoding, steps=steps, seed=seed),
                                encoded_batches(noisy, encoding=encoding, steps=steps, seed=seed)):
        ms = perturbation_ms(model, clean_b, noisy_b) if isinstance(model, LIFNetwork) else \
            graph_perturbation_ms(model, clean_b, noisy_b)
        total += ms * clean_b.shape[1]
        count += clean_b.shape[1]
    return {"perturbation": f"{spec.kind}:{spec.sigma:g}", "perturbation_ms": total / count,
            "perturbation_ms_unit": "volts^2 (float model's last LIF layer)"}


def graph_perturbation_ms(network: FloatNetwork, x_clean: torch.Tensor,
                          x_pert: torch.Tensor) -> float:
    """``train.stability.perturbation_ms`` of a NIR layer chain run with the float backend's
    dynamics: the last layer's currents from ``run.float_backend.float_loop``, its keep and gain
    from its NeuronSpec (1 - mem_gain and mem_gain * r with a leak; 1 and r for IF)."""
    check_same_shape(x_clean, x_pert)
    spec = network.layers[-1].spec
    mem_gain = torch.as_tensor(spec.mem_gain, dtype=torch.float32)
    r = torch.as_tensor(spec.r, dtype=torch.float32)
    keep = 1.0 - mem_gain if spec.leak else torch.ones_like(r)
    gain = mem_gain * r if spec.leak else r
    params = [LayerParams.of(layer) for layer in network.layers]
    with torch.no_grad():
        i_clean, i_pert = (float_loop(params, x, currents=True).currents[-1]  # type: ignore[index]
                           for x in (x_clean, x_pert))
        y = membrane_perturbation(i_clean, i_pert, keep=keep, gain=gain)
    return float(y.square().mean())


def fgsm_set(target: Target, x: torch.Tensor, y: torch.Tensor, *, eps: float, encoding: str,
             steps: int, seed: int) -> torch.Tensor:
    """(N, n) values -> their FGSM versions against the float model (the checkpoint's own LIF
    network, else the NIR graph through ``attack.sources.FloatSource``), read out with the model's
    decoder; batches of ``BATCH`` as evaluate encodes them."""
    decoder = target.coding.decoder
    if target.checkpoint is not None:
        model = target.checkpoint

        def logits(s: torch.Tensor) -> torch.Tensor:
            trace = model.trace(s)
            return decoder.logits(trace.output, trace.membrane)
    else:
        logits = FloatSource(target, decoder=decoder).spike_logits
    x = x.to(torch.float32)
    encoder = FrozenEncoder(encoding, steps=steps, seed=seed, n_samples=len(x), n_inputs=x.shape[1])
    parts = []
    for start in range(0, len(x), BATCH):
        idx = torch.arange(start, min(start + BATCH, len(x)))
        parts.append(fgsm_linf(lambda xb, idx=idx: logits(encoder.differentiable(xb, idx)),
                               x[idx], y[idx], eps=eps))
    return torch.cat(parts)
