"""The Deployment: a network in a profile's integer formats, saved as versioned HDF5.

A Deployment file records the profile it was made for (its TOML text and hash), the source NIR
file's SHA-256 and the source file itself (so the float reference travels with it).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import h5py
import numpy as np

from snn_deploy.errors import InputFileError, ProfileError, UserError
from snn_deploy.fileio import atomic_path
from snn_deploy.hdf5_limits import check_declared_sizes
from snn_deploy.profiles import Profile, parse_profile

FORMAT_TAG = "snn-deploy-deployment"
FORMAT_VERSION = 1
SIGN_MODES = ("mixed", "excitatory", "inhibitory")


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


@dataclasses.dataclass(frozen=True)
class QuantLayer:
    """A Lava ``Dense`` (integer weights) feeding a Lava CUBA ``LIF`` population.

    ``weights`` are int32 mantissas (n_out, n_in), already on the grid Lava's fixed-point Dense
    uses (clipped and truncated for ``sign_mode`` and ``num_weight_bits``). ``scale`` is the number
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

    @property
    def size(self) -> int:
        return int(self.weights.shape[0])


@dataclasses.dataclass(frozen=True)
class Deployment:
    profile: Profile
    layers: tuple[QuantLayer, ...]
    input_size: int
    input_scale: int  # graded input: x_int = round(x * input_scale); 1 for binary spikes
    dt: float
    coding: dict
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
        for key, value in dep.coding.items():
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
            g.create_dataset("weights", data=layer.weights.astype(np.int32), **_COMPRESSED)
            g.create_dataset("bias_mant", data=layer.bias_mant.astype(np.int32))
            g.create_dataset("bias_exp", data=layer.bias_exp.astype(np.int32))
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


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _read_recurrent(g: h5py.Group) -> RecurrentSynapse | None:
    if "recurrent" not in g:
        return None
    r = g["recurrent"]
    return RecurrentSynapse(weights=np.asarray(r["weights"], dtype=np.int32),
                            weight_exp=int(r.attrs["weight_exp"]),
                            sign_mode=_text(r.attrs["sign_mode"]),
                            num_weight_bits=int(r.attrs["num_weight_bits"]))


def load_deployment(path: str | Path) -> Deployment:
    """Read a Deployment file, refusing anything that is not one (one clear error)."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"deployment file not found: {path}")
    check_declared_sizes(path, origin=str(path))
    try:
        f = h5py.File(path, "r")
    except OSError:
        raise InputFileError(f"{path} is not an HDF5 deployment file") from None
    with f:
        if _text(f.attrs.get("format", "")) != FORMAT_TAG:
            raise InputFileError(f"{path} is not an snn-deploy deployment (no '{FORMAT_TAG}' tag)")
        if int(f.attrs.get("version", -1)) != FORMAT_VERSION:
            raise InputFileError(
                f"{path}: deployment format version {f.attrs.get('version')} is not supported"
                f" (this snn-deploy reads version {FORMAT_VERSION})"
            )
        try:
            profile = parse_profile(_text(f.attrs["profile_toml"]), origin=f"{path}:profile")
            if profile.sha256 != _text(f.attrs["profile_sha256"]):
                raise InputFileError(f"{path}: the embedded profile does not match its hash")
            layers = []
            for i in range(len(f["layers"])):
                g = f[f"layers/{i}"]
                stats = LayerStats(**{k: g["stats"].attrs[k].item()
                                      for k in ("weights_total", "weights_saturated",
                                                "threshold_saturated", "bias_saturated",
                                                "u_peak_share")})
                layers.append(QuantLayer(
                    synapse=_text(g.attrs["synapse"]), neuron=_text(g.attrs["neuron"]),
                    weights=np.asarray(g["weights"], dtype=np.int32),
                    sign_mode=_text(g.attrs["sign_mode"]), scale=float(g.attrs["scale"]),
                    bias_mant=np.asarray(g["bias_mant"], dtype=np.int32),
                    bias_exp=np.asarray(g["bias_exp"], dtype=np.int32),
                    stats=stats, recurrent=_read_recurrent(g),
                    **{k: int(g.attrs[k]) for k in _LAYER_SCALARS},
                ))
            dep = Deployment(
                profile=profile, layers=tuple(layers),
                input_size=int(f.attrs["input_size"]), input_scale=int(f.attrs["input_scale"]),
                dt=float(f.attrs["dt"]),
                coding={k: (v.item() if hasattr(v, "item") else _text(v))
                        for k, v in f["coding"].attrs.items()},
                source_sha256=_text(f.attrs["source_sha256"]),
                source_nir=bytes(np.asarray(f["source_nir"], dtype=np.uint8)),
                calibration=_text(f.attrs["calibration"]),
            )
        except ProfileError:
            raise
        except (KeyError, ValueError, TypeError, OSError, RuntimeError) as exc:
            raise InputFileError(f"{path} is a damaged deployment file: {exc}") from None
    validate_deployment(dep, origin=str(path))
    return dep


def validate_deployment(dep: Deployment, *, origin: str) -> None:
    """Check shapes and value ranges against the profile; raises UserError naming the layer."""
    width = dep.input_size
    p = dep.profile
    for i, layer in enumerate(dep.layers):
        where = f"{origin}: layer {i} ({layer.neuron})"
        if layer.weights.ndim != 2 or layer.weights.shape[1] != width:
            raise UserError(f"{where}: weights of shape {layer.weights.shape} do not take {width} inputs")
        n = layer.size
        if layer.bias_mant.shape != (n,) or layer.bias_exp.shape != (n,):
            raise UserError(f"{where}: bias arrays do not have shape ({n},)")
        if layer.sign_mode not in SIGN_MODES:
            raise UserError(f"{where}: unknown sign mode {layer.sign_mode!r}")
        rec = layer.recurrent
        if rec is not None and (rec.weights.shape != (n, n) or rec.sign_mode not in SIGN_MODES):
            raise UserError(f"{where}: recurrent weights of shape {rec.weights.shape} and sign mode"
                            f" {rec.sign_mode!r}; expected ({n}, {n}) and one of {SIGN_MODES}")
        if not (0 <= layer.du < p.decay_unity and 0 <= layer.dv < p.decay_unity + 1):
            raise UserError(f"{where}: du={layer.du}, dv={layer.dv} outside the {p.decay_bits}-bit range")
        if not 0 <= layer.vth <= p.vth_max:
            raise UserError(f"{where}: vth={layer.vth} outside 0..{p.vth_max}")
        width = n
