"""NIR layer chain + Profile -> Deployment: Loihi 2 CUBA LIF fixed-point quantization.

Lava's fixed-point LIF (lava/proc/lif/models.py, ``AbstractPyLifModelFixed``) computes per step

    u <- trunc(u * (4096 - (du + 1)) / 4096) + (a_in << 6)        (u wraps in 24 bits)
    v <- trunc(v * (4096 - dv) / 4096) + u + (bias_mant << bias_exp)   (v saturates)
    spike = v > (vth << 6);  v <- 0 on spike

and its Dense adds ``(sum_j w_ij s_j) << weight_exp`` one step later. Matching the float chain of
``convert.nirgraph`` term by term, with one shared scale ``s`` (integer units per float voltage
unit) per layer so that ``v > theta`` keeps its meaning after rounding:

    du + 1 = 4096 * (1 - syn_keep)          dv = 4096 * mem_gain (0 for IF)
    w_mant * 2**(weight_exp + 6) = s * mem_gain * r * w_in * W
    vth * 2**6 = s * v_threshold            bias_mant * 2**bias_exp = s * (per-step voltage bias)

``s`` is the largest value for which the mantissas fit the Dense grid, vth fits its 17 bits and the
calibrated peak of |u| stays within half the 24-bit range. The formats themselves are the
profile's, within Lava's (snn_deploy/lava_formats.py); the Dense weight grid and sign modes are
in ``quantize.dense_grid``.

A native conv layer (``FloatLayer.conv``) becomes a Lava Conv (kind "conv"), which applies no
weight exponent: its exponent is 0 and ``s`` the largest value for which the kernel's mantissas
fit the same grid (so a conv whose dense lowering gets exponent 0 quantizes to the same integers).

Every layer's ``LayerStats`` says what hit a range limit: weights and biases clipped, and a
threshold clipped at vth_max or rounded down to 0 (the neuron then fires whenever v > 0); each
such layer is also named in a warning, which ``api.deploy`` passes on to the CLI.
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np

from snn_deploy.convert.conv import per_row
from snn_deploy.convert.nirgraph import FloatLayer, FloatNetwork
from snn_deploy.errors import QuantizationError
from snn_deploy.profiles import Profile
from snn_deploy.quantize.dense_grid import WeightGrid, sign_mode_of, weight_grid
from snn_deploy.quantize.deployment import (
    Deployment,
    LayerStats,
    QuantLayer,
    RecurrentSynapse,
)

# Share of the 24-bit state range the calibrated peak of |u| may use: the rest is headroom for
# inputs stronger than the calibration set's (u wraps around on overflow, which is catastrophic).
U_HEADROOM = 0.5


def _uniform(values: np.ndarray, what: str, layer: FloatLayer) -> float:
    if not np.allclose(values, values[0], rtol=1e-6, atol=0):
        raise QuantizationError(
            f"layer {layer.neuron!r}: {what} differs between neurons"
            f" ({values.min():.6g}..{values.max():.6g}); a Loihi 2 LIF process has one value"
        )
    return float(values[0])


def _split_bias(bias_int: np.ndarray, profile: Profile) -> tuple[np.ndarray, np.ndarray, int]:
    """Integer bias -> (mantissa, exponent, number saturated) with the smallest exponent that fits."""
    mant_max = profile.bias_mant_max
    mag = np.abs(bias_int)
    exp = np.zeros(bias_int.shape, dtype=np.int32)
    big = mag > mant_max
    exp[big] = np.ceil(np.log2(mag[big] / mant_max))
    exp = np.clip(exp, 0, profile.bias_exp_max).astype(np.int32)
    saturated = int(np.sum(mag > mant_max * 2.0**profile.bias_exp_max))
    mant = np.clip(np.round(bias_int / 2.0**exp), -mant_max - 1, mant_max)
    return mant.astype(np.int32), exp, saturated


def _full_range(w_eff: np.ndarray, grid: WeightGrid) -> float:
    """Mantissa units per unit of w_eff that use the grid's range on the larger side."""
    pos, neg = float(w_eff.max(initial=0.0)), float(-w_eff.min(initial=0.0))
    return min(grid.high / pos if pos > 0 else math.inf, -grid.low / neg if neg > 0 else math.inf)


