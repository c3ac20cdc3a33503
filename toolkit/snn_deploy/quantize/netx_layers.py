"""One lava-dl netx layer -> one QuantLayer, as netx builds it on Lava (stage 3: netx import).

``read_dense`` maps a ``dense`` or ``dense_rec`` layer through netx's own weight mapping
(``netx.netx_synapse``, ``netx.netx_recurrent``). A ``conv`` layer is lowered to a Dense on C-major
(C, H, W) vectors (``read_conv``), exact where a Dense can sum what Lava's Conv sums, refused where
it cannot. A neuron's ``messageBits`` becomes the next Dense's ``num_message_bits`` as in netx;
Lava's LIF still sends 0/1 spikes, so between layers this changes nothing (netx ignores
``gradedSpike``, and so does this import, with a warning). The network as a whole, and which
layers a Deployment can hold at all, is ``netx_read``'s.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import h5py
import numpy as np

from snn_deploy.errors import InputFileError, UnsupportedNode
from snn_deploy.quantize.deployment import LayerStats, QuantLayer, RecurrentSynapse
from snn_deploy.quantize.dense_grid import lava_dense_grid, sign_mode_of
from snn_deploy.quantize.netx import (
    LAVA_FORMATS,
    NETX_BIAS_EXP,
    SLAYER_SCALE,
    NetxSynapse,
    netx_recurrent,
    netx_synapse,
)

_NETX_SIGN_MODES = ("mixed", "excitatory", "inhibitory")


def decode_text(value: Any) -> str:
    """netx/utils.py NetDict: a 'type' is a 0-d or 1-element bytes array."""
    value = np.asarray(value)
    value = value.reshape(-1)[0] if value.ndim else value[()]
    return value.decode("ascii") if isinstance(value, bytes) else str(value)


def read_scalar(group: h5py.Group, key: str, where: str) -> int:
    """``group[key]`` as one integer, or an InputFileError naming ``where``."""
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


def _read_neuron(group: h5py.Group, where: str) -> _Neuron:
    if "refDelay" in group and read_scalar(group, "refDelay", where) > 1:
        warnings.warn(f"{where}: refDelay {read_scalar(group, 'refDelay', where)} is ignored, as"
                      " lava-dl netx ignores it (Lava's LIF has no refractory period)",
                      stacklevel=3)
    if "gradedSpike" in group and bool(np.asarray(group["gradedSpike"][()]).reshape(-1)[0]):
        warnings.warn(f"{where}: gradedSpike is ignored, as lava-dl netx ignores it (Lava's LIF"
                      " sends binary spikes)", stacklevel=3)
    return _Neuron(du=read_scalar(group, "iDecay", where) - LAVA_FORMATS["du_offset"],
                   dv=read_scalar(group, "vDecay", where), vth=read_scalar(group, "vThMant", where))



def _hinted(g: h5py.Group, syn: NetxSynapse, weight: np.ndarray, bias: np.ndarray,
            where: str) -> dict[str, Any] | None:
    """The Deployment parameters write_netx recorded, if they do the netx data's arithmetic."""
    a = g.attrs
    if "snn_deploy_weight_exp" not in a:
        return None
    try:
        exp, nwb = int(a["snn_deploy_weight_exp"]), int(a["snn_deploy_num_weight_bits"])
        sign_mode = decode_text(a["snn_deploy_sign_mode"])
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
            "synapse": decode_text(a["snn_deploy_synapse"]),
            "neuron": decode_text(a["snn_deploy_neuron"])}


def read_dense(g: h5py.Group, i: int, *, width: int | None, message_bits: int,
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


def _conv_kernel(g: h5py.Group, shape: tuple[int, ...], where: str) -> np.ndarray:
    """The stored kernel as int64 (C_out, C_in / groups, kH, kW) for a (C, H, W) layer ``shape``.

    Raises:
        InputFileError: non-integer or non-finite weights, or shapes that are not a 2-d conv's.
    """
    weight = np.asarray(g["weight"][()])
    if weight.dtype.kind == "f" and (not np.all(np.isfinite(weight))
                                     or np.any(weight != np.round(weight))):
        raise InputFileError(f"{where}: weights must be finite integers (Lava's Conv holds int32)")
    if weight.ndim == 5 and weight.shape[4] == 1:  # slayer's (C_out, C_in, kH, kW, 1)
        weight = weight[..., 0]
    if weight.ndim != 4 or len(shape) != 3:
        raise InputFileError(f"{where}: weight {weight.shape} and shape {shape} are not a 2-d"
                             " conv's (C_out, C_in / groups, kH, kW) and (C, H, W)")
    return weight.astype(np.int64)


def read_conv(g: h5py.Group, i: int, *, in_shape: tuple[int, ...] | None, message_bits: int,
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
    weight = _conv_kernel(g, shape, where)
    groups = read_scalar(g, "groups", where) if "groups" in g else 1
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
