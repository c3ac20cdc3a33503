"""The differentiable twin's synapses beyond the plain Dense (run/twin.py): Lava's fixed-point Conv
and a DelayDense's per-neuron delays, each exact forward (as ``run.layer_constants`` computes them
for the emulator) with its gradient straight through the integer operations; and ``ste``, the
straight-through map the twin builds every integer operation from.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from snn_deploy import lava_formats as lava
from snn_deploy.convert.conv import ConvGeometry
from snn_deploy.errors import UserError
from snn_deploy.quantize.deployment import Deployment
from snn_deploy.run.layer_constants import CONV_WRAP, require_kinds
from snn_deploy.run.lif_core import abs_max

TWIN_KINDS = ("dense", "conv")  # the layer kinds the twin runs


def ste(x: torch.Tensor, exact: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Forward ``exact(x)``, backward identity (and x itself where ``exact`` returns its input)."""
    d = x.detach()
    e = exact(d)
    return x if e is d else x + (e - d)


def require_twin_kinds(dep: Deployment) -> None:
    """Refuse the layers the twin does not run: input layers of neurons (the data as their bias,
    ``--input-as bias``, a run that is not attacked)."""
    require_kinds(dep, TWIN_KINDS,
                  f"the differentiable twin runs {' and '.join(TWIN_KINDS)} layers")


def conv_weights(w: torch.Tensor, weight_bits: int) -> torch.Tensor:
    """The integers Lava's fixed-point Conv uses for float mantissas ``w``: rounded, within the
    mixed sign mode's clip range (as ``quantize.validation.check_conv`` requires); no grid."""
    lo, hi = lava.weight_clip_range("mixed", weight_bits)
    return ste(w, lambda z: torch.clamp(torch.round(z), lo, hi))


def conv_drive(s: torch.Tensor, w: torch.Tensor, g: ConvGeometry, shift: float
               ) -> tuple[torch.Tensor, float]:
    """(T, B, C_in H W) spikes or levels -> ((T, B, C_out H' W') what enters u, its peak): the
    exact correlation (``ConvSynapses.apply``: every partial sum an integer below ``worst``, exact
    in float32 on CPU while worst < 2**24, else in float64; cuDNN off), wrapped into 24 bits
    (straight through), shifted into u (no int32 wrap can follow the 24-bit one)."""
    steps, batch = s.shape[0], s.shape[1]
    rows = w.detach().abs().reshape(w.shape[0], -1).sum(dim=1)
    worst = abs_max(s) * float(rows.max()) if w.numel() else 0.0
    if worst >= 2.0**53:
        raise UserError(f"a conv sum can reach {worst:.3g}, beyond the 2**53 up to which the"
                        " twin's float64 convolution is exact")
    dtype = torch.float32 if s.device.type == "cpu" and worst < 1 << 24 else torch.float64
    x = s.reshape(steps * batch, *g.in_shape).to(dtype)
    with torch.backends.cudnn.flags(enabled=False):
        a = torch.nn.functional.conv2d(x, w.to(dtype), stride=tuple(g.stride),
                                       padding=tuple(g.padding), dilation=tuple(g.dilation),
                                       groups=g.groups)
    a = a.reshape(steps, batch, -1).to(torch.float64)
    if worst >= CONV_WRAP:
        a = ste(a, lambda z: torch.remainder(z + CONV_WRAP, 2 * CONV_WRAP) - CONV_WRAP)
    return a * shift, min(worst, CONV_WRAP) * shift


def delayed(a: torch.Tensor, delays: np.ndarray | None) -> torch.Tensor:
    """(T, B, n) synaptic input -> neuron j's column d_j steps later, zeros before (Lava's
    DelayDense, as ``LayerConstants.delayed``); a gather, so gradients follow the shift."""
    if delays is None or not np.any(delays):
        return a
    d = torch.as_tensor(np.asarray(delays, dtype=np.int64), device=a.device)
    steps = a.shape[0]
    src = torch.arange(steps, device=a.device)[:, None] - d[None, :]  # (T, n)
    index = src.clamp(min=0)[:, None, :].expand(steps, a.shape[1], a.shape[2])
    return torch.gather(a, 0, index) * (src >= 0)[:, None, :].to(a.dtype)