def _mantissas(w_eff: np.ndarray, grid: WeightGrid, *, scale: float, unit: float
               ) -> tuple[np.ndarray, int]:
    """Round ``w_eff * scale / unit`` onto the grid; returns (int32 mantissas, number clipped)."""
    raw = np.round(w_eff * scale / unit / grid.step) * grid.step
    saturated = int(np.sum((raw < grid.low) | (raw > grid.high)))
    return np.clip(raw, grid.low, grid.high).astype(np.int32), saturated


def _recurrent(layer: FloatLayer, profile: Profile, gain: np.ndarray, scale: float
               ) -> tuple[RecurrentSynapse | None, int]:
    """The recurrent Dense at the layer's scale, with the exponent that fits its mantissas."""
    if layer.recurrent is None:
        return None, 0
    r_eff = gain[:, None] * layer.recurrent
    sign_mode = sign_mode_of(r_eff)
    grid = weight_grid(profile, sign_mode)
    k = _full_range(r_eff, grid)
    act = profile.activation_shift
    exp = 0 if math.isinf(k) else int(np.clip(math.ceil(math.log2(scale / k)) - act,
                                              profile.weight_exp_min, profile.weight_exp_max))
    weights, saturated = _mantissas(r_eff, grid, scale=scale, unit=2.0**(exp + act))
    return RecurrentSynapse(weights=weights, weight_exp=exp, sign_mode=sign_mode,
                            num_weight_bits=profile.num_weight_bits), saturated


def bias_transient(drive: np.ndarray, *, syn_keep: float, v_keep: float) -> tuple[float, int]:
    """Largest |v difference| (float voltage units) and the step it occurs at, between a bias that
    enters the current (NIR) and its steady state added to v from the first step (Loihi 2):

        e_t = b k^t / (1 - k)   (the current NIR lacks at step t, k = syn_keep)
        d_t = v_keep d_{t-1} + gain e_t,   d_0 = 0

    ``drive`` is gain * b per neuron; v_keep is 1 - mem_gain (1 for an IF); spikes are ignored.
    """
    excess = np.abs(drive) / (1.0 - syn_keep)
    d = np.zeros_like(excess)
    peak, at, t = 0.0, 1, 0
    while True:
        t += 1
        excess = excess * syn_keep
        d = v_keep * d + excess
        if float(d.max()) > peak:
            peak, at = float(d.max()), t
        if syn_keep ** t < 1e-9 or t >= 100_000:  # d only decays (or stays) from here on
            return peak, at


def _warn_limits(layer: FloatLayer, *, theta: float, vth: int, vth_raw: int, profile: Profile,
                 weights_saturated: int, bias_saturated: int, weights_lost: bool) -> None:
    """One warning naming what of ``layer`` hit a limit of the profile's formats, if anything."""
    problems = []
    if vth == 0:
        problems.append(f"v_threshold {theta:.6g} rounds to vth = 0 (the neuron fires whenever"
                        " v > 0): the layer's other values force too small a scale")
    elif vth != vth_raw:
        problems.append(f"v_threshold {theta:.6g} needs vth = {vth_raw}, clipped to"
                        f" {profile.vth_max} ({profile.threshold_bits} bits)")
    if weights_saturated:
        problems.append(f"{weights_saturated} weights clipped at the {profile.weight_bits}-bit"
                        " mantissa range")
    if bias_saturated:
        problems.append(f"{bias_saturated} biases clipped at {profile.bias_mant_max}"
                        f" << {profile.bias_exp_max}")
    if weights_lost:
        problems.append("every weight rounds to 0 (the layer gets no input)")
    if problems:
        warnings.warn(f"layer {layer.neuron!r} saturates the profile's formats: "
                      + "; ".join(problems), stacklevel=3)


def _check_values(layer: FloatLayer, u_peak: float) -> None:
    """Refuse an empty layer and NaN or inf parameters, naming them."""
    if layer.weight.ndim != (2 if layer.conv is None else 4) or min(layer.weight.shape) < 1:
        raise QuantizationError(f"layer {layer.neuron!r}: weights of shape {layer.weight.shape}:"
                                " a layer needs at least one input and one neuron")
    spec = layer.spec
    values = {"weight": layer.weight, "bias": layer.bias, "recurrent weight": layer.recurrent,
              "recurrent bias": layer.recurrent_bias, "syn_keep": spec.syn_keep,
              "mem_gain": spec.mem_gain, "r": spec.r, "w_in": spec.w_in, "v_leak": spec.v_leak,
              "v_threshold": spec.v_threshold, "v_reset": spec.v_reset,
              "peak |u|": np.asarray(u_peak)}
    bad = [name for name, v in values.items()
           if v is not None and not np.all(np.isfinite(np.asarray(v, dtype=np.float64)))]
    if bad:
        raise QuantizationError(f"layer {layer.neuron!r}: non-finite values (NaN or inf) in"
                                f" {', '.join(bad)}")


