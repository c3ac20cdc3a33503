"""Import a lava-dl netx HDF5 network as a Deployment, as netx builds it on Lava (stage 3).

netx's Lava parameters and their equations are described in ``quantize/netx.py``; one layer is
read by ``netx_layers``. What a Deployment cannot hold raises ``UnsupportedNode`` listing every
offending layer: pool and the other non-dense, non-conv types, complex dense layers, non-zero
synaptic delays, neurons other than CUBA/LOIHI, dense layers without a neuron (netx gives them a
non-leaking integrator with threshold 131072 that never spikes), and an input layer with a neuron:
netx builds it as a LIF driven only through its bias (its input port is connected to nothing in
lava-dl 0.6), so external spikes cannot reach it. ``skip_layers`` / ``num_layers`` select layers
exactly as the same arguments of ``netx.hdf5.Network`` do: ``skip_layers=1`` drops such an input
layer and feeds the spikes straight into the first dense layer, as netx does.
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
from snn_deploy.quantize.netx_layers import decode_text, read_conv, read_dense, read_scalar

_SUPPORTED_TYPES = ("input", "flatten", "dense", "dense_rec", "conv")


def _neuron_problem(group: h5py.Group) -> str | None:
    kind = decode_text(group["type"])
    if kind not in NETX_LIF_NEURONS:
        return f"{kind} neuron (only {'/'.join(NETX_LIF_NEURONS)} map to a Lava LIF)"
    return None


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
        kind = decode_text(g["type"])
        if kind not in _SUPPORTED_TYPES:
            problems.append(f"layer {i} ({kind})")
        elif kind == "input" and "neuron" in g:
            problems.append(f"layer {i} (input with a {decode_text(g['neuron/type'])} neuron:"
                            " netx drives it only through its bias, not from spikes; import with"
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
    if "neuron" not in g or decode_text(g["type"]) not in ("input", "dense", "conv"):
        return before
    neuron = g["neuron"]
    return read_scalar(neuron, "messageBits", neuron.name) if "messageBits" in neuron else 0


def _coding(f: h5py.File) -> Coding:
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
        if decode_text(g["type"]) in ("input", "conv") and "shape" in g:  # netx: its input_shape
            shape = tuple(int(v) for v in np.asarray(g["shape"][()]).reshape(-1))
        message_bits = _message_bits(g, message_bits)
    quant: list[QuantLayer] = []
    unflattened = False  # a conv's (x, y, c) output not yet flattened
    for i in keep:
        g = layers[str(i)]
        kind = decode_text(g["type"])
        if kind == "input" and "shape" in g:
            shape = tuple(int(v) for v in np.asarray(g["shape"][()]).reshape(-1))
        elif kind == "flatten":
            unflattened = False
        elif kind == "conv":
            layer, shape = read_conv(g, i, in_shape=shape, message_bits=message_bits,
                                      origin=str(path))
            quant.append(layer)
            unflattened = True
        elif kind in ("dense", "dense_rec"):
            if unflattened:
                raise UnsupportedNode(f"{path}: layer {i} ({kind}) follows a conv layer without a"
                                      " flatten layer (netx cannot connect them either)")
            width = quant[-1].size if quant else None
            quant.append(read_dense(g, i, width=width, message_bits=message_bits,
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
