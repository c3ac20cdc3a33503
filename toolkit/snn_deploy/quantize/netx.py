"""lava-dl netx HDF5 networks <-> Deployment (stage 3: exchange of fixed-point networks).

A netx file (lava-dl 0.6, ``lava/lib/dl/netx/hdf5.py``) holds groups ``layer/0..n-1``, each with a
``type`` and a ``shape``. ``netx.hdf5.Network`` turns a ``dense`` layer into a Lava ``Dense``
feeding a Lava ``LIF`` (CUBA or LOIHI neuron), which computes per step (units: Lava integers)

    a(t+1) = shift(sum_j W'_ij s_j(t), weight_exp)       (Dense, one step late)
    u <- trunc(u * (4096 - iDecay) / 4096) + (a << 6)    (du = iDecay - 1)
    v <- trunc(v * (4096 - vDecay) / 4096) + u + (bias << 6)
    spike = v > (vThMant << 6);  v <- 0 on spike

where ``W'``, ``weight_exp`` and ``num_weight_bits`` come from netx's own ``optimize_weight_bits``
(``lava/lib/dl/netx/utils.py``) applied to the stored weights ``W``: ``W' = W << s``,
``weight_exp = -s`` with ``s`` the largest shift that keeps ``W'`` in 8 bits. netx passes no sign
mode: Lava's Dense picks it from ``W'`` (``determine_sign_mode``) and clips and truncates ``W'`` to
its grid. The file's ``wgtExp`` and ``refDelay`` are ignored by netx; its bias exponent is always 6.
So a netx file holds 8-bit weights at exponent 0, in units of ``1 << 6`` on ``u``: the mapping is
lossless for weights in [-256, 254] except where netx's and Lava's sign-mode rules disagree (a
weight matrix with no positive entry whose minimum is -2**k: Lava clips -256 to -255). ``read_netx``
reproduces netx's parameters exactly, quirks included, and counts the weights netx changed.

A ``conv`` layer is lowered to a Dense on C-major (C, H, W) vectors (``_read_conv``), exact
where a Dense can sum what Lava's Conv sums, refused where it cannot.

What a Deployment cannot hold raises ``UnsupportedNode`` listing every offending layer: pool
and the other non-dense, non-conv types, complex dense layers, non-zero synaptic delays,
neurons other than CUBA/LOIHI, dense layers without a neuron (netx gives them a non-leaking
integrator with threshold 131072 that never spikes), and an input layer with a neuron: netx
builds it as a LIF driven only through its bias (its input port is connected to nothing in
lava-dl 0.6), so external spikes cannot reach it. ``skip_layers`` / ``num_layers``
select layers exactly as the same arguments of ``netx.hdf5.Network`` do: ``skip_layers=1`` drops
such an input layer and feeds the spikes straight into the first dense layer, as netx does.
A neuron's ``messageBits`` becomes the next Dense's ``num_message_bits`` as in netx; Lava's LIF
still sends 0/1 spikes, so between layers this changes nothing (netx ignores ``gradedSpike``, and
so does this import, with a warning).

The reverse direction, ``write_netx``, is exact or refuses: a layer whose effective weights
``W * 2**weight_exp`` are not integers netx reproduces losslessly, or whose bias is not a multiple
of ``1 << 6``, raises ``QuantizationError``. Deployments quantized with weight exponents above 0
(the ``loihi2`` profile's usual choice) do not fit netx's format; quantize with a profile whose
``[weights] exp_min = exp_max = 0`` to export. The file also records, as HDF5 attributes netx
ignores, the Deployment's own parameterisation (weight exponent, sign mode, bias exponents,
names, coding, dt), so that ``read_netx(write_netx(dep))`` gives back the same integers; they are
used only after checking that they describe the same integer arithmetic as the netx data.

Timing: netx's ``Network`` is the same Dense -> LIF chain as the ``lava-sim`` backend, one step of
Dense delay per layer, so with L dense layers its output for input step t appears at Lava step
t + L, exactly where ``run_lava_sim`` reads it; there is no further offset (tests/test_netx.py
checks this spike for spike, and that a one-step shift would not match).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import warnings
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from snn_deploy import lava_formats as lava
from snn_deploy.convert.nirfile import read_coding
from snn_deploy.errors import InputFileError, ProfileError, QuantizationError, UnsupportedNode
from snn_deploy.fileio import atomic_path
from snn_deploy.hdf5_limits import check_declared_sizes
from snn_deploy.profiles import Profile
from snn_deploy.quantize.deployment import (
    Deployment,
    LayerStats,
    QuantLayer,
    RecurrentSynapse,
    validate_deployment,
)
from snn_deploy.quantize.fixed_point import lava_dense_grid, sign_mode_of

# Formats netx's mapping assumes, read in Lava 0.10 and lava-dl 0.6; a profile that differs
# would give the same integers another meaning.
# The number formats a netx file assumes: Lava's own (lava_formats.py cites where each is set);
# netx/hdf5.py get_neuron_params reads 'du' as iDecay - 1 and 'dv' as vDecay.
LAVA_FORMATS = {
    "weight_bits": lava.WEIGHT_BITS,
    "decay_bits": lava.DECAY_BITS,
    "du_offset": lava.DU_OFFSET,
    "dv_offset": lava.DV_OFFSET,
    "activation_shift": lava.ACTIVATION_SHIFT,
    "threshold_shift": lava.THRESHOLD_SHIFT,
}
NETX_BIAS_EXP = 6  # netx/hdf5.py get_neuron_params: 'bias_exp': 6 for CUBA/LOIHI neurons
NETX_WEIGHT_BITS = lava.WEIGHT_BITS  # netx/utils.py optimize_weight_bits: "standard 8 bit signed"
NETX_LIF_NEURONS = ("CUBA", "LOIHI")  # netx/hdf5.py: both become lava.proc.lif LIF
# slayer/neuron/cuba.py neuron_params(scale=1 << 6): vThMant = 64 * threshold, weights x 64; with
# Lava's threshold shift, 4096 integer voltage units per SLAYER voltage unit.
SLAYER_SCALE = float((1 << 6) << LAVA_FORMATS["threshold_shift"])
DEFAULT_STEPS = 32  # coding steps of a file without simulation/tSample
FORMAT_TAG = "snn-deploy-netx"  # root attribute of files written by write_netx
FORMAT_VERSION = 1
_SUPPORTED_TYPES = ("input", "flatten", "dense", "dense_rec", "conv")
_NETX_SIGN_MODES = ("mixed", "excitatory", "inhibitory")


@dataclasses.dataclass(frozen=True)
class NetxSynapse:
    """The Lava ``Dense`` parameters netx derives from a stored weight matrix.

    ``weights`` (int32, on Lava's grid for ``sign_mode``) are what Lava's fixed-point Dense
    multiplies with; ``changed`` counts the weights whose effective value ``weights *
    2**weight_exp`` differs from the stored one (netx's clip at 254 / -256, Lava's clip at -255).
    """

    weights: np.ndarray
    weight_exp: int
    num_weight_bits: int
    sign_mode: str
    changed: int


def netx_synapse(weight: np.ndarray) -> NetxSynapse:
    """netx/utils.py ``optimize_weight_bits``, then Lava's Dense weight preparation.

    Raises:
        ValueError: weights netx cannot load (all zero: it divides by the maximum) or that make
            it shift by a negative count (numpy then returns 0 or -1, not a shifted value).
    """
    w, shift, num_weight_bits = _netx_optimize(weight)
    return _lava_synapse(w, weight, shift, num_weight_bits)


def netx_recurrent(weight: np.ndarray, weight_rec: np.ndarray) -> tuple[NetxSynapse, NetxSynapse]:
    """A ``dense_rec`` layer: netx optimizes the two matrices side by side (one shift and one
    ``num_weight_bits``, netx/hdf5.py create_dense with rec=True); each Lava Dense then picks its
    own sign mode from its own weights (netx/blocks/process.py RecurrentDense passes none)."""
    n_in = weight.shape[1]
    w, shift, num_weight_bits = _netx_optimize(np.hstack([weight, weight_rec]))
    return (_lava_synapse(w[:, :n_in], weight, shift, num_weight_bits),
            _lava_synapse(w[:, n_in:], weight_rec, shift, num_weight_bits))


def _netx_optimize(weight: np.ndarray) -> tuple[np.ndarray, int, int]:
    """netx's ``optimize_weight_bits``: (clipped weights, left shift, num_weight_bits)."""
    w = np.asarray(weight, dtype=np.int64)
    max_w, min_w = int(w.max()), int(w.min())
    if max_w > 254 and min_w < 0:  # netx clips mixed matrices, in this order
        w = np.clip(w, -256, 254)
        max_w = int(w.max())
    if min_w < -256 and max_w > 0:
        w = np.clip(w, -256, 254)
        min_w = int(w.min())
    if max_w == min_w == 0:
        raise ValueError("all weights are zero, which netx's optimize_weight_bits divides by")
    signed = int(not (max_w < 0 or min_w >= 0))  # netx: max < 0 inhibitory, min >= 0 excitatory
    if signed:
        scale = min(127 / max_w if max_w > 0 else np.inf, -128 / min_w)
    elif max_w < 0:
        scale = -256 / min_w
    else:
        scale = 255 / max_w
    shift = int(np.floor(np.log2(scale))) + signed
    if shift < 0:
        raise ValueError(f"weights up to {max_w} (down to {min_w}) make netx shift by {shift}")
    zeros = next((n for n in range(NETX_WEIGHT_BITS, 0, -1) if not np.any(w % (1 << n))), 0)
    return w, shift, NETX_WEIGHT_BITS - shift - (zeros - signed)


def _lava_synapse(w: np.ndarray, weight: np.ndarray, shift: int, num_weight_bits: int
                  ) -> NetxSynapse:
    """Lava's Dense preparation of netx-optimized weights ``w << shift``."""
    shifted = w << shift
    sign_mode = sign_mode_of(shifted)
    grid = lava_dense_grid(shifted, sign_mode=sign_mode, num_weight_bits=num_weight_bits)
    changed = int(np.sum(grid.astype(np.int64) != (np.asarray(weight, dtype=np.int64) << shift)))
    return NetxSynapse(weights=grid, weight_exp=-shift, num_weight_bits=num_weight_bits,
                       sign_mode=sign_mode, changed=changed)


def _check_profile(profile: Profile) -> None:
    wrong = [f"{k} = {getattr(profile, k)} (Lava: {v})" for k, v in LAVA_FORMATS.items()
             if getattr(profile, k) != v]
    if wrong:
        raise ProfileError(f"profile {profile.name!r} does not use Lava's fixed-point formats that"
                           f" lava-dl netx assumes: {', '.join(wrong)}")


# ---------------------------------------------------------------- reading


def _text(value: Any) -> str:
    """netx/utils.py NetDict: a 'type' is a 0-d or 1-element bytes array."""
    value = np.asarray(value)
    value = value.reshape(-1)[0] if value.ndim else value[()]
    return value.decode("ascii") if isinstance(value, bytes) else str(value)


def _scalar(group: h5py.Group, key: str, where: str) -> int:
    value = np.asarray(group[key][()], dtype=np.float64).reshape(-1)
    if value.size != 1 or not np.isfinite(value[0]) or value[0] != int(value[0]):
        raise InputFileError(f"{where}: {key} should be one integer, got {value.tolist()[:4]}")
    return int(value[0])


def _ints(dataset: h5py.Dataset, where: str) -> np.ndarray:
    """netx reads weights and biases with ``.astype(int)`` (floats truncated toward zero)."""
    data = np.asarray(dataset[()])
    if data.dtype.kind == "f" and not np.all(np.isfinite(data)):
        raise InputFileError(f"{where}: {dataset.name.rsplit('/', 1)[-1]} holds NaN or inf")
    return data.astype(np.int64)


@dataclasses.dataclass(frozen=True)
class _Neuron:
    du: int
    dv: int
    vth: int


def _neuron_problem(group: h5py.Group) -> str | None:
    kind = _text(group["type"])
    if kind not in NETX_LIF_NEURONS:
        return f"{kind} neuron (only {'/'.join(NETX_LIF_NEURONS)} map to a Lava LIF)"
    return None


def _read_neuron(group: h5py.Group, where: str) -> _Neuron:
    if "refDelay" in group and _scalar(group, "refDelay", where) > 1:
        warnings.warn(f"{where}: refDelay {_scalar(group, 'refDelay', where)} is ignored, as"
                      " lava-dl netx ignores it (Lava's LIF has no refractory period)",
                      stacklevel=3)
    if "gradedSpike" in group and bool(np.asarray(group["gradedSpike"][()]).reshape(-1)[0]):
        warnings.warn(f"{where}: gradedSpike is ignored, as lava-dl netx ignores it (Lava's LIF"
                      " sends binary spikes)", stacklevel=3)
    return _Neuron(du=_scalar(group, "iDecay", where) - LAVA_FORMATS["du_offset"],
                   dv=_scalar(group, "vDecay", where), vth=_scalar(group, "vThMant", where))


def _dense_problem(group: h5py.Group) -> str | None:
    if "neuron" not in group:
        return "no neuron (netx adds an integrator with threshold 131072 that never spikes)"
    if "weight/imag" in group:
        return "complex weights"
    problem = _neuron_problem(group["neuron"])
    if problem:
        return problem
    if "delay" in group and np.any(np.asarray(group["delay"][()]) != 0):
        delay = np.asarray(group["delay"][()])
        return f"synaptic delays up to {delay.max():g} (a Deployment has none)"
    return None


def _layer_problems(layers: h5py.Group, keep: range) -> list[str]:
    problems = []
    for i in keep:
        g = layers[str(i)]
        kind = _text(g["type"])
        if kind not in _SUPPORTED_TYPES:
            problems.append(f"layer {i} ({kind})")
        elif kind == "input" and "neuron" in g:
            problems.append(f"layer {i} (input with a {_text(g['neuron/type'])} neuron: netx drives"
                            " it only through its bias, not from spikes; import with"
                            f" skip_layers={i + 1} to feed spikes into the next layer, as"
                            " netx.hdf5.Network(skip_layers=...) does)")
        elif kind in ("dense", "dense_rec", "conv"):
            problem = _dense_problem(g)
            if kind == "dense_rec" and "weight_rec" not in g:
                problem = "no weight_rec"
            if problem:
                problems.append(f"layer {i} ({kind}: {problem})")
    return problems


def _message_bits(g: h5py.Group, before: int) -> int:
    """netx/hdf5.py _create: a layer's neuron sets the message bits of the next layer's input."""
    if "neuron" not in g or _text(g["type"]) not in ("input", "dense", "conv"):
        return before
    neuron = g["neuron"]
    return _scalar(neuron, "messageBits", neuron.name) if "messageBits" in neuron else 0


def _hinted(g: h5py.Group, syn: NetxSynapse, weight: np.ndarray, bias: np.ndarray,
            where: str) -> dict[str, Any] | None:
    """The Deployment parameters write_netx recorded, if they do the netx data's arithmetic."""
    a = g.attrs
    if "snn_deploy_weight_exp" not in a:
        return None
    try:
        exp, nwb = int(a["snn_deploy_weight_exp"]), int(a["snn_deploy_num_weight_bits"])
        sign_mode = _text(a["snn_deploy_sign_mode"])
        bias_exp = np.asarray(a["snn_deploy_bias_exp"], dtype=np.int64).reshape(-1)
        ok = syn.changed == 0 and sign_mode in _NETX_SIGN_MODES and bias_exp.shape == bias.shape
        if ok and exp >= 0:
            ok = not np.any(weight % (1 << exp))
        weights = weight >> exp if exp >= 0 else weight << -exp
        ok = ok and np.array_equal(
            lava_dense_grid(weights, sign_mode=sign_mode, num_weight_bits=nwb), weights)
        bias_int = bias << NETX_BIAS_EXP
        ok = ok and bool(np.all(bias_exp >= 0)) and not np.any(bias_int % (1 << bias_exp))
    except (KeyError, ValueError, TypeError):
        ok = False
    if not ok:
        warnings.warn(f"{where}: its snn-deploy annotations do not match the netx data (was the"
                      " file edited?); using netx's own mapping", stacklevel=3)
        return None
    return {"weights": weights.astype(np.int32), "weight_exp": exp, "num_weight_bits": nwb,
            "sign_mode": sign_mode, "bias_mant": (bias_int >> bias_exp).astype(np.int32),
            "bias_exp": bias_exp.astype(np.int32), "scale": float(a["snn_deploy_scale"]),
            "synapse": _text(a["snn_deploy_synapse"]), "neuron": _text(a["snn_deploy_neuron"])}


def _read_dense(g: h5py.Group, i: int, *, width: int | None, message_bits: int,
                origin: str, recurrent: bool = False) -> QuantLayer:
    where = f"{origin}: layer {i} ({'dense_rec' if recurrent else 'dense'})"
    n = int(np.prod(np.asarray(g["shape"][()])))
    weight = _ints(g["weight"], where)
    if weight.ndim == 1:  # netx/hdf5.py create_dense: weight.reshape(shape[0], -1)
        weight = weight.reshape(n, -1)
    if weight.ndim != 2 or weight.shape[0] != n or (width is not None and weight.shape[1] != width):
        raise InputFileError(f"{where}: weights of shape {weight.shape} do not map"
                             f" {width if width is not None else '?'} inputs to shape {n}")
    bias = _ints(g["bias"], where).reshape(-1) if "bias" in g else np.zeros(1, dtype=np.int64)
    if bias.size not in (1, n):
        raise InputFileError(f"{where}: bias of size {bias.size} for {n} neurons")
    bias = np.broadcast_to(bias, (n,)).copy()
    neuron = _read_neuron(g["neuron"], where)
    rec = rec_syn = None
    try:
        if recurrent:
            weight_rec = _ints(g["weight_rec"], where)
            weight_rec = weight_rec.reshape(n, -1) if weight_rec.ndim == 1 else weight_rec
            if weight_rec.shape != (n, n):
                raise InputFileError(f"{where}: weight_rec of shape {weight_rec.shape}, expected"
                                     f" ({n}, {n})")
            syn, rec_syn = netx_recurrent(weight, weight_rec)
            rec = RecurrentSynapse(weights=rec_syn.weights, weight_exp=rec_syn.weight_exp,
                                   sign_mode=rec_syn.sign_mode,
                                   num_weight_bits=rec_syn.num_weight_bits)
        else:
            syn = netx_synapse(weight)
    except ValueError as exc:
        raise UnsupportedNode(f"{where}: lava-dl netx cannot load it: {exc}") from None
    params = (None if recurrent else _hinted(g, syn, weight, bias, where)) or {
        "weights": syn.weights, "weight_exp": syn.weight_exp,
        "num_weight_bits": syn.num_weight_bits, "sign_mode": syn.sign_mode,
        "bias_mant": bias.astype(np.int32), "bias_exp": np.full(n, NETX_BIAS_EXP, np.int32),
        "scale": SLAYER_SCALE, "synapse": f"dense{i}", "neuron": f"lif{i}",
    }
    changed = syn.changed + (rec_syn.changed if rec_syn is not None else 0)
    total = int(weight.size) + (rec.weights.size if rec is not None else 0)
    if changed:
        warnings.warn(f"{where}: netx maps {changed} of {total} weights to other values"
                      " (its clip to [-256, 254], Lava's to -255 in inhibitory mode); imported as"
                      " netx runs them", stacklevel=2)
    return QuantLayer(
        du=neuron.du, dv=neuron.dv, vth=neuron.vth, num_message_bits=message_bits,
        stats=LayerStats(weights_total=total, weights_saturated=changed,
                         threshold_saturated=False, bias_saturated=0, u_peak_share=0.0),
        recurrent=rec, **params,
    )


def _pair(g: h5py.Group, key: str, default: int, where: str) -> tuple[int, int]:
    """A conv attribute as (y, x): netx's ``expand`` takes a scalar for both or an (y, x) pair
    (it reverses the pair into Lava's (x, y) order)."""
    if key not in g:
        return default, default
    value = np.asarray(g[key][()], dtype=np.float64).reshape(-1)
    if value.size not in (1, 2) or not np.all(np.isfinite(value)) or np.any(value != np.round(value)):
        raise InputFileError(f"{where}: {key} should be one or two integers, got {value.tolist()[:4]}")
    y, x = (int(value[0]), int(value[0])) if value.size == 1 else (int(value[0]), int(value[1]))
    return y, x


def _dense_of_conv(weight: np.ndarray, where: str) -> tuple[np.ndarray, int, str]:
    """(weights, weight_exp, sign_mode) of a Lava Dense that sums exactly what Lava's Conv sums.

    Lava's fixed-point Conv (lava/proc/conv/models.py, PyConvModelFixed) multiplies with the
    weights as netx hands them over: no clip, no truncation, no weight exponent. A Dense clips and
    truncates to its grid (8 bits; mixed sign mode drops the lowest bit) and shifts by its
    exponent, so the conv's weights w go in as w * 2**-e for the first e in 0, -1, 1, 2, ...
    that puts them on the grid: at e = -1 the Dense sums 2 w s and halves it, exactly.
    """
    for e in (0, -1, *range(1, 8)):
        if e > 0 and np.any(weight % (1 << e)):
            break
        mant = weight << -e if e <= 0 else weight >> e
        mode = sign_mode_of(mant)
        if np.array_equal(lava_dense_grid(mant, sign_mode=mode, num_weight_bits=8), mant):
            return mant.astype(np.int32), e, mode
    raise UnsupportedNode(f"{where}: conv weights {weight.min()}..{weight.max()} have no exact"
                          " form on a Lava Dense's 8-bit grid (Lava's Conv uses them unclipped)")


def _read_conv(g: h5py.Group, i: int, *, in_shape: tuple[int, ...] | None, message_bits: int,
               origin: str) -> tuple[QuantLayer, tuple[int, int, int]]:
    """A netx ``conv`` layer lowered to a Dense on C-major (C, H, W) vectors, and its output shape.

    netx (hdf5.py ``create_conv``) flips the stored (C_out, C_in / groups, kH, kW) kernel and
    hands it to Lava's ``Conv``, whose convolution then equals torch's cross-correlation with the
    stored kernel; stride, padding and dilation are stored in (y, x) order. The lowered matrix is
    that cross-correlation (convert/lowering.py ``_window_matrix``). netx's neurons are (x, y, c)
    and its ``flatten`` transposes them to (c, y, x) before flattening: the C-major order used
    here, so ``flatten`` needs no matrix. Lava's Conv clamps its sums to 24 bits and a Dense does
    not; where the weights could reach that clamp the layer is refused.
    """
    from snn_deploy.convert.lowering import MAX_DENSE_ELEMENTS, _window_matrix

    where = f"{origin}: layer {i} (conv)"
    if in_shape is None or len(in_shape) != 3:
        raise UnsupportedNode(f"{where}: its input shape is unknown (netx too needs an input layer"
                              " with a (C, H, W) shape, or a conv layer before it)")
    shape = tuple(int(v) for v in np.asarray(g["shape"][()]).reshape(-1))
    weight = np.asarray(g["weight"][()])
    if weight.dtype.kind == "f" and (not np.all(np.isfinite(weight))
                                     or np.any(weight != np.round(weight))):
        raise InputFileError(f"{where}: weights must be finite integers (Lava's Conv holds int32)")
    if weight.ndim == 5 and weight.shape[4] == 1:  # slayer's (C_out, C_in, kH, kW, 1)
        weight = weight[..., 0]
    if weight.ndim != 4 or len(shape) != 3:
        raise InputFileError(f"{where}: weight {weight.shape} and shape {shape} are not a 2-d"
                             " conv's (C_out, C_in / groups, kH, kW) and (C, H, W)")
    weight = weight.astype(np.int64)
    groups = _scalar(g, "groups", where) if "groups" in g else 1
    stride, pad = _pair(g, "stride", 1, where), _pair(g, "padding", 0, where)
    dilation = _pair(g, "dilation", 1, where)
    if min(*stride, *dilation, groups) < 1 or min(pad) < 0:
        raise InputFileError(f"{where}: stride {stride}, padding {pad}, dilation {dilation},"
                             f" groups {groups} out of range")
    n_out, n_in = int(np.prod(shape)), int(np.prod(in_shape))
    if n_out * n_in > MAX_DENSE_ELEMENTS:
        raise UnsupportedNode(f"{where}: lowered to a Dense it would hold {n_out} x {n_in} weights"
                              f" (limit {MAX_DENSE_ELEMENTS})")
    matrix, out = _window_matrix(weight, in_shape, stride=stride, pad_lo=pad, pad_hi=pad,
                                 dilation=dilation, groups=groups)
    if out != shape:
        raise InputFileError(f"{where}: a {weight.shape[2]}x{weight.shape[3]} conv of input"
                             f" {in_shape} gives {out}, but the layer's shape is {shape}")
    dense = np.rint(matrix.toarray()).astype(np.int64)
    level = (1 << message_bits) - 1 if message_bits else 1
    if int(np.abs(dense).sum(axis=1).max()) * level >= 1 << 23:
        raise UnsupportedNode(f"{where}: sums could reach Lava Conv's 24-bit clamp, which a Dense"
                              " does not reproduce")
    weights, exp, mode = _dense_of_conv(dense, where)
    bias = _ints(g["bias"], where).reshape(-1) if "bias" in g else np.zeros(1, dtype=np.int64)
    if bias.size not in (1, shape[0]):  # netx broadcasts it over (x, y, c): one per channel
        raise InputFileError(f"{where}: bias of size {bias.size} for {shape[0]} channels")
    bias = np.repeat(np.broadcast_to(bias, (shape[0],)), n_out // shape[0])
    neuron = _read_neuron(g["neuron"], where)
    layer = QuantLayer(
        synapse=f"conv{i}", neuron=f"lif{i}", weights=weights, weight_exp=exp, sign_mode=mode,
        num_weight_bits=8, num_message_bits=message_bits, du=neuron.du, dv=neuron.dv,
        vth=neuron.vth, bias_mant=bias.astype(np.int32),
        bias_exp=np.full(n_out, NETX_BIAS_EXP, np.int32), scale=SLAYER_SCALE,
        stats=LayerStats(weights_total=int(weight.size), weights_saturated=0,
                         threshold_saturated=False, bias_saturated=0, u_peak_share=0.0),
    )
    return layer, out


def _coding(f: h5py.File) -> dict:
    if "snn_deploy_coding" in f.attrs:
        return read_coding(json.loads(_text(f.attrs["snn_deploy_coding"])),
                           where=f"{f.filename}: snn_deploy_coding")
    steps = DEFAULT_STEPS
    if "simulation/tSample" in f and "simulation/Ts" in f:
        t_sample = float(np.asarray(f["simulation/tSample"][()]).reshape(-1)[0])
        ts = float(np.asarray(f["simulation/Ts"][()]).reshape(-1)[0])
        steps = max(1, int(round(t_sample / ts))) if ts > 0 else DEFAULT_STEPS
    return {"encoding": "rate", "steps": steps}


def _read(f: h5py.File, path: Path, profile: Profile, skip_layers: int,
          num_layers: int | None) -> Deployment:
    if "layer" not in f or not isinstance(f["layer"], h5py.Group):
        raise InputFileError(f"{path} is not a lava-dl netx network (no 'layer' group)")
    layers = f["layer"]
    count = len(layers)
    if sorted(layers.keys(), key=lambda k: (len(k), k)) != [str(i) for i in range(count)]:
        raise InputFileError(f"{path}: netx layers must be named 0..{count - 1},"
                             f" found {sorted(layers.keys())[:8]}")
    end = count if num_layers is None else min(count, num_layers)
    keep = range(skip_layers, end)
    problems = _layer_problems(layers, keep)
    if problems:
        raise UnsupportedNode(f"{path}: a Deployment cannot represent " + "; ".join(problems))
    message_bits = int(f.attrs.get("snn_deploy_input_message_bits", 0))
    shape: tuple[int, ...] | None = None  # (C, H, W) of what feeds the next conv layer
    for i in range(skip_layers):
        g = layers[str(i)]
        if _text(g["type"]) in ("input", "conv") and "shape" in g:  # netx: sets its input_shape
            shape = tuple(int(v) for v in np.asarray(g["shape"][()]).reshape(-1))
        message_bits = _message_bits(g, message_bits)
    quant: list[QuantLayer] = []
    unflattened = False  # a conv's (x, y, c) output not yet flattened
    for i in keep:
        g = layers[str(i)]
        kind = _text(g["type"])
        if kind == "input" and "shape" in g:
            shape = tuple(int(v) for v in np.asarray(g["shape"][()]).reshape(-1))
        elif kind == "flatten":
            unflattened = False
        elif kind == "conv":
            layer, shape = _read_conv(g, i, in_shape=shape, message_bits=message_bits,
                                      origin=str(path))
            quant.append(layer)
            unflattened = True
        elif kind in ("dense", "dense_rec"):
            if unflattened:
                raise UnsupportedNode(f"{path}: layer {i} ({kind}) follows a conv layer without a"
                                      " flatten layer (netx cannot connect them either)")
            width = quant[-1].size if quant else None
            quant.append(_read_dense(g, i, width=width, message_bits=message_bits,
                                     origin=str(path), recurrent=kind == "dense_rec"))
        message_bits = _message_bits(g, message_bits)
    if not quant:
        raise UnsupportedNode(f"{path}: no dense or conv layer among layers"
                              f" {keep.start}..{keep.stop - 1}")
    return Deployment(  # its value ranges: validate_deployment, which read_netx calls
        profile=profile, layers=tuple(quant), input_size=int(quant[0].weights.shape[1]),
        input_scale=int(f.attrs.get("snn_deploy_input_scale", 1)),
        dt=float(f.attrs.get("snn_deploy_dt", 1.0)), coding=_coding(f),
        source_sha256=hashlib.sha256(path.read_bytes()).hexdigest(), source_nir=b"",
        calibration="imported from netx",
    )


def read_netx(path: str | Path, *, profile: Profile, skip_layers: int = 0,
              num_layers: int | None = None) -> Deployment:
    """Import a lava-dl netx HDF5 network as netx's ``Network`` would build it on Lava.

    Args:
        profile: the Deployment's profile; it must use Lava's fixed-point formats.
        skip_layers, num_layers: as in ``netx.hdf5.Network``: keep the layer entries with index
            in [skip_layers, num_layers); the input goes into the first dense layer kept.

    The Deployment takes spikes (or, where the file says so, graded values) into its first dense
    layer; ``input_scale`` is 1, ``dt`` 1.0 (netx has no time unit), ``coding`` a rate code over
    ``simulation/tSample / Ts`` steps (32 if absent), ``source_sha256`` the netx file's SHA-256 and
    ``source_nir`` empty: there is no float NIR source behind a netx file.

    Raises:
        InputFileError: a missing, corrupt or non-netx file.
        UnsupportedNode: layers a Deployment cannot hold, all named in one message.
        QuantizationError, ProfileError: values outside the profile's formats.
    """
    path = Path(path)
    _check_profile(profile)
    if skip_layers < 0 or (num_layers is not None and num_layers < 1):
        raise InputFileError(f"skip_layers {skip_layers} / num_layers {num_layers} select nothing")
    if not path.is_file():
        raise InputFileError(f"netx file not found: {path}")
    check_declared_sizes(path, origin=str(path))
    try:
        f = h5py.File(path, "r")
    except OSError:
        raise InputFileError(f"{path} is not a readable HDF5 file (truncated, or not HDF5 at all;"
                             " lava-dl netx networks are HDF5)") from None
    try:
        with f:
            dep = _read(f, path, profile, skip_layers, num_layers)
    except (KeyError, ValueError, TypeError, OSError, RuntimeError, json.JSONDecodeError) as exc:
        raise InputFileError(f"{path} is a damaged netx file: {exc}") from None
    validate_deployment(dep, origin=str(path))
    return dep


# ---------------------------------------------------------------- writing


def _export_problems(dep: Deployment) -> list[str]:
    problems = []
    for i, layer in enumerate(dep.layers):
        where = f"layer {i} ({layer.neuron})"
        if layer.recurrent is not None:
            problems.append(f"{where}: recurrent weights (this export writes dense layers only)")
            continue
        w = layer.weights.astype(np.int64)
        e = layer.weight_exp
        try:
            on_grid = np.array_equal(lava_dense_grid(w, sign_mode=layer.sign_mode,
                                                     num_weight_bits=layer.num_weight_bits), w)
        except ValueError:
            on_grid = False
        if not on_grid:  # Lava would clip or truncate them: the Deployment is not what runs
            problems.append(f"{where}: weights are off Lava's {layer.sign_mode} grid for"
                            f" num_weight_bits = {layer.num_weight_bits}")
            continue
        if e < 0 and np.any(w % (1 << -e)):
            problems.append(f"{where}: weight_exp {e} with weights not divisible by {1 << -e}"
                            " (netx weights are integers at exponent 0)")
            continue
        effective = w << e if e >= 0 else w >> -e
        try:
            syn = netx_synapse(effective)
        except ValueError as exc:
            problems.append(f"{where}: {exc}")
            continue
        if syn.changed:
            problems.append(f"{where}: effective weights {effective.min()}..{effective.max()}"
                            f" (mantissas x 2**{e}) do not fit netx's 8-bit weights:"
                            f" {syn.changed} would change")
        bias = layer.bias_mant.astype(np.int64) << layer.bias_exp.astype(np.int64)
        if np.any(bias % (1 << NETX_BIAS_EXP)):
            problems.append(f"{where}: biases {bias.min()}..{bias.max()} are not multiples of"
                            f" {1 << NETX_BIAS_EXP} (netx's bias exponent is {NETX_BIAS_EXP})")
    return problems


def _write_layer(g: h5py.Group, layer: QuantLayer, *, n_in: int, out_message_bits: int) -> None:
    w = layer.weights.astype(np.int64)
    e = layer.weight_exp
    effective = w << e if e >= 0 else w >> -e
    bias = (layer.bias_mant.astype(np.int64) << layer.bias_exp.astype(np.int64)) >> NETX_BIAS_EXP
    # lava-dl's own writer (slayer/block/base.py export_hdf5) stores these as float32: exact here
    g.create_dataset("type", data=np.array([b"dense"], dtype="S10"))
    g.create_dataset("shape", data=np.array([layer.size]))
    g.create_dataset("inFeatures", data=n_in)
    g.create_dataset("outFeatures", data=layer.size)
    g.create_dataset("weight", data=effective.astype(np.float32))
    g.create_dataset("bias", data=bias.astype(np.float32))
    neuron = {"type": np.bytes_("CUBA"), "iDecay": layer.du + LAVA_FORMATS["du_offset"],
              "vDecay": layer.dv, "vThMant": layer.vth, "refDelay": 1, "gradedSpike": False}
    if out_message_bits:  # netx gives the next Dense num_message_bits = this neuron's messageBits
        neuron["messageBits"] = out_message_bits
    for key, value in neuron.items():
        g.create_dataset(f"neuron/{key}", data=value)
    g.attrs["snn_deploy_weight_exp"] = e
    g.attrs["snn_deploy_num_weight_bits"] = layer.num_weight_bits
    g.attrs["snn_deploy_sign_mode"] = layer.sign_mode
    g.attrs["snn_deploy_bias_exp"] = layer.bias_exp.astype(np.int32)
    g.attrs["snn_deploy_scale"] = layer.scale
    g.attrs["snn_deploy_synapse"] = layer.synapse
    g.attrs["snn_deploy_neuron"] = layer.neuron


def write_netx(dep: Deployment, path: str | Path) -> None:
    """Write ``dep`` as a lava-dl netx HDF5 network (atomically) that netx runs bit for bit alike.

    Layout: ``layer/0`` an input layer without neuron (shape = input size), then one ``dense``
    layer with a CUBA neuron per Deployment layer; ``simulation`` holds Ts = 1 and tSample = the
    coding's steps. Load it with ``netx.hdf5.Network(net_config=path)``; for graded input
    (``dep.layers[0].num_message_bits > 0``) pass ``input_message_bits`` = that number, which netx
    takes only as an argument (it is stored as the ``snn_deploy_input_message_bits`` attribute).

    Raises:
        QuantizationError: layers whose integers netx cannot reproduce exactly, all named.
        ProfileError: a profile without Lava's fixed-point formats.
    """
    _check_profile(dep.profile)
    problems = _export_problems(dep)
    if problems:
        hint = ""
        if any(layer.weight_exp != 0 for layer in dep.layers):
            hint = ("; netx has no weight exponent: deploy with a profile whose [weights]"
                    " exp_min = exp_max = 0")
        raise QuantizationError("cannot write a netx file that runs like this deployment: "
                                + "; ".join(problems) + hint)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["snn_deploy_format"] = FORMAT_TAG
        f.attrs["snn_deploy_version"] = FORMAT_VERSION
        f.attrs["snn_deploy_profile"] = dep.profile.name
        f.attrs["snn_deploy_source_sha256"] = dep.source_sha256
        f.attrs["snn_deploy_coding"] = json.dumps(
            {k: v.item() if isinstance(v, np.generic) else v for k, v in dep.coding.items()})
        f.attrs["snn_deploy_dt"] = dep.dt
        f.attrs["snn_deploy_input_scale"] = dep.input_scale
        f.attrs["snn_deploy_input_message_bits"] = dep.layers[0].num_message_bits
        f.create_dataset("simulation/Ts", data=1)
        f.create_dataset("simulation/tSample", data=int(dep.coding.get("steps", DEFAULT_STEPS)))
        inp = f.create_group("layer/0")
        inp.create_dataset("type", data=np.array([b"input"], dtype="S10"))
        inp.create_dataset("shape", data=np.array([dep.input_size]))
        width = dep.input_size
        following = [layer.num_message_bits for layer in dep.layers[1:]] + [0]
        for i, (layer, bits) in enumerate(zip(dep.layers, following), start=1):
            _write_layer(f.create_group(f"layer/{i}"), layer, n_in=width, out_message_bits=bits)
            width = layer.size