@dataclasses.dataclass(frozen=True)
class _Dynamics:
    """A layer's neuron constants, uniform over its neurons, in float voltage units."""

    syn_keep: float
    mem_gain: float
    theta: float  # v_threshold - v_reset: the layer runs shifted by -v_reset
    v_reset: float


@dataclasses.dataclass(frozen=True)
class _Drive:
    """A layer's float input terms, in float voltage units per step."""

    gain: np.ndarray  # (n,) voltage per unit of synaptic input
    w_eff: np.ndarray  # (n, m) effective weights
    bias_in: np.ndarray  # (n,) the Affine bias (recurrent bias included) entering the current
    bias_v: np.ndarray  # (n,) the per-step voltage bias Loihi 2 adds


@dataclasses.dataclass(frozen=True)
class _Scale:
    """The shared scale ``s`` (integer units per float voltage unit) and the weight exponent."""

    weight_exp: int
    scale: float


def _dynamics(layer: FloatLayer) -> _Dynamics:
    """The layer's uniform constants; warns when v_reset is not 0 (Loihi 2 resets to 0).

    Raises:
        QuantizationError: a constant that differs between neurons, or v_threshold <= v_reset.
    """
    spec = layer.spec
    syn_keep = _uniform(spec.syn_keep, "the synaptic time constant", layer)
    mem_gain = _uniform(spec.mem_gain, "the membrane time constant", layer)
    theta = _uniform(spec.v_threshold, "v_threshold", layer)
    # A Loihi 2 LIF resets v to 0: run the layer in v' = v - v_reset, which moves the threshold
    # and the leak target by -v_reset and is exact except that v' starts at 0, not -v_reset.
    v_reset = _uniform(spec.v_reset, "v_reset", layer)
    if v_reset != 0:
        warnings.warn(
            f"layer {layer.neuron!r}: v_reset = {v_reset:.6g}, but a Loihi 2 LIF resets to 0; the"
            f" layer runs shifted by -v_reset (threshold {theta:.6g} -> {theta - v_reset:.6g}),"
            f" exact after the first spike, but v starts {-v_reset:.6g} away from NIR's v = 0",
            stacklevel=3,
        )
        theta = theta - v_reset
    if theta <= 0:
        raise QuantizationError(f"layer {layer.neuron!r}: v_threshold - v_reset = {theta:.6g}"
                                " must be > 0 (v would spike at rest)")
    return _Dynamics(syn_keep=syn_keep, mem_gain=mem_gain, theta=theta, v_reset=v_reset)


def _drive(layer: FloatLayer, dyn: _Dynamics, *, input_scale: int) -> _Drive:
    """Effective weights and per-step voltage bias; refuses values that overflow float64."""
    spec = layer.spec
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is refused just below
        gain = dyn.mem_gain * spec.r * spec.w_in  # (n,) voltage per unit of synaptic input
        w_eff = per_row(gain, layer.weight) * layer.weight / input_scale
        # Per-step voltage bias: v_leak through the leak term, the Affine bias through the
        # current (exact when the current does not persist, its steady state b / (1 - syn_keep)
        # otherwise).
        bias_in = layer.bias if layer.recurrent_bias is None else layer.bias + layer.recurrent_bias
        bias_v = gain * bias_in / max(1.0 - dyn.syn_keep, 1e-12)
        if spec.leak:
            bias_v = bias_v + dyn.mem_gain * (spec.v_leak - dyn.v_reset)
    if layer.conv is not None:  # one kernel per output channel: one gain per channel
        _uniform_channels(gain, layer)
    if not all(np.all(np.isfinite(x)) for x in (gain, w_eff, bias_v)):
        raise QuantizationError(f"layer {layer.neuron!r}: its effective weights or bias overflow"
                                " float64 (values near 1e308): no scale represents them")
    return _Drive(gain=gain, w_eff=w_eff, bias_in=bias_in, bias_v=bias_v)


