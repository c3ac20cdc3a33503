"""PilotNet LIF from lava-dl's wheel against the recordings of Loihi 2 itself.

``tests/lava/lib/dl/netx/gts/pilotnet_lif`` holds the network (input neurons fed the image as
their bias, five convolutions, four dense layers) and every layer's spikes, u and v over 24 steps,
recorded on the chip (lava-dl's hardware test checks its Loihi 2 runs against them). The chip
resets layer i when t % 17 == i (t from 0), and its v probe reads 128 in the step a neuron spikes
(the state goes on from 0): docs/backends.md. The emulator, run in that global time
(``Pipeline(17)``) with the chip's v convention, must give every value of every layer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from snn_deploy.profiles import load_profile
from snn_deploy.quantize.netx_read import read_netx
from snn_deploy.run.emulator import Pipeline
from snn_deploy.run.probes import probe_layers

from tests.factories import assert_bad_input, assert_ok, run_cli

GTS = Path(pytest.importorskip("lava.lib.dl.netx").__file__).parents[4] / "tests" / "lava" / \
    "lib" / "dl" / "netx" / "gts" / "pilotnet_lif"
# netx's layers after the input, and the names of their recordings
RECORDED = ["input", *(f"conv-{k}" for k in range(5)), *(f"fc-{k}" for k in range(3))]
STEPS = 24


def _chip(name: str, what: str = "") -> np.ndarray:
    """A recording as (T, C, H, W) or (T, n): the files are (W, H, C, T) and (n, T)."""
    a = np.load(GTS / f"{name}{what}.npy")
    return a.transpose(3, 2, 1, 0) if a.ndim == 4 else a.T


@pytest.fixture(scope="module")
def pilotnet():
    return read_netx(GTS / "network.net", profile=load_profile("loihi2"))


@pytest.fixture(scope="module")
def image():
    return np.load(GTS / "image.npy").transpose(2, 1, 0)  # (W, H, C) -> (C, H, W)


def test_pilotnet_imports_with_native_layers(pilotnet):
    kinds = [layer.kind for layer in pilotnet.layers]
    assert kinds == ["input", *["conv"] * 5, *["dense"] * 4]
    assert pilotnet.layers[0].shape == (3, 66, 200)
    assert [layer.shape for layer in pilotnet.layers[1:6]] == [
        (24, 32, 99), (36, 15, 49), (48, 7, 24), (64, 4, 22), (64, 2, 20)]
    assert pilotnet.layers[4].conv.stride == (2, 1) and pilotnet.layers[4].conv.padding == (1, 0)


def test_emulator_equals_the_chip_in_every_layer_at_every_step(pilotnet, image):
    x = torch.as_tensor(image.reshape(1, 1, -1), dtype=torch.float32).expand(STEPS, -1, -1)
    probes = probe_layers(pilotnet, x, input_as="bias", pipeline=Pipeline(17),
                          v_convention="chip")
    spikes = 0
    for name, probe in zip(RECORDED, probes):
        s = _chip(name)
        assert np.array_equal(probe.spikes[:, 0], s), name
        spikes += int(s.sum())
        if name != "input":  # the wheel has no input-v.npy / input-u.npy
            assert np.array_equal(probe.u[:, 0], _chip(name, "-u")), name
            assert np.array_equal(probe.v[:, 0], _chip(name, "-v")), name
    assert spikes > 1_000_000  # 1.12 million spikes, the test is not vacuous
    lava = probe_layers(pilotnet, x, input_as="bias", pipeline=Pipeline(17))
    conv0 = _chip("conv-0")
    assert np.array_equal(lava[1].v[:, 0], np.where(conv0, 0, _chip("conv-0", "-v")))
    # Lava's own netx reset every 16 steps (the hardware test's setting) is not what the chip did
    r16 = probe_layers(pilotnet, x, input_as="bias", pipeline=Pipeline(16))
    assert not np.array_equal(r16[0].spikes[:, 0], _chip("input"))


def test_run_command_records_every_layer_as_the_probes_do(pilotnet, image, tmp_path):
    from snn_deploy.quantize.deployment import save_deployment

    dep = tmp_path / "pilotnet.deploy.h5"
    save_deployment(pilotnet, dep)
    np.save(tmp_path / "image.npy", image)
    out = tmp_path / "probes"
    result = run_cli("run", dep, "--input", tmp_path / "image.npy", "--input-as", "bias",
                     "--steps", STEPS, "--reset-interval", 17, "--probe-v", "chip",
                     "--record", "spikes,u,v", "--out-dir", out, cwd=tmp_path)
    assert_ok(result)
    names = [layer.neuron for layer in pilotnet.layers]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{n}-{k}.npy" for n in names for k in ("spikes", "u", "v"))
    conv3 = names[4]
    assert np.load(out / f"{conv3}-u.npy").shape == (STEPS, 64, 4, 22)
    assert np.array_equal(np.load(out / f"{conv3}-v.npy"), _chip("conv-3", "-v"))
    bad = run_cli("run", dep, "--input", tmp_path / "image.npy", "--input-as", "bias",
                  "--record", "spikes", "--out-dir", tmp_path / "none", cwd=tmp_path)
    assert_bad_input(bad, "--input-as bias needs --steps")
    assert not (tmp_path / "none").exists()
