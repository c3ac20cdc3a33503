"""Synaptic delays: a dense layer's ``QuantLayer.delays`` (Lava's DelayDense as netx builds it, a
delay d_j per post-synaptic neuron: a spike sent at step t reaches neuron j at t + 1 + d_j).

- lava-dl's N-TIDIGITS (gts/ntidigits), imported from netx with its delays, run on the emulator
  for all 3000 steps, gives exactly lava-dl's recorded output spikes;
- small random dense networks with delays: the emulator equals Lava's DelayDense state for state,
  across sample boundaries (lava-sim empties the delay buffers between samples);
- validation refuses impossible delays, and a Deployment file keeps them.
"""

from __future__ import annotations

import dataclasses
import sysconfig
from pathlib import Path

import numpy as np
import pytest
import torch
from snn_deploy.coding import DecoderSpec
from snn_deploy.errors import QuantizationError
from snn_deploy.profiles import load_profile
from snn_deploy.quantize.deployment import (
    MAX_DELAY,
    load_deployment,
    save_deployment,
    validate_deployment,
)
from snn_deploy.quantize.netx_read import read_netx
from snn_deploy.run.emulator import run_layers

from tests.factories import (assert_ok, assert_states_equal_lava, conv_geometry, layer_deployment,
                             native_layer, run_cli)

NTIDIGITS = Path(sysconfig.get_paths()["purelib"]) / "tests/lava/lib/dl/netx/gts/ntidigits"


def _ntidigits():
    if not (NTIDIGITS / "ntidigits.net").is_file():
        pytest.skip(f"lava-dl's wheel does not ship gts/ntidigits here ({NTIDIGITS})")
    # num_layers=5, as lava-dl's test: layer 5 is an average readout netx cannot build
    dep = read_netx(NTIDIGITS / "ntidigits.net", profile=load_profile("loihi2"), num_layers=5)
    return dep, np.load(NTIDIGITS / "input.npy"), np.load(NTIDIGITS / "output.npy") > 0


def test_ntidigits_runs_with_its_delays_as_lava_dl_recorded_it():
    """Lava's global step of layer l (1..3, each behind one synapse) at local step k is k + l, and
    output.npy is one step later than Lava's sink (output.npy[:, t + 1] == Lava's [:, t]), so
    output.npy[:, k + 4] == the emulator's last layer at local step k; the per-neuron delays
    live inside local time (the emulator applies them), they shift nothing between layers."""
    dep, inp, gt = _ntidigits()
    assert [layer.kind for layer in dep.layers] == ["dense"] * 3 and dep.input_size == 64
    assert [int(layer.delays.max()) if layer.delays is not None else None
            for layer in dep.layers] == [62, 62, None]
    x = torch.from_numpy(inp.T[:, None, :].astype(np.float32))  # (3000, 1, 64) spikes
    for kernel in ("numba", "torch"):
        out = run_layers(dep, x, kernel=kernel)[-1].spikes[:, 0, :].numpy().T  # (242, 3000)
        assert int(out.sum()) == int(gt.sum()) == 22572
        assert np.array_equal(out[:, :-4], gt[:, 4:]), kernel
        assert not out[:, -4:].any() and not gt[:, :4].any()
    # the average readout (netx's layer 5): 11 classes of 22 neurons, mean spike count per class
    means = out.reshape(11, 22, -1).sum(axis=2).mean(axis=1)
    assert int(means.argmax()) == 6


def _delayed_network(seed: int):
    rng = np.random.default_rng(seed)
    sizes = (5, 6, 4)
    layers = []
    for i, (n_in, n) in enumerate(zip(sizes[:-1], sizes[1:])):
        layer = native_layer(f"lif{i}", rng.integers(-120, 128, (n, n_in)) * 2,
                             bias_mant=rng.integers(-2, 6, n), vth=30 + 10 * i)
        delays = rng.integers(0, 12, n).astype(np.int32)  # past the end of a 10-step sample
        delays[0] = 0
        layers.append(dataclasses.replace(layer, delays=delays if i == 0 or seed % 2 else None))
    return layer_deployment(layers, sizes[0])


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_delays_equal_lava_state_for_state(seed):
    dep = _delayed_network(seed)
    x = (np.random.default_rng(seed + 10).random((10, 3, 5)) < 0.5).astype(np.float32)
    traces = assert_states_equal_lava(dep, x)
    assert all(int(t.spikes.sum()) > 0 for t in traces)  # the delays carry spikes


