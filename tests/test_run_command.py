"""`snn-deploy run` and `evaluate --backend emulator` through the API and the CLI."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from snn_deploy import api
from snn_deploy.data import load_dataset
from snn_deploy.errors import UserError
from snn_deploy.evaluate.accuracy import evaluate_target
from snn_deploy.targets import load_target

pytestmark = pytest.mark.slow


@pytest.fixture
def spikes(tmp_path, digits):
    from snn_deploy.coding import encode

    x = encode(digits.x_test[:6], encoding="rate", steps=12, seed=1).numpy().astype(np.uint8)
    np.save(tmp_path / "batch.npy", x)
    np.save(tmp_path / "one.npy", x[:, 2])
    return tmp_path


def test_every_backend_runs_a_deployment_and_deployed_ones_agree(small_model_files, spikes):
    dep = small_model_files["deployment"]
    outs = {b: api.run(dep, input_path=spikes / "batch.npy", backend=b).output
            for b in ("float", "emulator", "lava-sim")}
    assert outs["emulator"].shape == (12, 6, 10) and outs["emulator"].dtype == np.uint8
    np.testing.assert_array_equal(outs["emulator"], outs["lava-sim"])
    assert (outs["float"] == outs["emulator"]).mean() > 0.9
    one = api.run(dep, input_path=spikes / "one.npy", backend="emulator").output
    np.testing.assert_array_equal(one, outs["emulator"][:, 2])
    nir_out = api.run(small_model_files["nir"], input_path=spikes / "batch.npy", backend="float")
    np.testing.assert_array_equal(nir_out.output, outs["float"])


@pytest.mark.parametrize("array, message", [
    (np.zeros((12, 5)), "does not fit 64 input channels"),
    (np.full((12, 64), 0.5), "values other than 0 and 1"),
    (np.zeros((2, 2, 2, 64)), "expected (T, n) or (T, B, n)"),
    (np.array(["a", "b"]), "numeric array"),
])
def test_bad_run_input_is_refused(small_model_files, tmp_path, array, message):
    np.save(tmp_path / "x.npy", array)
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        api.run(small_model_files["deployment"], input_path=tmp_path / "x.npy", backend="emulator")


def test_run_cli_writes_the_output_and_refuses_a_nir_on_the_emulator(small_model_files, spikes):
    out = spikes / "out.npy"
    cmd = [sys.executable, "-m", "snn_deploy.cli", "run"]
    ok = subprocess.run([*cmd, str(small_model_files["deployment"]), "--input",
                         str(spikes / "batch.npy"), "--out", str(out)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert np.load(out).shape == (12, 6, 10)
    bad = subprocess.run([*cmd, str(small_model_files["nir"]), "--input", str(spikes / "batch.npy"),
                          "--backend", "emulator", "--out", str(spikes / "no.npy")],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "not a Deployment" in bad.stderr and not (spikes / "no.npy").exists()


def test_emulator_and_lava_sim_evaluations_are_identical(small_model_files):
    target = load_target(small_model_files["deployment"])
    split = load_dataset("digits")
    emu = evaluate_target(target, split, backend="emulator", limit=80, seed=4)
    lava = evaluate_target(target, split, backend="lava-sim", limit=80, seed=4)
    assert emu.accuracy == lava.accuracy
    np.testing.assert_array_equal(emu.predictions, lava.predictions)
    assert emu.activity == lava.activity
