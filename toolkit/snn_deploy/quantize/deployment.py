"""The Deployment: a network in a profile's integer formats, saved as versioned HDF5.

A Deployment file records the profile it was made for (its TOML text and hash), the source NIR
file's SHA-256 and the source file itself (so the float reference travels with it). Format 2 adds
each layer's kind, its neurons' (C, H, W) shape and a conv's geometry as attributes of the layer
group (``kind``, ``shape``, ``conv_*``); a format-1 file (no ``kind``) holds dense layers only and
still loads. A dense layer's synaptic delays (``QuantLayer.delays``) are a ``delays`` dataset
of the layer group; a file without it holds none. ``validate_deployment`` runs the checks of
``quantize.validation``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import h5py
import numpy as np

from snn_deploy import lava_formats as lava
from snn_deploy.coding import Coding
from snn_deploy.convert.conv import ConvGeometry
from snn_deploy.errors import InputFileError, ProfileError, QuantizationError
from snn_deploy.fileio import atomic_path
from snn_deploy.hdf5_limits import open_checked
from snn_deploy.profiles import Profile, parse_profile
from snn_deploy.quantize.h5values import int32_array as _int32_array
from snn_deploy.quantize.h5values import int_tuple as _int_tuple
from snn_deploy.quantize.h5values import integer as _integer
from snn_deploy.quantize.h5values import real as _real
from snn_deploy.quantize.h5values import text as _text
from snn_deploy.quantize.validation import (
    check_conv,
    check_delays,
    check_dense,
    check_input,
    check_input_layer,
    check_neurons,
    check_shape,
)

FORMAT_TAG = "snn-deploy-deployment"
FORMAT_VERSION = 2  # 2: layer kinds (dense, conv, input), neuron shapes, conv geometry
READ_VERSIONS = (1, 2)  # a version-1 file holds dense layers only
SIGN_MODES = lava.SIGN_MODES


@dataclasses.dataclass(frozen=True)
class LayerStats:
    """How much the quantization of one layer had to bend the float values."""

    weights_total: int
    weights_saturated: int  # clipped at the mantissa range
    threshold_saturated: bool
    bias_saturated: int
    u_peak_share: float  # calibrated (or bounded) peak |u| / state range, < 1 means no wrap

    @property
    def saturated_share(self) -> float:
        """Share of this layer's weights, biases and threshold that hit a range limit."""
        n = self.weights_total + 1 + max(self.bias_saturated, 0)
        return (self.weights_saturated + int(self.threshold_saturated) + self.bias_saturated) / n


@dataclasses.dataclass(frozen=True)
class RecurrentSynapse:
    """A Lava ``Dense`` from a layer's spikes back to the same layer (one step late, like any
    Dense): int32 mantissas (n, n) with their own exponent, sign mode and weight bits."""

    weights: np.ndarray
    weight_exp: int
    sign_mode: str
    num_weight_bits: int


# What feeds a layer's neurons: a Lava Dense (``weights`` (n, n_in)), a Lava Conv (``weights``
# (C_out, C_in / groups, kH, kW), ``conv`` its geometry) or nothing, for an input layer of neurons
# (``weights`` (n, 0)): the data enter as its bias (netx's ``input`` block) or as its input current.
LAYER_KINDS = ("dense", "conv", "input")
MAX_DELAY = 62  # the largest synaptic delay netx gives Lava's DelayDense (its max_delay)


