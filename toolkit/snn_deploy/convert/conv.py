"""A NIR Conv2d kept as a native conv layer, not lowered to a dense matrix.

When the linear nodes between two neurons are a single ``Conv2d`` (bias optional) on (C, H, W)
input, with symmetric padding (torch's and Lava's ``Conv`` pad both sides alike) and no recurrent
synapse on the neuron, ``convert.nirgraph`` keeps it native: the layer's ``weight`` is the float
kernel (C_out, C_in / groups, kH, kW), its ``conv`` the geometry below, its bias one value per
neuron (the per-channel bias repeated over H x W, as the dense lowering has it). Every other chain
(pooling, Flatten + Affine, a conv followed by a pool, a Conv1d, 'same' padding that is asymmetric)
is composed into one dense matrix (``convert.lowering``). ``quantize.fixed_point`` hands the
geometry to the Deployment's conv layer as it is.
"""

from __future__ import annotations

import dataclasses
import math

import nir
import numpy as np

from snn_deploy.convert.lowering import (
    MAX_DENSE_ELEMENTS,
    AffineMap,
    _ints,
    _padding,
    _window_matrix,
    compose,
    float_array,
)
from snn_deploy.errors import UnsupportedNode, UserError


@dataclasses.dataclass(frozen=True)
class ConvGeometry:
    """A 2-D convolution's geometry, the same for the float layer and the Deployment: torch's
    ``conv2d`` (a cross-correlation) of channel-first (C, H, W) input with a (C_out, C_in / groups,
    kH, kW) kernel, zero padding on both sides, per group; (stride, padding, dilation) are (H, W)
    pairs. Lava's ``Conv`` computes the same on (W, H, C) arrays (``run.lava_layers``); its
    fixed-point form is in ``quantize.deployment.QuantLayer``. Shapes: out = floor((in + 2 p -
    d (k - 1) - 1) / s) + 1 per axis (lava/proc/conv/utils.py ``output_shape``)."""

    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    kernel: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1

    @staticmethod
    def output_hw(in_hw: tuple[int, int], kernel: tuple[int, int], stride: tuple[int, int],
                  padding: tuple[int, int], dilation: tuple[int, int]) -> tuple[int, int]:
        return tuple((i + 2 * p - d * (k - 1) - 1) // s + 1  # type: ignore[return-value]
                     for i, k, s, p, d in zip(in_hw, kernel, stride, padding, dilation))


@dataclasses.dataclass(frozen=True)
class ConvMap:
    """A native conv synapse: ``weight`` (C_out, C_in / groups, kH, kW), ``bias`` (n,) per neuron."""

    weight: np.ndarray
    bias: np.ndarray
    out_shape: tuple[int, int, int]
    conv: ConvGeometry


def native_conv(nodes: list[tuple[str, nir.NIRNode]], shape: tuple[int, ...]) -> ConvMap | None:
    """The run of linear ``nodes`` on input of ``shape`` as a native conv, or None when it is not
    a single Conv2d that a Lava Conv runs as it is (then the dense lowering takes it, and reports
    whatever is wrong with it)."""
    if len(nodes) != 1 or not isinstance(nodes[0][1], nir.Conv2d) or len(shape) != 3:
        return None
    node = nodes[0][1]
    try:
        weight = float_array(node.weight, "weight")
        if weight.ndim != 4:
            return None
        kernel = (int(weight.shape[2]), int(weight.shape[3]))
        dilation = _ints(node.dilation, 2, "dilation")
        stride = _ints(node.stride, 2, "stride")
        lo, hi = _padding(node.padding, kernel, dilation)
        groups = _ints(node.groups, 1, "groups")[0]
    except UnsupportedNode:
        return None
    c_out, c_group = int(weight.shape[0]), int(weight.shape[1])
    if lo != hi or c_group * groups != shape[0] or c_out % groups:
        return None
    out_hw = tuple((i + 2 * p - d * (k - 1) - 1) // s + 1
                   for i, k, s, p, d in zip(shape[1:], kernel, stride, lo, dilation))
    if min(out_hw) < 1:
        return None
    geometry = ConvGeometry(in_shape=tuple(shape), out_shape=(c_out, *out_hw), kernel=kernel,
                         stride=stride, padding=lo, dilation=dilation, groups=groups)
    per_channel = np.zeros(c_out)
    if getattr(node, "bias", None) is not None:
        per_channel = float_array(node.bias, "bias").reshape(-1)
        if per_channel.size != c_out:
            return None
    bias = np.repeat(per_channel, out_hw[0] * out_hw[1])
    return ConvMap(weight=weight, bias=bias, out_shape=geometry.out_shape, conv=geometry)


def synapse_map(nodes: list[tuple[str, nir.NIRNode]], shape: tuple[int, ...], *, neuron: str,
                native: bool) -> AffineMap | ConvMap:
    """The linear ``nodes`` (name, node) before neuron ``neuron`` on input of ``shape``: a native
    conv (``native`` and a single Conv2d), else composed into one dense map; finite values."""
    amap = native_conv(nodes, shape) if native else None
    n_in = math.prod(shape)
    if not nodes and n_in * n_in > MAX_DENSE_ELEMENTS:  # before np.eye(n_in) is built
        raise UserError(f"node {neuron!r} takes the {n_in} inputs directly: its {n_in} x {n_in}"
                        f" identity weights exceed the {MAX_DENSE_ELEMENTS} one Dense can hold here")
    amap = amap or compose(nodes, shape)
    for what, arr in (("weight", amap.weight), ("bias", amap.bias)):
        if not np.all(np.isfinite(arr)):
            names = ", ".join(repr(name) for name, _ in nodes)
            raise UserError(f"node(s) {names}: {what} holds NaN or Inf")
    return amap


def lowered(weight: np.ndarray, conv: ConvGeometry) -> np.ndarray:
    """The conv as the dense (n_out, n_in) float64 matrix the lowering would have built."""
    matrix, _ = _window_matrix(weight, conv.in_shape, stride=conv.stride, pad_lo=conv.padding,
                               pad_hi=conv.padding, dilation=conv.dilation, groups=conv.groups)
    return matrix.toarray()


def per_row(values: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Per-neuron ``values`` (n,) shaped to multiply ``weight`` row by row: (n, 1) for a dense
    (n, n_in) matrix; for a conv kernel (C_out, ...), the first neuron's value of each output
    channel, (C_out, 1, 1, 1) (a conv shares its kernel over a channel's neurons)."""
    values = np.asarray(values)
    if weight.ndim == 2:
        return values[:, None]
    return values.reshape(weight.shape[0], -1)[:, 0].reshape(-1, *([1] * (weight.ndim - 1)))
