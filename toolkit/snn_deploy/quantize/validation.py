"""The checks behind ``deployment.validate_deployment``: every field of a Deployment against its
profile's formats (themselves within Lava's, snn_deploy/lava_formats.py), per layer kind.

Each check raises one one-line QuantizationError that names the layer (``where``) and the range
or shape it expected. A layer's synapse is a Lava Dense (kind "dense", weights (n, n_in)), a Lava
Conv (kind "conv", ``deployment.ConvGeometry``) or none (kind "input", weights (n, 0), layer 0
only); its neurons are a CUBA LIF population of ``layer.size`` neurons in every kind.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from snn_deploy import lava_formats as lava
from snn_deploy.errors import QuantizationError
from snn_deploy.profiles import Profile

if TYPE_CHECKING:
    from snn_deploy.convert.conv import ConvGeometry
    from snn_deploy.quantize.deployment import Deployment, LayerStats, QuantLayer


def outside(values: np.ndarray, lo: int, hi: int) -> str | None:
    """The span "min..max" of ``values`` when some lie outside lo..hi, else None."""
    if values.size and (values.min() < lo or values.max() > hi):
        return f"{values.min()}..{values.max()}"
    return None


def check_weights(w: np.ndarray, *, sign_mode: str, weight_exp: int, num_weight_bits: int,
                  p: Profile, what: str, clip_mode: str | None = None) -> None:
    """A synapse's mantissas, exponent and weight bits within the profile's formats; the mantissas
    within ``clip_mode``'s clip range (default: the synapse's own sign mode)."""
    if sign_mode not in lava.SIGN_MODES:
        raise QuantizationError(f"{what}: unknown sign mode {sign_mode!r}, expected one of"
                                f" {', '.join(lava.SIGN_MODES)}")
    if not np.issubdtype(w.dtype, np.integer):
        raise QuantizationError(f"{what}: weights of dtype {w.dtype} are not integer mantissas")
    mode = clip_mode or sign_mode
    lo, hi = lava.weight_clip_range(mode, p.weight_bits)
    found = outside(w, lo, hi)
    if found:
        raise QuantizationError(f"{what}: {mode} weights {found} outside {lo}..{hi}"
                                f" ({p.weight_bits}-bit mantissas)")
    if not p.weight_exp_min <= weight_exp <= p.weight_exp_max:
        raise QuantizationError(f"{what}: weight_exp {weight_exp} outside the profile's"
                                f" {p.weight_exp_min}..{p.weight_exp_max}")
    lo, hi = lava.num_weight_bits_range(sign_mode, p.weight_bits)
    if not lo <= num_weight_bits <= hi:
        raise QuantizationError(f"{what}: num_weight_bits {num_weight_bits} outside {lo}..{hi}"
                                f" ({sign_mode} sign mode)")


def check_stats(s: LayerStats, n: int, where: str) -> None:
    ints = (s.weights_total, s.weights_saturated, s.bias_saturated)
    if (not all(isinstance(v, (int, np.integer)) and v >= 0 for v in ints)
            or s.weights_saturated > s.weights_total or s.bias_saturated > n
            or not math.isfinite(s.u_peak_share) or s.u_peak_share < 0):
        raise QuantizationError(
            f"{where}: impossible stats: {s.weights_saturated} of {s.weights_total} weights and"
            f" {s.bias_saturated} of {n} biases saturated, u peak share {s.u_peak_share}"
        )


def check_input(dep: Deployment, origin: str) -> None:
    """Deployment-wide fields: at least one layer, a positive finite dt, an input width and an
    input scale that the first layer's messages can carry."""
    if not dep.layers:
        raise QuantizationError(f"{origin}: the deployment has no layers")
    if dep.input_size < 1:
        raise QuantizationError(f"{origin}: input_size {dep.input_size} must be >= 1")
    if not (math.isfinite(dep.dt) and dep.dt > 0):
        raise QuantizationError(f"{origin}: dt = {dep.dt} must be a finite number > 0 (seconds)")
    bits = dep.layers[0].num_message_bits
    if not 0 <= bits <= lava.MESSAGE_BITS:
        raise QuantizationError(f"{origin}: layer 0: num_message_bits {bits} outside"
                                f" 0..{lava.MESSAGE_BITS}")
    top = (1 << bits) - 1 if bits else 1
    if not 1 <= dep.input_scale <= top:
        how = (f"graded input of {bits} bits carries 1..{top}" if top > 1 else
               "binary input spikes (num_message_bits 0) take input_scale 1")
        raise QuantizationError(f"{origin}: input_scale {dep.input_scale} is impossible: {how}")