@dataclasses.dataclass(frozen=True)
class QuantLayer:
    """A Lava ``Dense`` (integer weights) feeding a Lava CUBA ``LIF`` population, in Loihi 2's
    fixed-point arithmetic (Lava 0.10: ``PyDenseModelBitAcc``, lava/proc/dense/models.py, and
    ``AbstractPyLifModelFixed``, lava/proc/lif/models.py; REFERENCES.md). Per time step t, on
    int32 arrays (sums wrap modulo 2**32), with the profile's shifts (6) and 12-bit decays:

        w     = truncate(clip(weights, sign_mode), num_weight_bits)     (lava/utils/weightutils.py)
        a_t   = (sum_j w_ij s_j,t-1) << weight_exp       (>> -weight_exp, flooring, when negative)
                [+ (sum_j r_ij z_j,t-1) << rec.weight_exp, the recurrent Dense, at the same port]
        u_t   = sign(u (4096 - du - 1)) (|u (4096 - du - 1)| >> 12) + (a_t << 6),
                folded once into 24 bits (u > 2**23 loses 2**24, u <= -2**23 gains it)
        v_t   = clip(sign(v (4096 - dv)) (|v (4096 - dv)| >> 12) + u_t + (bias_mant << bias_exp),
                     -(2**23 - 1), 2**23 - 1)
        z_t   = [v_t > vth << 6];   v_t <- 0 where z_t (u is kept)

    ``delays`` (int32 (n,), 0..MAX_DELAY, dense layers only): Lava's ``DelayDense`` as netx builds
    it, a delay per post-synaptic neuron j on every synapse into it: a_t[j] = (w s_{t-1-d_j})_j.

    The Dense delays its output by one step, so layer l of a network sees layer l - 1's spikes
    one step later on Lava; every simulator here runs each layer in its own local time, every
    sample from rest. ``run.lif_core`` is the one implementation of these equations.

    For ``kind`` "conv" the synapse is a Lava ``Conv`` (``PyConvModelFixed``, geometry
    ``convert.conv.ConvGeometry``): a_t = wrap24(conv2d(s_{t-1}, weights)), the weights used as
    they are (no exponent, no truncation), wrap24(a) = (a + 2**23) mod 2**24 - 2**23; the rest as
    above. For ``kind`` "input"
    there is no synapse: a_t is the data (input current), or the data are the bias mantissas of
    each step (``--input-as bias``, netx's ``input`` block). Lava's ``LIFReset`` zeroes u and v
    before the update of its reset steps (``run.emulator.Pipeline``).

    ``weights`` are int32 mantissas (n_out, n_in), already on the grid Lava's fixed-point Dense
    uses (clipped and truncated for ``sign_mode`` and ``num_weight_bits``); a conv's are
    (C_out, C_in / groups, kH, kW), an input layer's (n, 0). ``scale`` is the number
    of integer voltage units per float voltage unit of the source graph.
    """

    synapse: str
    neuron: str
    weights: np.ndarray
    weight_exp: int
    sign_mode: str
    num_weight_bits: int
    num_message_bits: int
    du: int
    dv: int
    vth: int
    bias_mant: np.ndarray  # int32 (n,)
    bias_exp: np.ndarray  # int32 (n,)
    scale: float
    stats: LayerStats
    recurrent: RecurrentSynapse | None = None
    kind: str = "dense"  # a key of LAYER_KINDS
    conv: ConvGeometry | None = None  # for kind "conv"
    shape: tuple[int, ...] = ()  # the neurons' (C, H, W) shape; () for a flat (n,) layer
    delays: np.ndarray | None = None  # int32 (n,): a DelayDense's delay per neuron (kind "dense")

    @property
    def size(self) -> int:
        """Number of neurons."""
        return int(np.prod(self.shape)) if self.shape else int(self.weights.shape[0])


@dataclasses.dataclass(frozen=True)
class Deployment:
    profile: Profile
    layers: tuple[QuantLayer, ...]
    input_size: int
    input_scale: int  # graded input: x_int = round(x * input_scale); 1 for binary spikes
    dt: float
    coding: Coding
    source_sha256: str
    source_nir: bytes
    calibration: str

    @property
    def depth(self) -> int:
        return len(self.layers)


# Weight matrices lowered from conv layers are mostly zeros (the Sinabs N-MNIST CNN: 28M weights,
# 112 MB as int32, a few MB compressed); gzip level 1 is fast and deterministic.
_COMPRESSED = {"compression": "gzip", "compression_opts": 1, "shuffle": True}
_LAYER_SCALARS = ("weight_exp", "num_weight_bits", "num_message_bits", "du", "dv", "vth")
_CONV_PAIRS = ("kernel", "stride", "padding", "dilation")


def _write_kind(g: h5py.Group, layer: QuantLayer) -> None:
    """Format 2: the layer's kind, its neurons' shape when set, a conv's geometry (``conv_*``)."""
    g.attrs["kind"] = layer.kind
    if layer.shape:
        g.attrs["shape"] = np.asarray(layer.shape, dtype=np.int64)
    if layer.conv is not None:
        for key in ("in_shape", "out_shape", *_CONV_PAIRS):
            g.attrs[f"conv_{key}"] = np.asarray(getattr(layer.conv, key), dtype=np.int64)
        g.attrs["conv_groups"] = int(layer.conv.groups)


