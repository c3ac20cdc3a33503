"""Deployment layer kinds (dense, conv, input): format 2 saves and loads them unchanged, format-1
files still load as dense layers, and ``validate_deployment`` refuses each inconsistent field of a
conv or input layer in one line that names the layer."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import h5py
import numpy as np
import pytest
from snn_deploy.coding import Coding
from snn_deploy.convert.conv import ConvGeometry
from snn_deploy.errors import InputFileError, QuantizationError
from snn_deploy.quantize.deployment import (
    FORMAT_VERSION,
    Deployment,
    QuantLayer,
    RecurrentSynapse,
    load_deployment,
    save_deployment,
    validate_deployment,
)

from tests.factories import NO_STATS, PROFILE


def _layer(name: str, weights: np.ndarray, n: int, **extra) -> QuantLayer:
    return QuantLayer(synapse=f"syn-{name}", neuron=name, weights=weights.astype(np.int32),
                      weight_exp=0, sign_mode="mixed", num_weight_bits=8, num_message_bits=0,
                      du=4095, dv=1024, vth=25, bias_mant=np.arange(n, dtype=np.int32) % 7 - 3,
                      bias_exp=np.full(n, 6, np.int32), scale=4096.0, stats=NO_STATS, **extra)


def _native(seed: int = 0) -> Deployment:
    """input (2, 6, 5) -> conv 3x2, stride (2, 1), padding (1, 0), 2 groups -> (4, 3, 4) -> dense 3."""
    rng = np.random.default_rng(seed)
    geometry = ConvGeometry(in_shape=(2, 6, 5), out_shape=(4, 3, 4), kernel=(3, 2), stride=(2, 1),
                            padding=(1, 0), dilation=(1, 1), groups=2)
    layers = (
        _layer("in", np.zeros((60, 0)), 60, kind="input", shape=(2, 6, 5)),
        _layer("conv", rng.integers(-256, 256, (4, 1, 3, 2)), 48, kind="conv", conv=geometry,
               shape=(4, 3, 4)),
        dataclasses.replace(_layer("fc", rng.integers(-128, 128, (3, 48)) * 2, 3), weight_exp=-3,
                            num_weight_bits=6),
    )
    return Deployment(profile=PROFILE, layers=layers, input_size=60, input_scale=1, dt=1.0,
                      coding=Coding.read({"encoding": "rate", "steps": 16}, where="test"),
                      source_sha256="0" * 64, source_nir=b"", calibration="none")


def _assert_identical(a: Deployment, b: Deployment) -> None:
    assert (a.input_size, a.input_scale, a.dt, a.calibration) == (b.input_size, b.input_scale,
                                                                  b.dt, b.calibration)
    assert a.coding.to_dict() == b.coding.to_dict() and a.profile.sha256 == b.profile.sha256
    for i, (x, y) in enumerate(zip(a.layers, b.layers, strict=True)):
        for field in dataclasses.fields(x):
            u, v = getattr(x, field.name), getattr(y, field.name)
            if isinstance(u, RecurrentSynapse):
                np.testing.assert_array_equal(u.weights, v.weights, err_msg=f"layer {i} recurrent")
                u, v = dataclasses.replace(u, weights=None), dataclasses.replace(v, weights=None)
            if isinstance(u, np.ndarray):
                assert u.dtype == v.dtype and u.shape == v.shape, (i, field.name)
                np.testing.assert_array_equal(u, v, err_msg=f"layer {i}: {field.name}")
            else:
                assert u == v, (i, field.name, u, v)


def test_native_layers_save_and_load_unchanged(tmp_path):
    dep = _native()
    validate_deployment(dep, origin="built")
    assert [layer.size for layer in dep.layers] == [60, 48, 3]
    save_deployment(dep, tmp_path / "native.deploy.h5")
    back = load_deployment(tmp_path / "native.deploy.h5")
    _assert_identical(dep, back)
    assert back.layers[1].conv == dep.layers[1].conv and back.layers[2].shape == ()
    with h5py.File(tmp_path / "native.deploy.h5", "r") as f:
        assert int(f.attrs["version"]) == FORMAT_VERSION == 2
        assert [f[f"layers/{i}"].attrs["kind"] for i in range(3)] == ["input", "conv", "dense"]
        assert "conv_stride" not in f["layers/2"].attrs and "shape" not in f["layers/2"].attrs


def _dense_only() -> Deployment:
    rng = np.random.default_rng(3)
    layers = (_layer("a", rng.integers(-100, 100, (5, 4)) * 2, 5),
              _layer("b", rng.integers(-100, 100, (3, 5)) * 2, 3,
                     recurrent=RecurrentSynapse(weights=np.eye(3, dtype=np.int32) * 4,
                                                weight_exp=1, sign_mode="mixed",
                                                num_weight_bits=8)))
    return dataclasses.replace(_native(), layers=layers, input_size=4)


def test_version_1_files_still_load_as_dense_layers(tmp_path):
    """A format-1 file: no kind, shape or conv attributes, version 1 (as the previous writer)."""
    dep = _dense_only()
    path = tmp_path / "v1.deploy.h5"
    save_deployment(dep, path)
    with h5py.File(path, "r+") as f:
        f.attrs["version"] = 1
        for i in range(dep.depth):
            del f[f"layers/{i}"].attrs["kind"]
            assert set(f[f"layers/{i}"].attrs) == {"synapse", "neuron", "sign_mode", "scale",
                                                   "weight_exp", "num_weight_bits",
                                                   "num_message_bits", "du", "dv", "vth"}
    back = load_deployment(path)
    _assert_identical(dep, back)
    assert all(layer.kind == "dense" and layer.conv is None for layer in back.layers)
    with h5py.File(path, "r+") as f:
        f.attrs["version"] = 3
    with pytest.raises(InputFileError, match="format version 3 is not supported .*versions 1, 2"):
        load_deployment(path)


def _edit(layer: int, **changes):
    def edit(dep: Deployment) -> Deployment:
        layers = list(dep.layers)
        layers[layer] = dataclasses.replace(layers[layer], **changes)
        return dataclasses.replace(dep, layers=tuple(layers))
    return edit


def _geometry(**changes):
    return _edit(1, conv=dataclasses.replace(_native().layers[1].conv, **changes))


def _input_later(dep: Deployment) -> Deployment:
    first = dep.layers[0]
    return dataclasses.replace(dep, layers=(_layer("x", np.zeros((60, 60)), 60), first))


def _eye(n: int) -> RecurrentSynapse:
    return RecurrentSynapse(weights=np.eye(n, dtype=np.int32), weight_exp=0, sign_mode="mixed",
                            num_weight_bits=8)


REFUSED = {
    # name: (edit of _native(), the one-line message (a regex), after "<origin>: layer K (name): ")
    "conv out_shape inconsistent": (
        _geometry(out_shape=(4, 3, 5)),
        r"layer 1 \(conv\): a \(3, 2\) conv of \(2, 6, 5\) .*gives \(4, 3, 4\), not out_shape \(4, 3, 5\)"),
    "conv in_shape not the input": (
        lambda d: _geometry(in_shape=(2, 6, 6), out_shape=(4, 3, 5))(
            _edit(1, shape=(4, 3, 5), bias_mant=np.zeros(60, np.int32),
                  bias_exp=np.zeros(60, np.int32))(d)),
        r"layer 1 \(conv\): conv in_shape \(2, 6, 6\) does not take the 60 outputs"),
    "conv weights of the wrong shape": (
        _edit(1, weights=np.zeros((4, 2, 3, 2), np.int32)),
        r"layer 1 \(conv\): conv weights of shape \(4, 2, 3, 2\); .* = \(4, 1, 3, 2\)"),
    "conv weight_exp": (
        _edit(1, weight_exp=-1),
        r"layer 1 \(conv\): conv weight_exp -1: Lava's fixed-point Conv applies none"),
    "conv groups": (
        _geometry(groups=3),
        r"layer 1 \(conv\): conv channels 2 -> 4 are not divisible by its 3 groups"),
    "conv stride 0": (_geometry(stride=(0, 1)), r"layer 1 \(conv\): conv shapes, kernel .* >= 1"),
    "conv padding -1": (_geometry(padding=(-1, 0)), r"layer 1 \(conv\): .*padding \(-1, 0\) >= 0"),
    "conv kernel of 3 entries": (_geometry(kernel=(3, 2, 1)),
                                 r"layer 1 \(conv\): conv kernel \(3, 2, 1\) is not 2 integers"),
    "conv without geometry": (_edit(1, conv=None), r"layer 1 \(conv\): a conv layer without its"),
    "conv shape not its out_shape": (
        _edit(1, shape=(4, 12)), r"layer 1 \(conv\): neuron shape \(4, 12\) is not the conv's"),
    "conv recurrent": (_edit(1, recurrent=_eye(48)),
                       r"layer 1 \(conv\): a conv layer cannot have a recurrent synapse"),
    "conv mantissa 256": (
        _edit(1, weights=np.full((4, 1, 3, 2), 256, np.int32)),
        r"layer 1 \(conv\): mixed weights 256\.\.256 outside -256\.\.255"),
    "input not first": (_input_later, r"layer 1 \(in\): an input layer must be layer 0"),
    "input with weights": (
        _edit(0, weights=np.zeros((60, 1), np.int32)),
        r"layer 0 \(in\): an input layer's weights have shape \(n, 0\)"),
    "input size not input_size": (
        lambda d: dataclasses.replace(d, input_size=59),
        r"layer 0 \(in\): an input layer of 60 neurons takes 60 input values, not input_size 59"),
    "input recurrent": (_edit(0, recurrent=_eye(60)), r"layer 0 \(in\): an input layer has no"),
    "unknown kind": (_edit(2, kind="pool"), r"layer 2 \(fc\): unknown layer kind 'pool'"),
    "shape with a zero": (_edit(0, shape=(2, 0, 5)),
                          r"layer 0 \(in\): neuron shape \(2, 0, 5\) must hold positive"),
    "dense shape not its weights": (
        _edit(2, shape=(2, 2)), r"layer 2 \(fc\): weights of shape \(3, 48\) do not take 48"),
    "dense with a conv geometry": (
        _edit(2, conv=_native().layers[1].conv), r"layer 2 \(fc\): a dense layer with a conv"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_inconsistent_native_layers_are_refused_in_one_line(case):
    edit, message = REFUSED[case]
    with pytest.raises(QuantizationError) as info:
        validate_deployment(edit(_native()), origin="net.deploy.h5")
    text = str(info.value)
    assert "\n" not in text and text.startswith("net.deploy.h5: layer ")
    assert re.search(message, text), text


def _poke_attr(name: str, value):
    def poke(path: Path) -> None:
        with h5py.File(path, "r+") as f:
            f["layers/1"].attrs[name] = value
    return poke


@pytest.mark.parametrize("name, value, message", [
    ("conv_stride", np.array([1, 1, 1]), "conv stride must be 2 integers"),
    ("conv_padding", np.array([0.5, 0.0]), "conv padding must hold integers"),
    ("conv_groups", 1.5, "conv groups must be an integer"),
    ("shape", "text", "shape must hold integers"),
])
def test_damaged_native_attributes_are_refused_on_load(tmp_path, name, value, message):
    path = tmp_path / "native.deploy.h5"
    save_deployment(_native(), path)
    _poke_attr(name, value)(path)
    with pytest.raises(InputFileError, match=message) as info:
        load_deployment(path)
    assert "layer 1" in str(info.value) and "\n" not in str(info.value)


def test_a_file_with_an_edited_geometry_is_refused_by_validation(tmp_path):
    path = tmp_path / "native.deploy.h5"
    save_deployment(_native(), path)
    _poke_attr("conv_stride", np.array([1, 1]))(path)
    with pytest.raises(QuantizationError, match=r"layer 1 \(conv\): a \(3, 2\) conv .* gives \(4, 6, 4\)"):
        load_deployment(path)