def _uniform_channels(gain: np.ndarray, layer: FloatLayer) -> None:
    per_channel = gain.reshape(layer.weight.shape[0], -1)
    if not np.allclose(per_channel, per_channel[:, :1], rtol=1e-6, atol=0):
        raise QuantizationError(f"layer {layer.neuron!r}: mem_gain * r * w_in differs between"
                                " the neurons of an output channel; a Lava Conv shares its kernel")


def _warn_bias_transient(layer: FloatLayer, dyn: _Dynamics, drive: _Drive) -> None:
    """Warn how far moving a persistent current's bias onto v shifts v from NIR's, if at all."""
    if not (dyn.syn_keep > 0 and np.any(drive.bias_in != 0)):
        return
    v_keep = 1.0 - dyn.mem_gain if layer.spec.leak else 1.0
    peak, step = bias_transient(drive.gain * drive.bias_in, syn_keep=dyn.syn_keep, v_keep=v_keep)
    when = "and keeps it (no leak)" if v_keep >= 1.0 else \
        f"largest at step {step} of every sample, without spikes"
    warnings.warn(
        f"layer {layer.neuron!r}: the Affine bias enters the synaptic current in NIR but the"
        f" voltage on Loihi 2; using its steady state from the first step, which NIR's current"
        f" reaches after ~{1 / (1 - dyn.syn_keep):.1f} steps, moves v by up to"
        f" {peak / dyn.theta:.3g} threshold(s) from NIR's ({when})", stacklevel=3,
    )


def _fit_scale(layer: FloatLayer, profile: Profile, *, theta: float, u_peak: float,
               bias_v: np.ndarray, full_range: float) -> _Scale:
    """The largest ``s`` that keeps vth, the calibrated peak |u| and the biases in range, and the
    weight exponent at which the weights (``full_range``: ``_full_range``) best use the grid
    (a conv: exponent 0, and ``s`` no larger than puts its weights on the grid at exponent 0).

    Raises:
        QuantizationError: no positive finite scale fits.
    """
    limits = [profile.vth_max * 2.0**profile.threshold_shift / theta]
    if u_peak > 0:
        limits.append(U_HEADROOM * profile.state_max / u_peak)
    bias_peak = float(np.abs(bias_v).max(initial=0.0))
    if bias_peak > 0:
        limits.append(profile.bias_mant_max * 2.0**profile.bias_exp_max / bias_peak)
    s_limit = min(limits)
    if not (math.isfinite(s_limit) and s_limit > 0):
        raise QuantizationError(
            f"layer {layer.neuron!r}: no scale represents it (threshold {theta:.6g}, peak |u|"
            f" {u_peak:.6g}, peak bias {bias_peak:.6g} voltage units): values beyond the"
            f" profile's {profile.state_bits}-bit state and {profile.threshold_bits}-bit threshold"
        )
    if math.isinf(full_range):  # all weights zero: any exponent represents them
        return _Scale(weight_exp=0, scale=s_limit)
    act = profile.activation_shift
    if layer.conv is not None:  # Lava's Conv applies no weight exponent
        return _Scale(weight_exp=0, scale=min(full_range * 2.0**act, s_limit))
    exp = int(np.clip(math.floor(math.log2(s_limit / full_range)) - act,
                      profile.weight_exp_min, profile.weight_exp_max))
    return _Scale(weight_exp=exp, scale=min(full_range * 2.0**(exp + act), s_limit))