def save_deployment(dep: Deployment, path: str | Path) -> None:
    """Write ``dep`` as HDF5 (atomically)."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["format"] = FORMAT_TAG
        f.attrs["version"] = FORMAT_VERSION
        f.attrs["profile_name"] = dep.profile.name
        f.attrs["profile_toml"] = dep.profile.toml_text
        f.attrs["profile_sha256"] = dep.profile.sha256
        f.attrs["source_sha256"] = dep.source_sha256
        f.attrs["input_size"] = dep.input_size
        f.attrs["input_scale"] = dep.input_scale
        f.attrs["dt"] = dep.dt
        f.attrs["calibration"] = dep.calibration
        coding = f.create_group("coding")
        for key, value in dep.coding.entries:
            coding.attrs[key] = value
        f.create_dataset("source_nir", data=np.frombuffer(dep.source_nir, dtype=np.uint8))
        for i, layer in enumerate(dep.layers):
            g = f.create_group(f"layers/{i}")
            g.attrs["synapse"] = layer.synapse
            g.attrs["neuron"] = layer.neuron
            g.attrs["sign_mode"] = layer.sign_mode
            g.attrs["scale"] = layer.scale
            for key in _LAYER_SCALARS:
                g.attrs[key] = int(getattr(layer, key))
            _write_kind(g, layer)
            g.create_dataset("weights", data=layer.weights.astype(np.int32),
                             **(_COMPRESSED if layer.weights.size else {}))
            g.create_dataset("bias_mant", data=layer.bias_mant.astype(np.int32))
            g.create_dataset("bias_exp", data=layer.bias_exp.astype(np.int32))
            if layer.delays is not None:
                g.create_dataset("delays", data=np.asarray(layer.delays, dtype=np.int32))
            if layer.recurrent is not None:
                r = g.create_group("recurrent")
                r.create_dataset("weights", data=layer.recurrent.weights.astype(np.int32),
                                 **_COMPRESSED)
                r.attrs["weight_exp"] = int(layer.recurrent.weight_exp)
                r.attrs["sign_mode"] = layer.recurrent.sign_mode
                r.attrs["num_weight_bits"] = int(layer.recurrent.num_weight_bits)
            s = g.create_group("stats")
            for key, value in dataclasses.asdict(layer.stats).items():
                s.attrs[key] = value


def _read_stats(a: h5py.AttributeManager, where: str) -> LayerStats:
    value = a["threshold_saturated"]
    flag = np.asarray(value)
    if flag.shape != () or flag.dtype.kind not in "biu" or int(flag) not in (0, 1):
        raise InputFileError(f"{where}: stats threshold_saturated must be a boolean, got {value!r}")
    return LayerStats(
        weights_total=_integer(a["weights_total"], f"{where}: stats weights_total"),
        weights_saturated=_integer(a["weights_saturated"], f"{where}: stats weights_saturated"),
        threshold_saturated=bool(flag), u_peak_share=_real(a["u_peak_share"], f"{where}: u_peak_share"),
        bias_saturated=_integer(a["bias_saturated"], f"{where}: stats bias_saturated"),
    )


def _read_recurrent(g: h5py.Group, where: str) -> RecurrentSynapse | None:
    if "recurrent" not in g:
        return None
    r = g["recurrent"]
    return RecurrentSynapse(weights=_int32_array(r["weights"], f"{where}: recurrent weights"),
                            weight_exp=_integer(r.attrs["weight_exp"], f"{where}: recurrent weight_exp"),
                            sign_mode=_text(r.attrs["sign_mode"]),
                            num_weight_bits=_integer(r.attrs["num_weight_bits"],
                                                     f"{where}: recurrent num_weight_bits"))


def _read_kind(a: h5py.AttributeManager, where: str) -> dict:
    """The format-2 fields; a version-1 layer (no ``kind``) is a flat dense layer."""
    fields: dict = {"kind": _text(a.get("kind", "dense"))}
    if "shape" in a:
        fields["shape"] = _int_tuple(a["shape"], f"{where}: shape")
    if "conv_in_shape" in a:
        sizes = {"in_shape": 3, "out_shape": 3, **{k: 2 for k in _CONV_PAIRS}}
        fields["conv"] = ConvGeometry(
            **{k: _int_tuple(a[f"conv_{k}"], f"{where}: conv {k}", n) for k, n in sizes.items()},
            groups=_integer(a["conv_groups"], f"{where}: conv groups"))
    return fields


def _read_layer(g: h5py.Group, where: str) -> QuantLayer:
    return QuantLayer(
        **_read_kind(g.attrs, where),
        synapse=_text(g.attrs["synapse"]), neuron=_text(g.attrs["neuron"]),
        weights=_int32_array(g["weights"], f"{where}: weights"),
        sign_mode=_text(g.attrs["sign_mode"]), scale=_real(g.attrs["scale"], f"{where}: scale"),
        bias_mant=_int32_array(g["bias_mant"], f"{where}: bias_mant"),
        bias_exp=_int32_array(g["bias_exp"], f"{where}: bias_exp"),
        stats=_read_stats(g["stats"].attrs, where), recurrent=_read_recurrent(g, where),
        delays=_int32_array(g["delays"], f"{where}: delays") if "delays" in g else None,
        **{k: _integer(g.attrs[k], f"{where}: {k}") for k in _LAYER_SCALARS},
    )


def load_deployment(path: str | Path) -> Deployment:
    """Read a Deployment file, refusing anything that is not one (one clear error): a damaged
    file, values of the wrong type, or values outside its profile's formats
    (``validate_deployment``)."""
    path = Path(path)
    with open_checked(path, what="deployment file",
                      unreadable=f"{path} is not an HDF5 deployment file") as f:
        try:
            if _text(f.attrs.get("format", "")) != FORMAT_TAG:
                raise InputFileError(f"{path} is not an snn-deploy deployment (no '{FORMAT_TAG}' tag)")
            version = np.asarray(f.attrs.get("version", -1))
            if not (version.shape == () and version.dtype.kind in "iu"
                    and int(version) in READ_VERSIONS):
                raise InputFileError(
                    f"{path}: deployment format version {version} is not supported (this"
                    f" snn-deploy reads versions {', '.join(map(str, READ_VERSIONS))})"
                )
            profile = parse_profile(_text(f.attrs["profile_toml"]), origin=f"{path}:profile")
            if profile.sha256 != _text(f.attrs["profile_sha256"]):
                raise InputFileError(f"{path}: the embedded profile does not match its hash")
            layers = tuple(_read_layer(f[f"layers/{i}"], f"{path}: layer {i}")
                           for i in range(len(f["layers"])))
            dep = Deployment(
                profile=profile, layers=layers,
                input_size=_integer(f.attrs["input_size"], f"{path}: input_size"),
                input_scale=_integer(f.attrs["input_scale"], f"{path}: input_scale"),
                dt=_real(f.attrs["dt"], f"{path}: dt"),
                coding=Coding.read({k: (v.item() if hasattr(v, "item") else _text(v))
                                    for k, v in f["coding"].attrs.items()},
                                   where=f"{path}: coding"),
                source_sha256=_text(f.attrs["source_sha256"]),
                source_nir=bytes(np.asarray(f["source_nir"], dtype=np.uint8)),
                calibration=_text(f.attrs["calibration"]),
            )
        except (ProfileError, InputFileError):
            raise
        except (KeyError, ValueError, TypeError, OSError, RuntimeError, OverflowError) as exc:
            raise InputFileError(f"{path} is a damaged deployment file: {exc}") from None
    validate_deployment(dep, origin=str(path))
    return dep


def validate_deployment(dep: Deployment, *, origin: str) -> None:
    """Check shapes and every value against the profile's formats (themselves within Lava's,
    snn_deploy/lava_formats.py), per layer kind (``quantize.validation``); raises
    QuantizationError naming the layer and the range."""
    check_input(dep, origin)
    width = dep.input_size
    for i, layer in enumerate(dep.layers):
        where = f"{origin}: layer {i} ({layer.neuron})"
        if layer.kind not in LAYER_KINDS:
            raise QuantizationError(f"{where}: unknown layer kind {layer.kind!r}, expected one of"
                                    f" {', '.join(LAYER_KINDS)}")
        check_shape(layer, where)
        check_delays(layer, MAX_DELAY, where)
        if layer.kind == "conv":
            check_conv(layer, width, dep.profile, where)
        elif layer.kind == "input":
            check_input_layer(layer, i, dep.input_size, dep.profile, where)
        else:
            check_dense(layer, width, dep.profile, where)
        check_neurons(layer, dep.profile, where)
        width = layer.size
