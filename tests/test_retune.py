"""Threshold re-tuning after quantization (quantize/retune.py, quantize/finetune.py) and the
per-layer fidelity report (quantize/fidelity.py), on the small trained model and on a deliberately
mis-scaled copy of it (every threshold doubled) that re-tuning has something to fix."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from snn_deploy.coding import encode
from snn_deploy.convert.nirfile import read_nir_bytes
from snn_deploy.convert.nirgraph import graph_to_network
from snn_deploy.errors import UserError
from snn_deploy.quantize.dense_grid import lava_dense_grid
from snn_deploy.quantize.deployment import (
    Deployment,
    load_deployment,
    save_deployment,
    validate_deployment,
)
from snn_deploy.quantize.fidelity import fidelity, format_fidelity
from snn_deploy.quantize.finetune import Adversary
from snn_deploy.quantize.retune import Simulators, check_bounds, retune
from snn_deploy.run.emulator import run_emulator
from snn_deploy.run.float_backend import run_float
from snn_deploy.run.twin import EmulatorTwin

CALIBRATION = 256  # samples of the train split
SIMULATORS = Simulators(fixed=lambda dep, s: run_emulator(dep, s).counts, twin=EmulatorTwin)


@pytest.fixture(scope="module")
def dep(small_model_files) -> Deployment:
    return load_deployment(small_model_files["deployment"])


@pytest.fixture(scope="module")
def misscaled(dep) -> Deployment:
    return dataclasses.replace(dep, layers=tuple(dataclasses.replace(layer, vth=2 * layer.vth)
                                                 for layer in dep.layers))


@pytest.fixture(scope="module")
def data(digits):
    return digits.x_train[:CALIBRATION], digits.y_train[:CALIBRATION]


def float_counts(dep: Deployment):
    net = graph_to_network(read_nir_bytes(dep.source_nir, origin="deployment"))
    return lambda s: run_float(net, s).recording.counts


@pytest.fixture(scope="module")
def grad_result(misscaled, data):
    x, y = data
    return retune(misscaled, mode="grad", x=x, y=y, simulators=SIMULATORS,
                  float_rates=float_counts(misscaled), train_weights=True, epochs=4, seed=3)


def test_rate_brings_every_layer_closer_to_the_float_rates(misscaled, data):
    result = retune(misscaled, mode="rate", x=data[0], y=data[1], simulators=SIMULATORS,
                    float_rates=float_counts(misscaled))
    for c in result.layers:
        before, after = abs(c.rate_before - c.rate_float), abs(c.rate_after - c.rate_float)
        assert after < 0.5 * before, f"{c}"
        assert 0.3 < c.vth_after / c.vth_before < 0.7  # about half the doubled threshold
    assert result.accuracy_after >= result.accuracy_before


def test_rate_keeps_thresholds_that_already_match(dep, data):
    x = data[0]
    spikes = encode(x, encoding="rate", steps=dep.coding.steps, seed=0)
    own = [float(c.mean()) / spikes.shape[0] for c in run_emulator(dep, spikes).counts]
    result = retune(dep, mode="rate", x=x, y=None, simulators=SIMULATORS, float_rates=own)
    assert [c.vth_after for c in result.layers] == [layer.vth for layer in dep.layers]
    assert result.accuracy_before is None


def test_grad_never_lowers_calibration_accuracy(dep, data):
    x, y = data
    result = retune(dep, mode="grad", x=x, y=y, simulators=SIMULATORS,
                    float_rates=float_counts(dep), epochs=3)
    assert result.accuracy_after >= result.accuracy_before
    assert result.history[0].accuracy == result.accuracy_before
    assert result.history[result.best_epoch].accuracy == result.accuracy_after


def test_grad_repairs_the_misscaled_deployment(grad_result, dep, data):
    assert grad_result.accuracy_after > grad_result.accuracy_before + 0.05, grad_result.history
    # measured again, independently, on the emulator
    x, y = data
    spikes = encode(x, encoding="rate", steps=dep.coding.steps, seed=3)  # retune's seed
    out = run_emulator(grad_result.deployment, spikes).counts[-1].argmax(axis=1)
    assert float((out == y.numpy()).mean()) == grad_result.accuracy_after


def test_retuned_deployment_stays_on_the_grid_and_round_trips(grad_result, misscaled, tmp_path):
    tuned = grad_result.deployment
    p = tuned.profile
    for before, layer in zip(misscaled.layers, tuned.layers):
        assert isinstance(layer.vth, int) and 1 <= layer.vth <= p.vth_max
        assert layer.vth >= 0.03 * before.vth  # the clamp of Ozdenizci & Legenstein
        assert layer.weights.dtype == np.int32
        grid = lava_dense_grid(layer.weights, sign_mode=layer.sign_mode,
                               num_weight_bits=layer.num_weight_bits, weight_bits=p.weight_bits)
        np.testing.assert_array_equal(layer.weights, grid)
        np.testing.assert_array_equal(layer.bias_mant, before.bias_mant)
        np.testing.assert_array_equal(layer.bias_exp, before.bias_exp)
    assert any(c.weights_changed for c in grad_result.layers)
    assert "re-tuned: grad" in tuned.calibration
    path = tmp_path / "tuned.deploy.h5"
    save_deployment(tuned, path)
    back = load_deployment(path)
    for a, b in zip(tuned.layers, back.layers):
        assert a.vth == b.vth and a.stats == b.stats
        np.testing.assert_array_equal(a.weights, b.weights)
    assert back.calibration == tuned.calibration


@pytest.mark.slow
def test_retuned_deployment_runs_identically_on_lava(grad_result, digits):
    from snn_deploy.run.lava_sim import run_lava_sim

    tuned = grad_result.deployment
    spikes = encode(digits.x_test[:16], encoding="rate", steps=tuned.coding.steps, seed=5)
    emulated = run_emulator(tuned, spikes)
    lava = run_lava_sim(tuned, spikes.numpy())
    for k, (a, b) in enumerate(zip(emulated.counts, lava.counts)):
        bad = np.argwhere(a != b)
        assert len(bad) == 0, f"layer {k}: {len(bad)} counts differ, first {bad[:3].tolist()}"
    np.testing.assert_array_equal(emulated.output, lava.output)


def test_robust_returns_a_valid_deployment(dep, data):
    x, y = data[0][:64], data[1][:64]
    result = retune(dep, mode="robust", x=x, y=y, simulators=SIMULATORS, epochs=1, batch_size=32,
                    adversary=Adversary(eps=0.1, attack="pgd", steps=2), train_weights=True)
    validate_deployment(result.deployment, origin="robust")
    assert len(result.history) == 2
    assert all(0 <= h.robust_accuracy <= h.accuracy for h in result.history)
    best = result.history[result.best_epoch]
    assert best.score == max(h.score for h in result.history)


@pytest.mark.parametrize("case, message", [
    (dict(x=torch.zeros(0, 64)), "N >= 1"),
    (dict(mode="magic"), "unknown re-tuning mode 'magic'"),
    (dict(vth_bounds=(1, 1 << 17)), "must be integers with 0 <= lo <= hi <= 131071"),
    (dict(vth_bounds=(-1, 10)), "0 <= lo <= hi"),
    (dict(y=None), "needs calibration labels"),
    (dict(x=torch.full((4, 64), 2.0)), "must lie in [0, 1]"),
    (dict(x=torch.zeros(4, 10)), "has 10 features, the deployment takes 64"),
    (dict(y=torch.full((4,), 10)), "labels must lie in 0..9"),
    (dict(epochs=0), "epochs must be an integer >= 1"),
    (dict(lr=-1.0), "learning rate must be > 0"),
])
def test_bad_input_is_one_clear_user_error(dep, case, message):
    args = dict(mode="grad", x=torch.rand(4, 64), y=torch.zeros(4, dtype=torch.int64),
                simulators=SIMULATORS, epochs=1)
    args.update(case)
    with pytest.raises(UserError) as err:
        retune(dep, **args)
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("kwargs, message", [
    (dict(eps=0.0), "eps must be in (0, 1]"),
    (dict(attack="cw"), "unknown training attack 'cw'"),
    (dict(eps=0.1, alpha=0.2), "alpha must be in [0, eps"),
    (dict(beta=-1.0), "beta must be >= 0"),
])
def test_impossible_adversary_is_refused(kwargs, message):
    with pytest.raises(UserError) as err:
        Adversary(**kwargs)
    assert message in str(err.value)


def test_rate_without_float_reference_is_refused(dep, data):
    with pytest.raises(UserError, match="needs the float network's rates"):
        retune(dep, mode="rate", x=data[0], y=None, simulators=SIMULATORS)
    assert check_bounds(dep, None) == (1, dep.profile.vth_max)


def test_fidelity_report(dep, misscaled, digits):
    net = graph_to_network(read_nir_bytes(dep.source_nir, origin="deployment"))
    spikes = encode(digits.x_test[:128], encoding="rate", steps=dep.coding.steps, seed=1)
    floats = run_float(net, spikes).recording.counts
    report = fidelity(dep, net, float_counts=floats, fixed_counts=run_emulator(dep, spikes).counts,
                      steps=spikes.shape[0])
    assert [f.name for f in report] == [layer.neuron for layer in dep.layers]
    for f, layer in zip(report, dep.layers):
        assert 0 <= f.rounding_lsb <= 0.5 + 1e-9  # straight from quantize_network: round to nearest
        assert abs(f.threshold_ratio - 1) <= 0.5 / layer.vth + 1e-12
        assert f.rate_corr > 0.9, f
        assert f.share_saturated == layer.stats.saturated_share
    doubled = fidelity(misscaled, net, float_counts=floats, steps=spikes.shape[0],
                       fixed_counts=run_emulator(misscaled, spikes).counts)
    assert all(abs(f.threshold_ratio - 2) < 1e-3 for f in doubled)
    assert all(d.rate_fixed < f.rate_fixed for d, f in zip(doubled, report))
    table = format_fidelity(report)
    assert len(table.splitlines()) == 2 + dep.depth and "rate corr" in table
    with pytest.raises(UserError, match="not the Deployment's source"):
        fidelity(dataclasses.replace(dep, layers=dep.layers[:1]), net, float_counts=floats,
                 fixed_counts=floats, steps=spikes.shape[0])


@pytest.mark.parametrize("sign_mode", ["mixed", "excitatory", "inhibitory"])
@pytest.mark.parametrize("bits", [2, 5, 8])
def test_weights_start_in_the_middle_of_their_grid_cells(dep, sign_mode, bits):
    from snn_deploy.quantize.finetune import cell_centre, weight_limits, weight_step

    layer = dep.layers[0]
    lo, hi = weight_limits(dataclasses.replace(layer, sign_mode=sign_mode, num_weight_bits=bits), dep)
    grid = np.arange(lo, hi + 1, dtype=np.int64)
    grid = np.unique(lava_dense_grid(grid, sign_mode=sign_mode, num_weight_bits=bits))
    layer = dataclasses.replace(layer, sign_mode=sign_mode, num_weight_bits=bits,
                                weights=np.resize(grid, layer.weights.shape).astype(np.int32))
    one = dataclasses.replace(dep, layers=(layer,))
    twin = EmulatorTwin(one)
    step, centre = weight_step(layer, one), cell_centre(layer, one)
    with torch.no_grad():
        twin.weights[0].add_(centre)
    np.testing.assert_array_equal(twin.quantized()[0]["weights"], layer.weights)
    for nudge in (-1, 1):  # (almost) half a cell either way keeps every weight
        with torch.no_grad():
            twin.weights[0].add_(nudge * (step / 2 - 0.01))
        np.testing.assert_array_equal(twin.quantized()[0]["weights"], layer.weights)
        with torch.no_grad():
            twin.weights[0].sub_(nudge * (step / 2 - 0.01))


def test_cli_deploy_retune(small_model_files, tmp_path):
    import numpy as np

    from tests.factories import assert_bad_input, assert_ok, run_cli

    nir_path = small_model_files["nir"]
    proc = run_cli("deploy", nir_path, "--dataset", "digits", "--retune", "rate",
                   "--out", tmp_path / "r.deploy.h5", cwd=tmp_path)
    assert_ok(proc)
    assert "re-tuned by rate" in proc.stdout and "rate corr" in proc.stdout
    assert_bad_input(run_cli("deploy", nir_path, "--retune", "grad", "--out", tmp_path / "g.h5",
                             cwd=tmp_path), "--dataset")
    np.save(tmp_path / "enc.npy", np.zeros((4, 3, 64), dtype=np.float32))
    assert_bad_input(run_cli("deploy", nir_path, "--retune", "rate", "--calibration",
                             tmp_path / "enc.npy", "--out", tmp_path / "c.h5", cwd=tmp_path),
                     "(N, features)")
    assert not (tmp_path / "g.h5").exists() and not (tmp_path / "c.h5").exists()
