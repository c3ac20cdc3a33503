"""Export: the two Norse 1.1.0 to_nir bugs, our repair, and the float backend against Norse."""

from __future__ import annotations

import nir
import norse.torch as norse
import numpy as np
import pytest
import torch
from snn_deploy.coding import encode
from snn_deploy.convert.export import model_to_nir, write_nir
from snn_deploy.convert.nirfile import read_nir
from snn_deploy.convert.nirgraph import graph_to_network
from snn_deploy.run.float_backend import run_float
from snn_deploy.train.model import LIFNetwork, ModelConfig, load_checkpoint

DT = 1e-3


def _tiny() -> LIFNetwork:
    torch.manual_seed(0)
    return LIFNetwork(ModelConfig(input_size=4, hidden=(3,), output_size=2, dt=DT))


def test_norse_to_nir_scales_time_constants_by_dt():
    """Bug: norse 1.1.0 exports tau = dt / tau_inv. If this fails, Norse fixed it: drop our repair."""
    raw = norse.to_nir(_tiny().net, torch.zeros(1, 4), dt=DT)
    lif = raw.nodes["1"]
    assert float(lif.tau_mem) == pytest.approx(DT * 1e-2)  # should be 1e-2 s
    assert float(lif.tau_syn) == pytest.approx(DT * 5e-3)  # should be 5e-3 s


def test_norse_to_nir_scalars_are_rejected_by_nir_write(tmp_path):
    """Bug: norse 1.1.0 exports 0-d parameters, which nir.write cannot store."""
    raw = norse.to_nir(_tiny().net, torch.zeros(1, 4), dt=DT)
    assert np.ndim(raw.nodes["1"].v_threshold) == 0
    with pytest.raises(TypeError, match="Scalar datasets"):
        nir.write(str(tmp_path / "raw.nir"), raw)


def test_repaired_export_round_trips_with_dt_and_true_time_constants(tmp_path):
    model = _tiny()
    path = tmp_path / "tiny.nir"
    write_nir(model_to_nir(model), path)
    graph = read_nir(path)
    assert graph.metadata["dt"] == DT
    assert graph.metadata["snn_deploy"]["encoding"] == "rate"
    lif = graph.nodes["1"]
    np.testing.assert_allclose(lif.tau_mem, np.full(3, 1e-2), rtol=1e-6)
    np.testing.assert_allclose(lif.tau_syn, np.full(3, 5e-3), rtol=1e-6)
    np.testing.assert_allclose(lif.v_threshold, np.ones(3))
    np.testing.assert_array_equal(graph.nodes["0"].weight, model.net[0].weight.detach().numpy())
    np.testing.assert_array_equal(graph.nodes["0"].bias, np.zeros(3))
    assert [type(graph.nodes[n]).__name__ for n in ("input", "0", "1", "2", "3", "output")] == [
        "Input", "Affine", "CubaLIF", "Affine", "CubaLIF", "Output"]


def test_float_backend_equals_the_norse_model(small_model_files, digits):
    """The NIR graph run in torch reproduces the trained Norse model spike for spike."""
    model = load_checkpoint(small_model_files["checkpoint"])
    network = graph_to_network(read_nir(small_model_files["nir"]))
    x = encode(digits.x_test[:100], encoding="rate", steps=12, seed=5)
    with torch.no_grad():
        expected = model(x).numpy().astype(np.uint8)
    got = run_float(network, x).recording.output
    assert got.shape == expected.shape
    mismatches = np.argwhere(got != expected)
    assert len(mismatches) == 0, f"{len(mismatches)} spikes differ, first (t, b, n): {mismatches[:5]}"
    assert expected.sum() > 0