def check_shape(layer: QuantLayer, where: str) -> None:
    """The neurons' shape, when set: positive entries; a conv's is its output shape."""
    shape = tuple(layer.shape)
    if shape and (not all(isinstance(d, (int, np.integer)) and d >= 1 for d in shape)):
        raise QuantizationError(f"{where}: neuron shape {shape} must hold positive integers")
    if layer.kind != "conv" and layer.conv is not None:
        raise QuantizationError(f"{where}: a {layer.kind} layer with a conv geometry")


def check_delays(layer: QuantLayer, max_delay: int, where: str) -> None:
    """A DelayDense's delays, when set: a dense layer's, integers 0..max_delay, one per neuron."""
    d = layer.delays
    if d is None:
        return
    if layer.kind != "dense":
        raise QuantizationError(f"{where}: synaptic delays on a {layer.kind} layer: only dense"
                                " layers (Lava's DelayDense) have them")
    d = np.asarray(d)
    if d.shape != (layer.size,) or not np.issubdtype(d.dtype, np.integer):
        raise QuantizationError(f"{where}: delays of shape {d.shape} and dtype {d.dtype}; expected"
                                f" ({layer.size},) integers, one per neuron")
    found = outside(d, 0, max_delay)
    if found:
        raise QuantizationError(f"{where}: delays {found} outside 0..{max_delay} (Lava's DelayDense"
                                " as netx builds it)")


def check_dense(layer: QuantLayer, width: int, p: Profile, where: str) -> None:
    """A Dense from ``width`` inputs: weights (n, width), n = the layer's size."""
    w = layer.weights
    if w.ndim != 2 or w.shape[1] != width or w.shape[0] < 1 or w.shape[0] != layer.size:
        raise QuantizationError(f"{where}: weights of shape {w.shape} do not take {width} inputs"
                                f" to at least one neuron ({layer.size} neurons)")
    check_weights(w, sign_mode=layer.sign_mode, weight_exp=layer.weight_exp,
                  num_weight_bits=layer.num_weight_bits, p=p, what=where)


def check_input_layer(layer: QuantLayer, i: int, input_size: int, p: Profile, where: str) -> None:
    """Neurons without a synapse: the first layer only, one neuron per input value."""
    if i != 0:
        raise QuantizationError(f"{where}: an input layer must be layer 0")
    n = layer.size
    if layer.weights.shape != (n, 0) or n < 1:
        raise QuantizationError(f"{where}: an input layer's weights have shape (n, 0) for its"
                                f" n >= 1 neurons, got {layer.weights.shape} for {n}")
    if n != input_size:
        raise QuantizationError(f"{where}: an input layer of {n} neurons takes {n} input values,"
                                f" not input_size {input_size}")
    if layer.recurrent is not None:
        raise QuantizationError(f"{where}: an input layer has no recurrent synapse")
    check_weights(layer.weights, sign_mode=layer.sign_mode, weight_exp=layer.weight_exp,
                  num_weight_bits=layer.num_weight_bits, p=p, what=where)


def _check_geometry(g: ConvGeometry, where: str) -> None:
    """Whole, positive sizes; Lava's output shape; channels divisible by the groups."""
    pairs = {"kernel": g.kernel, "stride": g.stride, "padding": g.padding, "dilation": g.dilation}
    for name, value in {"in_shape": g.in_shape, "out_shape": g.out_shape, **pairs}.items():
        size = 3 if name.endswith("shape") else 2
        if len(value) != size or not all(isinstance(v, (int, np.integer)) for v in value):
            raise QuantizationError(f"{where}: conv {name} {tuple(value)} is not {size} integers")
    low = min(*g.in_shape, *g.out_shape, *g.kernel, *g.stride, *g.dilation)
    if low < 1 or min(g.padding) < 0 or not isinstance(g.groups, (int, np.integer)) or g.groups < 1:
        raise QuantizationError(f"{where}: conv shapes, kernel {g.kernel}, stride {g.stride},"
                                f" dilation {g.dilation}, groups {g.groups} must be >= 1 and"
                                f" padding {g.padding} >= 0")
    if g.in_shape[0] % g.groups or g.out_shape[0] % g.groups:
        raise QuantizationError(f"{where}: conv channels {g.in_shape[0]} -> {g.out_shape[0]} are"
                                f" not divisible by its {g.groups} groups")
    hw = g.output_hw(g.in_shape[1:], g.kernel, g.stride, g.padding, g.dilation)
    if tuple(g.out_shape[1:]) != tuple(hw):
        raise QuantizationError(f"{where}: a {g.kernel} conv of {tuple(g.in_shape)} (stride"
                                f" {g.stride}, padding {g.padding}, dilation {g.dilation}) gives"
                                f" {(g.out_shape[0], *hw)}, not out_shape {tuple(g.out_shape)}")