def test_delays_shift_each_neurons_trajectory():
    """Without a bias a neuron rests until input arrives, so under delay d_j neuron j's u, v and
    spikes are those without delays, d_j steps later (all zero before)."""
    dep = _delayed_network(1)
    layer = dataclasses.replace(dep.layers[0], bias_mant=np.zeros(dep.layers[0].size, np.int32))
    plain = dataclasses.replace(dep, layers=(dataclasses.replace(layer, delays=None),))
    delayed = dataclasses.replace(dep, layers=(layer,))
    x = torch.from_numpy((np.random.default_rng(3).random((16, 2, 5)) < 0.5).astype(np.float32))
    for kernel in ("numba", "torch"):
        a = run_layers(plain, x, record_state=True, kernel=kernel)[0]
        b = run_layers(delayed, x, record_state=True, kernel=kernel)[0]
        for j, d in enumerate(int(v) for v in layer.delays):
            for ours, theirs in ((b.u, a.u), (b.v, a.v), (b.spikes, a.spikes)):
                assert not ours[:d, :, j].any()
                assert torch.equal(ours[d:, :, j], theirs[:16 - d, :, j]), (kernel, j, d)


def test_validation_refuses_impossible_delays(tmp_path):
    dep = _delayed_network(1)
    first = dep.layers[0]
    for bad, match in ((np.full(first.size, MAX_DELAY + 1), "outside 0..62"),
                       (np.full(first.size, -1), "outside 0..62"),
                       (np.zeros(first.size + 1), "shape"),
                       (np.zeros(first.size) + 0.5, "dtype")):
        wrong = dataclasses.replace(dep, layers=(dataclasses.replace(first, delays=bad),
                                                 *dep.layers[1:]))
        with pytest.raises(QuantizationError, match=match):
            validate_deployment(wrong, origin="test")
    g = conv_geometry((1, 3, 3), 2, (2, 2))
    conv = native_layer("conv", np.ones((2, 1, 2, 2)), bias_mant=np.zeros(8), conv=g)
    conv = dataclasses.replace(conv, delays=np.zeros(8, np.int32))
    with pytest.raises(QuantizationError, match="delays on a conv layer"):
        validate_deployment(layer_deployment([conv], 9), origin="test")
    # a file keeps the delays; a layer without them reads back None
    path = tmp_path / "delayed.h5"
    save_deployment(dep, path)
    back = load_deployment(path)
    assert np.array_equal(back.layers[0].delays, first.delays)
    assert back.layers[0].delays.dtype == np.int32
    assert (back.layers[1].delays is None) == (dep.layers[1].delays is None)


def test_netx_export_keeps_the_delays(tmp_path):
    from snn_deploy.quantize.netx_write import write_netx

    dep = _delayed_network(1)
    write_netx(dep, tmp_path / "delayed.net")
    back = read_netx(tmp_path / "delayed.net", profile=dep.profile)
    for ours, theirs in zip(dep.layers, back.layers, strict=True):
        assert np.array_equal(ours.delays, theirs.delays)


def test_ntidigits_average_readout_is_the_coding_decoder_and_run_reports_it(tmp_path):
    """netx's ``average`` block (which netx cannot build) is read as the output decoder: the mean
    spike count of each of its 11 populations of 22 neurons; ``run`` reports the class."""
    if not (NTIDIGITS / "ntidigits.net").is_file():
        pytest.skip(f"lava-dl's wheel does not ship gts/ntidigits here ({NTIDIGITS})")
    dep = read_netx(NTIDIGITS / "ntidigits.net", profile=load_profile("loihi2"))
    assert [layer.size for layer in dep.layers] == [256, 256, 242]
    assert dep.coding.decoder == DecoderSpec("average", 1.0, groups=11)
    gt = np.load(NTIDIGITS / "output.npy")
    expected = int(gt.reshape(11, 22, -1).sum(axis=2).mean(axis=1).argmax())
    path = tmp_path / "ntidigits.deploy.h5"
    save_deployment(dep, path)
    np.save(tmp_path / "input.npy", np.load(NTIDIGITS / "input.npy").T)  # time-major (T, 64)
    proc = run_cli("run", path, "--input", tmp_path / "input.npy", "--out", tmp_path / "out.npy",
                   cwd=tmp_path)
    assert_ok(proc)
    assert f"readout (average): class {expected}" in proc.stdout and expected == 6
    assert np.array_equal(np.load(tmp_path / "out.npy")[:-4].T, gt[:, 4:] > 0)
