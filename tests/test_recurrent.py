"""Recurrent layers end to end: a NIR cycle (LIF -> Affine -> the same LIF) deployed and run."""

from __future__ import annotations

import nir
import numpy as np
import pytest
import torch
from snn_deploy import api
from snn_deploy.convert.nirfile import read_nir
from snn_deploy.convert.nirgraph import graph_to_network
from snn_deploy.quantize.deployment import load_deployment, save_deployment
from snn_deploy.run.emulator import run_emulator
from snn_deploy.run.float_backend import run_float
from snn_deploy.run.lava_sim import run_lava_sim

pytestmark = pytest.mark.slow


def _cuba(n: int) -> nir.CubaLIF:
    full = lambda v: np.full(n, v, np.float32)  # noqa: E731
    return nir.CubaLIF(tau_syn=full(5e-3), tau_mem=full(1e-2), r=full(1.0), v_leak=full(0.0),
                       v_threshold=full(1.0), w_in=full(1.0))


@pytest.fixture
def recurrent_nir(tmp_path):
    rng = np.random.default_rng(0)
    nodes = {
        "input": nir.Input(input_type=np.array([8])),
        "fc": nir.Affine(weight=rng.normal(1.2, 1.5, (12, 8)).astype(np.float32),
                         bias=np.zeros(12, np.float32)),
        "lif": _cuba(12),
        "rec": nir.Linear(weight=rng.normal(0.0, 1.5, (12, 12)).astype(np.float32)),
        "out_fc": nir.Affine(weight=rng.normal(1.0, 1.5, (4, 12)).astype(np.float32),
                             bias=np.zeros(4, np.float32)),
        "out": _cuba(4),
        "output": nir.Output(output_type=np.array([4])),
    }
    edges = [("input", "fc"), ("fc", "lif"), ("lif", "rec"), ("rec", "lif"), ("lif", "out_fc"),
             ("out_fc", "out"), ("out", "output")]
    path = tmp_path / "rec.nir"
    nir.write(str(path), nir.NIRGraph(nodes=nodes, edges=edges,
                                      metadata={"dt": 1e-3, "snn_deploy": {"steps": 20}}))
    np.save(tmp_path / "calib.npy", rng.random((64, 8)).astype(np.float32))
    return path


def test_a_nir_cycle_becomes_a_recurrent_layer(recurrent_nir):
    net = graph_to_network(read_nir(recurrent_nir))
    assert [layer.neuron for layer in net.layers] == ["lif", "out"]
    assert net.layers[0].recurrent.shape == (12, 12) and net.layers[0].recurrent_synapse == "rec"
    assert net.layers[1].recurrent is None


def test_recurrent_deployment_runs_identically_on_emulator_and_lava(recurrent_nir, tmp_path):
    dep = api.deploy(recurrent_nir, profile="loihi2",
                     calibration=str(tmp_path / "calib.npy")).deployment
    assert dep.layers[0].recurrent is not None and dep.layers[1].recurrent is None
    save_deployment(dep, tmp_path / "rec.deploy.h5")
    again = load_deployment(tmp_path / "rec.deploy.h5")
    np.testing.assert_array_equal(again.layers[0].recurrent.weights, dep.layers[0].recurrent.weights)
    x = (np.random.default_rng(1).random((20, 7, 8)) < 0.4).astype(np.float32)
    emu, lava = run_emulator(again, x), run_lava_sim(again, x)
    assert emu.output.sum() > 0
    np.testing.assert_array_equal(emu.output, lava.output)
    for a, b in zip(emu.counts, lava.counts):
        np.testing.assert_array_equal(a, b)
    # the float graph (fresh state per sample, no carried spikes) stays close to the deployment
    flt = run_float(graph_to_network(read_nir(recurrent_nir)), torch.from_numpy(x)).recording
    assert (flt.output == emu.output).mean() > 0.9


def test_the_recurrent_synapse_matters(recurrent_nir, tmp_path):
    """Removing the loop changes the spikes: the recurrent Dense really is wired in on Lava."""
    import dataclasses

    dep = api.deploy(recurrent_nir, profile="loihi2",
                     calibration=str(tmp_path / "calib.npy")).deployment
    cut = dataclasses.replace(dep, layers=(dataclasses.replace(dep.layers[0], recurrent=None),
                                           dep.layers[1]))
    x = (np.random.default_rng(2).random((20, 3, 8)) < 0.4).astype(np.float32)
    assert not np.array_equal(run_lava_sim(dep, x).counts[0], run_lava_sim(cut, x).counts[0])


def test_recurrent_synapses_count_as_synaptic_operations():
    from snn_deploy.evaluate.counts import activity
    from snn_deploy.run.recording import Recording

    rec = Recording(output=np.zeros((1, 1, 2), np.uint8), layer_names=("a", "b"),
                    counts=(np.array([[3, 0, 1]]), np.array([[0, 0]])))
    weights = [np.ones((3, 4)), np.array([[1, 0, 2], [0, 0, 1]])]
    loop = np.array([[0, 1, 1], [1, 0, 0], [0, 0, 0]])  # fan-out of each source: 1, 1, 1
    plain = activity(rec, np.array([[1, 0, 0, 2]]), weights, steps=5)
    looped = activity(rec, np.array([[1, 0, 0, 2]]), weights, [loop, None], steps=5)
    # input: 3 events x fan-out 3; layer a: 3 spikes x 1 + 1 spike x 2; its loop: 4 spikes x 1
    assert plain.synops_per_sample == 3 * 3 + 3 * 1 + 1 * 2
    assert looped.synops_per_sample == plain.synops_per_sample + 4
    # the loop's operations arrive at layer a itself
    assert looped.layer_synops_per_sample == (3 * 3 + 4, 3 * 1 + 1 * 2)