def check_conv(layer: QuantLayer, width: int, p: Profile, where: str) -> None:
    """A Lava Conv from ``width`` inputs: its geometry, the (C_out, C_in / groups, kH, kW)
    mantissas within the mixed sign mode's clip range, no exponent, no recurrent synapse."""
    g = layer.conv
    if g is None:
        raise QuantizationError(f"{where}: a conv layer without its conv geometry")
    _check_geometry(g, where)
    if tuple(layer.shape) != tuple(g.out_shape):
        raise QuantizationError(f"{where}: neuron shape {tuple(layer.shape)} is not the conv's"
                                f" out_shape {tuple(g.out_shape)}")
    if int(np.prod(g.in_shape)) != width:
        raise QuantizationError(f"{where}: conv in_shape {tuple(g.in_shape)} does not take the"
                                f" {width} outputs of what feeds it")
    expected = (g.out_shape[0], g.in_shape[0] // g.groups, *g.kernel)
    if layer.weights.shape != expected:
        raise QuantizationError(f"{where}: conv weights of shape {layer.weights.shape}; its"
                                f" geometry needs (C_out, C_in / groups, kH, kW) = {expected}")
    if layer.weight_exp != 0:
        raise QuantizationError(f"{where}: conv weight_exp {layer.weight_exp}: Lava's"
                                " fixed-point Conv applies none, so it must be 0")
    if layer.recurrent is not None:
        raise QuantizationError(f"{where}: a conv layer cannot have a recurrent synapse")
    check_weights(layer.weights, sign_mode=layer.sign_mode, weight_exp=layer.weight_exp,
                  num_weight_bits=layer.num_weight_bits, p=p, what=where, clip_mode="mixed")


def check_neurons(layer: QuantLayer, p: Profile, where: str) -> None:
    """The LIF population's per-neuron arrays, decays, threshold, message bits and stats."""
    n = layer.size
    if layer.bias_mant.shape != (n,) or layer.bias_exp.shape != (n,):
        raise QuantizationError(f"{where}: bias arrays do not have shape ({n},)")
    rec = layer.recurrent
    if rec is not None:
        if rec.weights.shape != (n, n):
            raise QuantizationError(f"{where}: recurrent weights of shape {rec.weights.shape};"
                                    f" expected ({n}, {n})")
        check_weights(rec.weights, sign_mode=rec.sign_mode, weight_exp=rec.weight_exp,
                      num_weight_bits=rec.num_weight_bits, p=p, what=f"{where} recurrent")
    if not 0 <= layer.num_message_bits <= lava.MESSAGE_BITS:
        raise QuantizationError(f"{where}: num_message_bits {layer.num_message_bits} outside"
                                f" 0..{lava.MESSAGE_BITS}")
    du_max = p.decay_unity - max(p.du_offset, 1)  # 12-bit du, and du + du_offset <= 4096
    dv_max = p.decay_unity - p.dv_offset  # dv = 4096 (dm_offset 0) forgets v each step
    if not (0 <= layer.du <= du_max and 0 <= layer.dv <= dv_max):
        raise QuantizationError(f"{where}: du={layer.du}, dv={layer.dv} outside 0..{du_max},"
                                f" 0..{dv_max} ({p.decay_bits}-bit decays)")
    if not 0 <= layer.vth <= p.vth_max:
        raise QuantizationError(f"{where}: vth={layer.vth} outside 0..{p.vth_max}")
    found = outside(layer.bias_mant, -p.bias_mant_max - 1, p.bias_mant_max)
    if found:
        raise QuantizationError(f"{where}: bias_mant {found} outside {-p.bias_mant_max - 1}.."
                                f"{p.bias_mant_max} ({p.bias_mant_bits}-bit signed)")
    found = outside(layer.bias_exp, 0, p.bias_exp_max)
    if found:
        raise QuantizationError(f"{where}: bias_exp {found} outside 0..{p.bias_exp_max}")
    if not (math.isfinite(layer.scale) and layer.scale > 0):
        raise QuantizationError(f"{where}: scale {layer.scale} must be a finite number > 0")
    check_stats(layer.stats, n, where)