def quantize_layer(layer: FloatLayer, profile: Profile, *, u_peak: float,
                   input_scale: int, num_message_bits: int) -> QuantLayer:
    """Quantize one synapse->neuron layer; ``u_peak`` is the peak |u| in float voltage units.

    Raises:
        QuantizationError: non-finite values, parameters that differ between neurons, a
            threshold at or below the reset, or values no scale can represent.
    """
    _check_values(layer, u_peak)
    spec = layer.spec
    dyn = _dynamics(layer)
    theta = dyn.theta
    unity = profile.decay_unity
    du = int(np.clip(round(unity * (1.0 - dyn.syn_keep)) - profile.du_offset, 0, unity - 1))
    dv_max = unity - profile.dv_offset  # dv + dv_offset <= unity: v keeps >= 0 of itself
    dv = int(np.clip(round(unity * dyn.mem_gain) - profile.dv_offset, 0, dv_max)) if spec.leak else 0
    drive = _drive(layer, dyn, input_scale=input_scale)
    _warn_bias_transient(layer, dyn, drive)
    sign_mode = sign_mode_of(drive.w_eff)
    grid = weight_grid(profile, sign_mode)
    fit = _fit_scale(layer, profile, theta=theta, u_peak=u_peak, bias_v=drive.bias_v,
                     full_range=_full_range(drive.w_eff, grid))
    exp, scale = fit.weight_exp, fit.scale
    unit = 2.0**(exp + profile.activation_shift)
    weights, saturated = _mantissas(drive.w_eff, grid, scale=scale, unit=unit)
    recurrent, rec_saturated = _recurrent(layer, profile, drive.gain, scale)
    vth_raw = round(theta * scale / 2.0**profile.threshold_shift)
    vth = int(np.clip(vth_raw, 0, profile.vth_max))
    bias_mant, bias_exp, bias_sat = _split_bias(np.round(drive.bias_v * scale), profile)
    _warn_limits(layer, theta=theta, vth=vth, vth_raw=vth_raw, profile=profile,
                 weights_saturated=saturated + rec_saturated, bias_saturated=bias_sat,
                 weights_lost=bool(np.any(drive.w_eff != 0) and not np.any(weights)))
    return QuantLayer(
        synapse=layer.synapse, neuron=layer.neuron, weights=weights, weight_exp=exp,
        sign_mode=sign_mode, num_weight_bits=profile.num_weight_bits,
        num_message_bits=num_message_bits, du=du, dv=dv, vth=vth,
        bias_mant=bias_mant, bias_exp=bias_exp, scale=float(scale), recurrent=recurrent,
        kind="dense" if layer.conv is None else "conv", shape=layer.shape,
        conv=layer.conv,
        stats=LayerStats(
            weights_total=int(weights.size) + (0 if recurrent is None else recurrent.weights.size),
            weights_saturated=saturated + rec_saturated,
            threshold_saturated=bool(vth != vth_raw or vth == 0), bias_saturated=bias_sat,
            u_peak_share=float(u_peak * scale / profile.state_max),
        ),
    )


def u_peak_bound(layer: FloatLayer) -> float:
    """Worst-case |u| (float voltage units) for inputs in [0, 1]: every input active at once."""
    spec = layer.spec
    with np.errstate(over="ignore", invalid="ignore"):  # inf: quantize_layer refuses it
        gain = spec.mem_gain * spec.r * spec.w_in
        rows = np.abs(layer.weight).reshape(layer.weight.shape[0], -1).sum(axis=1)
        # a conv: the full kernel's sum for every neuron of its channel (an upper bound at borders)
        drive = np.repeat(rows, layer.size // rows.size) + np.abs(layer.bias)
        if layer.recurrent is not None and layer.recurrent_bias is not None:
            drive = drive + np.abs(layer.recurrent).sum(axis=1) + np.abs(layer.recurrent_bias)
        return float(np.max(np.abs(gain) * drive / np.maximum(1.0 - spec.syn_keep, 1e-12),
                            initial=0.0))


def quantize_network(net: FloatNetwork, profile: Profile, *, graded_input: bool,
                     u_peaks: list[float] | None, source_sha256: str, source_nir: bytes,
                     calibration: str) -> Deployment:
    """Quantize every layer of ``net`` for ``profile``.

    Args:
        graded_input: the input is a value per step (direct coding), sent as graded spikes of
            ``profile.input_graded_bits`` bits, rather than binary spikes.
        u_peaks: calibrated peak |u| per layer (float voltage units); None uses the worst-case bound.
    """
    input_scale = (1 << profile.input_graded_bits) - 1 if graded_input else 1
    layers = []
    for i, layer in enumerate(net.layers):
        peak = u_peaks[i] if u_peaks is not None else u_peak_bound(layer)
        layers.append(quantize_layer(
            layer, profile, u_peak=peak,
            input_scale=input_scale if i == 0 else 1,
            num_message_bits=profile.input_graded_bits if (graded_input and i == 0) else 0,
        ))
    return Deployment(
        profile=profile, layers=tuple(layers), input_size=net.input_size,
        input_scale=input_scale, dt=net.dt, coding=net.coding,
        source_sha256=source_sha256, source_nir=source_nir, calibration=calibration,
    )
