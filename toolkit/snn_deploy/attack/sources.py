"""Gradient sources: differentiable stand-ins for a Deployment, each mapping encoder output
(T, B, n) to (B, C) logits of the Deployment's own output decoder (``coding``):

    spike_count   z = sum_t s_out,t
    first_spike   z = -beta * t_first, the soft first-spike time of the output spikes (equal to the
                  hard one on 0/1 spikes; gradients through the spikes' surrogate derivatives)
    max_membrane  z = beta * max_t m_t, m the output layer's membrane before threshold and reset
                  (units of its threshold; the max passes its gradient to the step that attains it)

Sources:

    twin   the differentiable twin of the exact Deployment (run/twin.py): forward bit-exact, surrogate
           gradients of selectable shape and width through the threshold (default); its logits
           equal the backend's decoder on the same spikes, so it agrees with the backend exactly;
    bptr   backpropagation through rates: the exact forward, and a backward pass through each
           layer's time-averaged input-output map, as if a layer's rate were a ReLU of its mean
           input current (Ding et al. 2022, used as an estimator by Ozdenizci & Legenstein 2024).
           The logits are the exact decoder's (BPDA, Athalye et al. 2018); their gradient is that
           of the output rate times T (spike_count), times beta T (first_spike: a higher rate fires
           earlier), or of the output layer's mean input current in threshold units, ungated, times
           beta T (max_membrane: the membrane is not rectified, so silent neurons pass gradient);
    float  the float source graph the Deployment was made from (transfer attack), with a surrogate;
           its logits are the decoder's on the float graph's spikes or membrane.
"""

from __future__ import annotations

import torch

from snn_deploy.coding import DecoderSpec
from snn_deploy.convert.conv import ConvGeometry
from snn_deploy.errors import UserError
from snn_deploy.quantize.deployment import Deployment
from snn_deploy.run.float_backend import LayerParams, float_loop
from snn_deploy.run.layer_constants import lava_weights
from snn_deploy.run.twin import SURROGATES, EmulatorTwin, surrogate_spike
from snn_deploy.targets import Target

SOURCE_KINDS = ("twin", "bptr", "float")


class TwinSource:
    """Gradients through the differentiable twin of the Deployment."""

    def __init__(self, dep: Deployment, *, surrogate: str = "fast_sigmoid", width: float = 0.5,
                 decoder: DecoderSpec = DecoderSpec()):
        self.twin = EmulatorTwin(dep, surrogate=surrogate, width=width).requires_grad_(False)
        self.decoder = decoder
        self.name = f"twin[{surrogate},{width:g}]"

    def spike_logits(self, s: torch.Tensor) -> torch.Tensor:
        out = self.twin(s)
        return self.decoder.logits(out.output, out.membrane).to(torch.float32)


class BPTRSource:
    """Exact twin forward; backward through per-layer rates r_l = mean_t s_l, with
    d r_l / d r_{l-1} = diag[r_l > 0] * W_l * gain_l, gain_l = 2**(exp + 6) / (vth << 6); W_l a
    Conv's correlation for a conv layer."""

    def __init__(self, dep: Deployment, *, decoder: DecoderSpec = DecoderSpec()):
        self.twin = EmulatorTwin(dep).requires_grad_(False)
        self.decoder = decoder
        p = dep.profile
        self.maps = []
        for layer in dep.layers:
            w = layer.weights if layer.kind == "conv" else \
                lava_weights(layer, weight_bits=p.weight_bits)
            gain = 2.0 ** (layer.weight_exp + p.activation_shift) / max(
                float(layer.vth << p.threshold_shift), 1.0)
            w = torch.as_tensor(w, dtype=torch.float64)
            self.maps.append((w * gain * float(dep.input_scale if not self.maps else 1), layer.conv))
        self.name = "bptr"

    def spike_logits(self, s: torch.Tensor) -> torch.Tensor:
        steps = s.shape[0]
        with torch.no_grad():
            out = self.twin(s.detach())
        r = s.reshape(steps, s.shape[1], -1).to(torch.float64).mean(dim=0)  # straight through
        drive = r
        for (w, conv), spikes in zip(self.maps, out.layers):
            rate = spikes.mean(dim=0)
            drive = _mean_drive(r, w, conv)  # mean input current per step, in threshold units
            a = drive * (rate > 0)
            r = rate + a - a.detach()
        if self.decoder.name == "spike_count":
            return (r * steps).to(torch.float32)
        exact = self.decoder.logits(out.output, out.membrane)
        proxy = drive if self.decoder.reads_membrane else r
        scale = self.decoder.beta * steps
        return (exact + scale * (proxy - proxy.detach())).to(torch.float32)


def _mean_drive(r: torch.Tensor, w: torch.Tensor, conv: ConvGeometry | None) -> torch.Tensor:
    """(B, n_in) rates -> (B, n) through a Dense's (n, n_in) matrix or a Conv's kernel."""
    if conv is None:
        return r @ w.T
    a = torch.nn.functional.conv2d(r.reshape(r.shape[0], *conv.in_shape), w,
                                   stride=tuple(conv.stride), padding=tuple(conv.padding),
                                   dilation=tuple(conv.dilation), groups=conv.groups)
    return a.reshape(r.shape[0], -1)


class FloatSource:
    """The float source graph (what the Deployment was quantized from), spikes with a surrogate."""

    def __init__(self, target: Target, *, surrogate: str = "fast_sigmoid", width: float = 0.5,
                 decoder: DecoderSpec = DecoderSpec()):
        net = target.require_network()
        self.decoder = decoder
        self.params = [LayerParams.of(layer) for layer in net.layers]
        self.shape, self.width = surrogate, width
        self.name = f"float[{surrogate},{width:g}]"

    def _spike(self, v: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
        scale = threshold.abs().clamp(min=1e-6)
        return surrogate_spike((v - threshold) / scale, self.shape, self.width)

    def spike_logits(self, s: torch.Tensor) -> torch.Tensor:
        trace = float_loop(self.params, s, spike=self._spike, membrane=True)
        return self.decoder.logits(trace.output, trace.membrane)


def make_source(kind: str, target: Target, *, surrogate: str = "fast_sigmoid",
                width: float = 0.5):
    """A gradient source by name (``twin``, ``bptr``, ``float``) for a Deployment target, giving
    the logits of the decoder its coding names."""
    if surrogate not in SURROGATES:
        raise UserError(f"unknown surrogate {surrogate!r}: choose from {', '.join(SURROGATES)}")
    dep = target.require_deployment()
    decoder = dep.coding.decoder
    if kind == "twin":
        return TwinSource(dep, surrogate=surrogate, width=width, decoder=decoder)
    if kind == "bptr":
        return BPTRSource(dep, decoder=decoder)
    if kind == "float":
        return FloatSource(target, surrogate=surrogate, width=width, decoder=decoder)
    raise UserError(f"unknown gradient source {kind!r}: choose from {', '.join(SOURCE_KINDS)}")
