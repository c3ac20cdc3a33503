"""One lava-dl netx layer -> one QuantLayer, as netx builds it on Lava (stage 3: netx import).

``read_dense`` maps a ``dense`` or ``dense_rec`` layer through netx's own weight mapping
(``netx.netx_synapse``, ``netx.netx_recurrent``). A ``conv`` layer becomes a native Lava Conv
layer with the stored kernel (``read_conv``), an ``input`` layer with a neuron an input layer of
neurons that takes its data as bias (``read_input``). A neuron's ``messageBits`` becomes the next
synapse's ``num_message_bits`` as in netx; Lava's LIF still sends 0/1 spikes, so between layers
this changes nothing (netx ignores ``gradedSpike``, and so does this import, with a warning).
The network as a whole, and which layers a Deployment can hold at all, is ``netx_read``'s.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import h5py
import numpy as np

from snn_deploy.convert.conv import ConvGeometry
from snn_deploy.errors import InputFileError, UnsupportedNode
from snn_deploy.quantize.dense_grid import lava_dense_grid
from snn_deploy.quantize.deployment import (
    MAX_DELAY,
    LayerStats,
    QuantLayer,
    RecurrentSynapse,
)
from snn_deploy.quantize.netx import (
    LAVA_FORMATS,
    NETX_BIAS_EXP,
    NETX_WEIGHT_BITS,
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


def delay_problem(g: h5py.Group) -> str | None:
    """Why a dense layer's ``delay`` is beyond a Deployment, or None. netx/hdf5.py
    ``create_dense`` repeats a delay of n_out values over the inputs (a delay per neuron, what a
    Deployment holds), one of n_in values over the outputs (a delay per input: only a uniform
    one is the same)."""
    if "delay" not in g:
        return None
    delay = np.asarray(g["delay"][()], dtype=np.float64).reshape(-1)
    n = int(np.prod(np.asarray(g["shape"][()])))
    if not np.all(np.isfinite(delay)) or np.any(delay != np.round(delay)) or np.any(delay < 0):
        return "synaptic delays must be whole numbers >= 0"
    if delay.size not in (1, n) and np.any(delay != delay[0]):
        return (f"{delay.size} synaptic delays for {n} neurons: a delay per input neuron,"
                " which a Deployment (a delay per neuron) cannot hold")
    return None


def read_delays(g: h5py.Group, n: int, where: str) -> np.ndarray | None:
    """A dense layer's delays as int32 (n,) (``delay_problem`` checked them), clamped to
    MAX_DELAY with a warning as netx does; None where there is no delay or all are 0 (netx then
    builds a DelayDense whose arithmetic and timing are a Dense's)."""
    if "delay" not in g:
        return None
    delay = np.asarray(g["delay"][()], dtype=np.float64).reshape(-1)
    if not np.any(delay):
        return None
    if delay.max() > MAX_DELAY:
        warnings.warn(f"{where}: synaptic delays up to {delay.max():g} are clamped to {MAX_DELAY},"
                      " as lava-dl netx clamps them", stacklevel=3)
    delay = np.broadcast_to(np.minimum(delay, MAX_DELAY), (n,)) if delay.size in (1, n) else \
        np.full(n, min(delay[0], MAX_DELAY))
    return delay.astype(np.int32)


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
        recurrent=rec, delays=read_delays(g, n, where), **params,
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


def _conv_kernel(g: h5py.Group, shape: tuple[int, ...], where: str) -> np.ndarray:
    """The stored kernel as int64 (C_out, C_in / groups, kH, kW) for a (C, H, W) layer ``shape``.

    Raises:
        InputFileError: non-integer or non-finite weights, or shapes that are not a 2-d conv's.
    """
    weight = np.asarray(g["weight"][()])
    if weight.dtype.kind == "f" and (not np.all(np.isfinite(weight))
                                     or np.any(weight != np.round(weight))):
        raise InputFileError(f"{where}: weights must be finite integers (Lava's Conv holds int32)")
    if weight.size and np.abs(weight.astype(np.float64)).max() >= 2.0**31:
        raise InputFileError(f"{where}: weights {weight.min()}..{weight.max()} beyond int32")
    if weight.ndim == 5 and weight.shape[4] == 1:  # slayer's (C_out, C_in, kH, kW, 1)
        weight = weight[..., 0]
    if weight.ndim != 4 or len(shape) != 3:
        raise InputFileError(f"{where}: weight {weight.shape} and shape {shape} are not a 2-d"
                             " conv's (C_out, C_in / groups, kH, kW) and (C, H, W)")
    return weight.astype(np.int64)


def read_conv(g: h5py.Group, i: int, *, in_shape: tuple[int, ...] | None, message_bits: int,
              origin: str) -> tuple[QuantLayer, tuple[int, int, int]]:
    """A netx ``conv`` layer as a native Lava Conv layer (kind "conv"), and its output shape.

    netx (hdf5.py ``create_conv``) flips the stored (C_out, C_in / groups, kH, kW) kernel and
    hands it to Lava's ``Conv``, whose convolution then equals torch's cross-correlation with the
    stored kernel; stride, padding and dilation are stored in (H, W) order. So the Deployment
    holds the stored kernel as is (whole numbers, as int32), at exponent 0: Lava's fixed-point
    Conv neither clips, truncates nor shifts it. The bias is one per channel (netx broadcasts it
    over the channel axis), expanded to the (C, H, W) neurons; bias_exp 6 as for every netx LIF.
    """
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
    if in_shape[0] % groups or weight.shape[1] * groups != in_shape[0] or weight.shape[0] % groups:
        raise InputFileError(f"{where}: weight {weight.shape} in {groups} groups does not map"
                             f" {in_shape[0]} input channels")
    kernel = (int(weight.shape[2]), int(weight.shape[3]))
    h_out, w_out = ConvGeometry.output_hw((in_shape[1], in_shape[2]), kernel, stride, pad, dilation)
    out = (int(weight.shape[0]), h_out, w_out)
    if out != shape:
        raise InputFileError(f"{where}: a {kernel[0]}x{kernel[1]} conv of input {tuple(in_shape)}"
                             f" gives {out}, but the layer's shape is {shape}")
    bias = _ints(g["bias"], where).reshape(-1) if "bias" in g else np.zeros(1, dtype=np.int64)
    if bias.size not in (1, shape[0]):  # netx broadcasts it over (x, y, c): one per channel
        raise InputFileError(f"{where}: bias of size {bias.size} for {shape[0]} channels")
    n_out = int(np.prod(shape))
    bias = np.repeat(np.broadcast_to(bias, (shape[0],)), n_out // shape[0])
    neuron = _read_neuron(g["neuron"], where)
    c_in, h_in, w_in = (int(v) for v in in_shape)
    geometry = ConvGeometry(in_shape=(c_in, h_in, w_in), out_shape=out, kernel=kernel,
                            stride=stride, padding=pad, dilation=dilation, groups=groups)
    layer = QuantLayer(
        synapse=f"conv{i}", neuron=f"lif{i}", weights=weight.astype(np.int32), weight_exp=0,
        sign_mode="mixed", num_weight_bits=NETX_WEIGHT_BITS, num_message_bits=message_bits,
        du=neuron.du, dv=neuron.dv, vth=neuron.vth, bias_mant=bias.astype(np.int32),
        bias_exp=np.full(n_out, NETX_BIAS_EXP, np.int32), scale=SLAYER_SCALE,
        stats=LayerStats(weights_total=int(weight.size), weights_saturated=0,
                         threshold_saturated=False, bias_saturated=0, u_peak_share=0.0),
        kind="conv", conv=geometry, shape=out,
    )
    return layer, out


def read_input(g: h5py.Group, i: int, *, message_bits: int, origin: str) -> QuantLayer:
    """A netx ``input`` layer with a neuron as an input layer of LIF neurons (kind "input").

    netx (hdf5.py ``create_input``, blocks/process.py ``Input``) builds only the neuron, with no
    synapse: its input port is connected to nothing, and the data enter as its ``bias_mant`` at
    run time (lava-dl's PilotNet test sets it to the image). The file's input ``weight`` and
    ``bias`` only become netx's ``Input.transform``, which the neuron never sees: the imported
    bias is 0 (exponent 6). A (C, H, W) shape is kept for a conv that follows.
    """
    where = f"{origin}: layer {i} (input)"
    shape = tuple(int(v) for v in np.asarray(g["shape"][()]).reshape(-1))
    n = int(np.prod(shape))
    if n < 1:
        raise InputFileError(f"{where}: shape {shape} holds no neuron")
    neuron = _read_neuron(g["neuron"], where)
    return QuantLayer(
        synapse=f"input{i}", neuron=f"lif{i}", weights=np.zeros((n, 0), np.int32), weight_exp=0,
        sign_mode="mixed", num_weight_bits=NETX_WEIGHT_BITS, num_message_bits=message_bits,
        du=neuron.du, dv=neuron.dv, vth=neuron.vth, bias_mant=np.zeros(n, np.int32),
        bias_exp=np.full(n, NETX_BIAS_EXP, np.int32), scale=SLAYER_SCALE,
        stats=LayerStats(weights_total=0, weights_saturated=0, threshold_saturated=False,
                         bias_saturated=0, u_peak_share=0.0),
        kind="input", shape=shape if len(shape) == 3 else (),
    )
