"""Gradient sources: differentiable stand-ins for a Deployment, each mapping encoder output
(T, B, n) to (B, C) logits = output spike counts (the deployed decoder).

    twin   the differentiable twin of the exact Deployment (run/twin.py): forward bit-exact, surrogate
           gradients of selectable shape and width through the threshold (default);
    bptr   backpropagation through rates: the exact forward, and a backward pass through each
           layer's time-averaged input-output map, as if a layer's rate were a ReLU of its mean
           input current (Ding et al. 2022, used as an estimator by Ozdenizci & Legenstein 2024);
    float  the float source graph the Deployment was made from (transfer attack), with a surrogate.
"""

from __future__ import annotations

import torch

from snn_deploy.errors import UserError
from snn_deploy.quantize.deployment import Deployment
from snn_deploy.run.emulator import lava_weights
from snn_deploy.run.float_backend import LayerParams, layer_step
from snn_deploy.run.twin import SURROGATES, EmulatorTwin, surrogate_spike
from snn_deploy.targets import Target

SOURCE_KINDS = ("twin", "bptr", "float")


class TwinSource:
    """Gradients through the differentiable twin of the Deployment."""

    def __init__(self, dep: Deployment, *, surrogate: str = "fast_sigmoid", width: float = 0.5):
        self.twin = EmulatorTwin(dep, surrogate=surrogate, width=width).requires_grad_(False)
        self.name = f"twin[{surrogate},{width:g}]"

    def spike_logits(self, s: torch.Tensor) -> torch.Tensor:
        return self.twin(s).output.sum(dim=0).to(torch.float32)


class BPTRSource:
    """Exact twin forward; backward through per-layer rates r_l = mean_t s_l, with
    d r_l / d r_{l-1} = diag[r_l > 0] * W_l * gain_l, gain_l = 2**(exp + 6) / (vth << 6)."""

    def __init__(self, dep: Deployment):
        self.twin = EmulatorTwin(dep).requires_grad_(False)
        p = dep.profile
        self.maps = []
        for layer in dep.layers:
            w = torch.as_tensor(lava_weights(layer, weight_bits=p.weight_bits), dtype=torch.float64)
            gain = 2.0 ** (layer.weight_exp + p.activation_shift) / max(
                float(layer.vth << p.threshold_shift), 1.0)
            self.maps.append((w * gain * float(dep.input_scale if not self.maps else 1)))
        self.name = "bptr"

    def spike_logits(self, s: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            exact = self.twin(s.detach()).layers
        r = s.to(torch.float64).mean(dim=0)  # carries the encoder's straight-through gradient
        for w, spikes in zip(self.maps, exact):
            rate = spikes.mean(dim=0)
            a = (r @ w.T) * (rate > 0)
            r = rate + a - a.detach()
        return (r * s.shape[0]).to(torch.float32)


class FloatSource:
    """The float source graph (what the Deployment was quantized from), spikes with a surrogate."""

    def __init__(self, target: Target, *, surrogate: str = "fast_sigmoid", width: float = 0.5):
        net = target.require_network()
        self.params = [LayerParams.of(layer) for layer in net.layers]
        self.sizes = [layer.size for layer in net.layers]
        self.shape, self.width = surrogate, width
        self.name = f"float[{surrogate},{width:g}]"

    def _spike(self, v: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
        scale = threshold.abs().clamp(min=1e-6)
        return surrogate_spike((v - threshold) / scale, self.shape, self.width)

    def spike_logits(self, s: torch.Tensor) -> torch.Tensor:
        steps, batch = s.shape[0], s.shape[1]
        x = s.reshape(steps, batch, -1).to(torch.float32)
        i = [torch.zeros(batch, n) for n in self.sizes]
        v = [torch.zeros(batch, n) for n in self.sizes]
        last = [torch.zeros(batch, n) for n in self.sizes]
        total = torch.zeros(batch, self.sizes[-1])
        for t in range(steps):
            z = x[t]
            for k, p in enumerate(self.params):
                z, i[k], v[k] = layer_step(p, z, i[k], v[k], last[k], spike=self._spike)
                last[k] = z
            total = total + z
        return total


def make_source(kind: str, target: Target, *, surrogate: str = "fast_sigmoid",
                width: float = 0.5):
    """A gradient source by name (``twin``, ``bptr``, ``float``) for a Deployment target."""
    if surrogate not in SURROGATES:
        raise UserError(f"unknown surrogate {surrogate!r}: choose from {', '.join(SURROGATES)}")
    dep = target.require_deployment()
    if kind == "twin":
        return TwinSource(dep, surrogate=surrogate, width=width)
    if kind == "bptr":
        return BPTRSource(dep)
    if kind == "float":
        return FloatSource(target, surrogate=surrogate, width=width)
    raise UserError(f"unknown gradient source {kind!r}: choose from {', '.join(SOURCE_KINDS)}")
