"""Export a Deployment as a lava-dl netx HDF5 network that netx runs bit for bit alike (stage 3).

``write_netx`` is exact or refuses: a layer whose effective weights
``W * 2**weight_exp`` are not integers netx reproduces losslessly, or whose bias is not a multiple
of ``1 << 6``, raises ``QuantizationError``. Deployments quantized with weight exponents above 0
(the ``loihi2`` profile's usual choice) do not fit netx's format; quantize with a profile whose
``[weights] exp_min = exp_max = 0`` to export. The file also records, as HDF5 attributes netx
ignores, the Deployment's own parameterisation (weight exponent, sign mode, bias exponents,
names, coding, dt), so that ``read_netx(write_netx(dep))`` gives back the same integers; they are
used only after checking that they describe the same integer arithmetic as the netx data.

netx's Lava parameters and their equations are described in ``quantize/netx.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from snn_deploy.errors import QuantizationError
from snn_deploy.fileio import atomic_path
from snn_deploy.quantize.dense_grid import lava_dense_grid
from snn_deploy.quantize.deployment import Deployment, QuantLayer
from snn_deploy.quantize.netx import (
    FORMAT_TAG,
    FORMAT_VERSION,
    LAVA_FORMATS,
    NETX_BIAS_EXP,
    check_profile,
    netx_synapse,
)


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
    if layer.delays is not None:  # netx: a delay per output neuron, repeated over the inputs
        g.create_dataset("delay", data=np.asarray(layer.delays, dtype=np.float32))
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
        QuantizationError: layers whose integers netx cannot reproduce exactly, all named; conv
            and input layers (not written yet).
        ProfileError: a profile without Lava's fixed-point formats.
    """
    check_profile(dep.profile)
    native = [f"layer {i} ({layer.neuron}) is {'an' if layer.kind == 'input' else 'a'}"
              f" {layer.kind} layer: writing netx {layer.kind} blocks is not supported yet"
              for i, layer in enumerate(dep.layers) if layer.kind != "dense"]
    if native:
        raise QuantizationError("cannot write a netx file for this deployment: " + "; ".join(native))
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
            {k: v.item() if isinstance(v, np.generic) else v for k, v in dep.coding.entries})
        f.attrs["snn_deploy_dt"] = dep.dt
        f.attrs["snn_deploy_input_scale"] = dep.input_scale
        f.attrs["snn_deploy_input_message_bits"] = dep.layers[0].num_message_bits
        f.create_dataset("simulation/Ts", data=1)
        f.create_dataset("simulation/tSample", data=dep.coding.steps)
        inp = f.create_group("layer/0")
        inp.create_dataset("type", data=np.array([b"input"], dtype="S10"))
        inp.create_dataset("shape", data=np.array([dep.input_size]))
        width = dep.input_size
        following = [layer.num_message_bits for layer in dep.layers[1:]] + [0]
        for i, (layer, bits) in enumerate(zip(dep.layers, following), start=1):
            _write_layer(f.create_group(f"layer/{i}"), layer, n_in=width, out_message_bits=bits)
            width = layer.size
