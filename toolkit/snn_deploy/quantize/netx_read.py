"""Import a lava-dl netx HDF5 network as a Deployment, as netx builds it on Lava (stage 3).

netx's Lava parameters and their equations are described in ``quantize/netx.py``; one layer is
read by ``netx_layers``. ``dense`` / ``dense_rec`` layers become Dense layers, ``conv`` layers
native Conv layers, a first ``input`` layer with a neuron an input layer of neurons (netx drives
it only through its bias: its input port is connected to nothing in lava-dl 0.6, so the data
enter as its bias at run time); ``flatten`` is no layer (a Dense after it takes the (C, H, W)
output flattened C-major, as netx's flatten does). What a Deployment cannot hold raises
``UnsupportedNode`` listing every offending layer: pool, average and the other types, complex
dense layers, synaptic delays other than one per neuron of a dense layer (those become
``QuantLayer.delays``, a DelayDense), neurons other than CUBA/LOIHI, an input layer of neurons
after other layers, and dense or conv layers without a neuron (netx gives them a non-leaking
integrator, du = -1 and threshold 131072, beyond a Deployment's formats). ``skip_layers`` /
``num_layers`` select layers exactly as the same arguments of ``netx.hdf5.Network`` do:
``skip_layers=1`` drops an input layer and feeds the spikes straight into the next layer, as
netx does.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import h5py
import numpy as np

from snn_deploy.coding import DEFAULT_STEPS, Coding
from snn_deploy.errors import InputFileError, UnsupportedNode
from snn_deploy.hdf5_limits import open_checked
from snn_deploy.profiles import Profile
from snn_deploy.quantize.deployment import Deployment, QuantLayer, validate_deployment
from snn_deploy.quantize.netx import NETX_LIF_NEURONS, check_profile
from snn_deploy.quantize.netx_layers import (
    decode_text,
    delay_problem,
    read_conv,
    read_dense,
    read_input,
    read_scalar,
)

_SUPPORTED_TYPES = ("input", "flatten", "dense", "dense_rec", "conv")
_NOT_YET = {"average": "average readout before other layers: it is read as the output decoder"
                       " only as the last layer kept"}
# netx/hdf5.py create_dense: a dense layer without a neuron group gets this one
_NETX_DEFAULT_NEURON = ("netx's default integrator, iDecay 0 and vThMant 1 << 17, needs du = -1"
                        " and vth 131072, beyond a Deployment's du 0..4095 and 17-bit vth")


def _neuron_problem(group: h5py.Group) -> str | None:
    kind = decode_text(group["type"])
    if kind not in NETX_LIF_NEURONS:
        return f"{kind} neuron (only {'/'.join(NETX_LIF_NEURONS)} map to a Lava LIF)"
    return None


def _dense_problem(group: h5py.Group) -> str | None:
    if "neuron" not in group:
        return f"no neuron: {_NETX_DEFAULT_NEURON}"
    if "weight/imag" in group:
        return "complex weights"
    problem = _neuron_problem(group["neuron"])
    if problem:
        return problem
    if "delay" in group and np.any(np.asarray(group["delay"][()]) != 0):
        if decode_text(group["type"]) != "dense":
            return "synaptic delays (only dense layers, Lava's DelayDense, have them)"
        return delay_problem(group)
    return None


def _layer_problems(layers: h5py.Group, keep: range) -> list[str]:
    problems = []
    for i in keep:
        g = layers[str(i)]
        kind = decode_text(g["type"])
        if kind not in _SUPPORTED_TYPES:
            problems.append(f"layer {i} ({_NOT_YET.get(kind, kind)})")
        elif kind == "input" and "neuron" in g:
            problem = _neuron_problem(g["neuron"])
            if i != keep.start:
                problem = "a neuron after other layers: an input layer of neurons comes first"
            if problem:
                problems.append(f"layer {i} (input with {problem})")
        elif kind in ("dense", "dense_rec", "conv"):
            problem = _dense_problem(g)
            if kind == "dense_rec" and "weight_rec" not in g:
                problem = "no weight_rec"
            if problem:
                problems.append(f"layer {i} ({kind}: {problem})")
    return problems


def _message_bits(g: h5py.Group, before: int) -> int:
    """netx/hdf5.py _create: a layer's neuron sets the message bits of the next layer's input."""
    if "neuron" not in g or decode_text(g["type"]) not in ("input", "dense", "conv"):
        return before
    neuron = g["neuron"]
    return read_scalar(neuron, "messageBits", neuron.name) if "messageBits" in neuron else 0


def _average_readout(layers: h5py.Group, start: int, end: int) -> int | None:
    """The populations (classes) of an ``average`` block that ends the kept layers, else None.

    netx cannot build it (``create_average`` raises NotImplementedError); what it computes is the
    mean spike count of each of its C equal populations of the layer before: the coding's
    ``average`` decoder (``coding.average_logits``)."""
    if end - start < 2 or decode_text(layers[str(end - 1)]["type"]) != "average":
        return None
    return int(np.prod(_chw(layers[str(end - 1)])))


def _coding(f: h5py.File, readout: int | None = None) -> Coding:
    coding = _file_coding(f)
    if readout is None:
        return coding
    return Coding.read({**coding.to_dict(), "decoder": "average", "decoder_groups": readout},
                       where=f"{f.filename}: average readout")


def _file_coding(f: h5py.File) -> Coding:
    if "snn_deploy_coding" in f.attrs:
        return Coding.read(json.loads(decode_text(f.attrs["snn_deploy_coding"])),
                           where=f"{f.filename}: snn_deploy_coding")
    steps = DEFAULT_STEPS
    if "simulation/tSample" in f and "simulation/Ts" in f:
        t_sample = float(np.asarray(f["simulation/tSample"][()]).reshape(-1)[0])
        ts = float(np.asarray(f["simulation/Ts"][()]).reshape(-1)[0])
        steps = max(1, int(round(t_sample / ts))) if ts > 0 else DEFAULT_STEPS
    return Coding.read({"encoding": "rate", "steps": steps},
                       where=f"{f.filename}: simulation tSample / Ts")


def _chw(g: h5py.Group) -> tuple[int, ...]:
    return tuple(int(v) for v in np.asarray(g["shape"][()]).reshape(-1))


def _skipped(layers: h5py.Group, skip_layers: int, message_bits: int
             ) -> tuple[tuple[int, ...] | None, int]:
    """What the skipped layers leave: the (C, H, W) shape feeding a conv (netx's input_shape) and
    the message bits of the first kept layer's input."""
    shape = None
    for i in range(skip_layers):
        g = layers[str(i)]
        if decode_text(g["type"]) in ("input", "conv") and "shape" in g:
            shape = _chw(g)
        message_bits = _message_bits(g, message_bits)
    return shape, message_bits


def _read_layers(layers: h5py.Group, keep: range, shape: tuple[int, ...] | None,
                 message_bits: int, origin: str) -> list[QuantLayer]:
    quant: list[QuantLayer] = []
    unflattened = False  # a conv's (x, y, c) output not yet flattened
    for i in keep:
        g = layers[str(i)]
        kind = decode_text(g["type"])
        if kind == "input":
            shape = _chw(g) if "shape" in g else shape
            if "neuron" in g:
                quant.append(read_input(g, i, message_bits=message_bits, origin=origin))
        elif kind == "flatten":
            unflattened = False
        elif kind == "conv":
            layer, shape = read_conv(g, i, in_shape=shape, message_bits=message_bits, origin=origin)
            quant.append(layer)
            unflattened = True
        elif kind in ("dense", "dense_rec"):
            if unflattened:
                raise UnsupportedNode(f"{origin}: layer {i} ({kind}) follows a conv layer without a"
                                      " flatten layer (netx cannot connect them either)")
            width = quant[-1].size if quant else None
            quant.append(read_dense(g, i, width=width, message_bits=message_bits,
                                    origin=origin, recurrent=kind == "dense_rec"))
        message_bits = _message_bits(g, message_bits)
    return quant


def _input_size(first: QuantLayer) -> int:
    """The width of what enters the first layer: its Dense's inputs, its Conv's (C, H, W) input,
    or one value per neuron of an input layer."""
    if first.kind == "conv" and first.conv is not None:
        return int(np.prod(first.conv.in_shape))
    return first.size if first.kind == "input" else int(first.weights.shape[1])


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
    readout = _average_readout(layers, skip_layers, end)
    keep = range(skip_layers, end - (readout is not None))
    problems = _layer_problems(layers, keep)
    if problems:
        raise UnsupportedNode(f"{path}: a Deployment cannot represent " + "; ".join(problems))
    shape, message_bits = _skipped(layers, skip_layers,
                                   int(f.attrs.get("snn_deploy_input_message_bits", 0)))
    quant = _read_layers(layers, keep, shape, message_bits, str(path))
    if not quant:
        raise UnsupportedNode(f"{path}: no input, dense or conv layer among layers"
                              f" {keep.start}..{keep.stop - 1}")
    return Deployment(  # its value ranges: validate_deployment, which read_netx calls
        profile=profile, layers=tuple(quant), input_size=_input_size(quant[0]),
        input_scale=int(f.attrs.get("snn_deploy_input_scale", 1)),
        dt=float(f.attrs.get("snn_deploy_dt", 1.0)), coding=_coding(f, readout),
        source_sha256=hashlib.sha256(path.read_bytes()).hexdigest(), source_nir=b"",
        calibration="imported from netx",
    )


def read_netx(path: str | Path, *, profile: Profile, skip_layers: int = 0,
              num_layers: int | None = None) -> Deployment:
    """Import a lava-dl netx HDF5 network as netx's ``Network`` would build it on Lava.

    Args:
        profile: the Deployment's profile; it must use Lava's fixed-point formats.
        skip_layers, num_layers: as in ``netx.hdf5.Network``: keep the layer entries with index
            in [skip_layers, num_layers); the input goes into the first layer kept.

    The Deployment takes spikes (or, where the file says so, graded values) into its first dense
    or conv layer, or its data as the bias of a first input layer of neurons (netx's ``input``
    with a neuron, lava-dl's PilotNet); ``input_scale`` is 1, ``dt`` 1.0 (netx has no time
    unit), ``coding`` a rate code over ``simulation/tSample / Ts`` steps (32 if absent),
    ``source_sha256`` the netx file's SHA-256 and ``source_nir`` empty: there is no float NIR
    source behind a netx file.

    Raises:
        InputFileError: a missing, corrupt or non-netx file.
        UnsupportedNode: layers a Deployment cannot hold, all named in one message.
        QuantizationError, ProfileError: values outside the profile's formats.
    """
    path = Path(path)
    check_profile(profile)
    if skip_layers < 0 or (num_layers is not None and num_layers < 1):
        raise InputFileError(f"skip_layers {skip_layers} / num_layers {num_layers} select nothing")
    f = open_checked(path, what="netx file",
                     unreadable=f"{path} is not a readable HDF5 file (truncated, or not HDF5 at"
                                " all; lava-dl netx networks are HDF5)")
    try:
        with f:
            dep = _read(f, path, profile, skip_layers, num_layers)
    except (KeyError, ValueError, TypeError, OSError, RuntimeError, json.JSONDecodeError) as exc:
        raise InputFileError(f"{path} is a damaged netx file: {exc}") from None
    validate_deployment(dep, origin=str(path))
    return dep
