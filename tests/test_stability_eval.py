"""evaluate --perturbation: the membrane-potential perturbation mean square as a report output."""

from __future__ import annotations

import json

from snn_deploy.evaluate.stability import Perturbation, perturbation_report
from snn_deploy.targets import load_target

from tests.factories import assert_bad_input, assert_ok, run_cli


def test_more_noise_perturbs_the_membrane_more(small_model_files, digits):
    target = load_target(small_model_files["deployment"])  # runs its source graph
    small, large = (perturbation_report(target, digits, Perturbation("gaussian", s), limit=64,
                                        steps=12, seed=0)["perturbation_ms"] for s in (0.02, 0.3))
    assert 0 < small < large


def test_cli_perturbation_in_report_and_bad_specs(small_model_files, tmp_path):
    proc = run_cli("evaluate", small_model_files["nir"], "--limit", "32", "--perturbation",
                   "gaussian:0.1", "--json", tmp_path / "e.json", cwd=tmp_path)
    assert_ok(proc)
    report = json.loads((tmp_path / "e.json").read_text())
    assert report["perturbation"] == "gaussian:0.1" and report["perturbation_ms"] > 0
    for spec in ("uniform:0.1", "gaussian:-1", "gaussian:x", "fgsm:0", "fgsm:inf"):
        assert_bad_input(run_cli("evaluate", small_model_files["nir"], "--perturbation", spec,
                                 "--json", tmp_path / "b.json", cwd=tmp_path), "--perturbation")
    assert not (tmp_path / "b.json").exists()


def _float_accuracy(target, x, y, steps):
    import torch
    from snn_deploy.evaluate.accuracy import encoded_batches
    from snn_deploy.run.float_backend import run_float

    spikes = torch.cat(list(encoded_batches(x, encoding="rate", steps=steps, seed=0)), dim=1)
    counts = run_float(target.require_network(), spikes).recording.output.sum(axis=0)
    return float((counts.argmax(axis=1) == y.numpy()).mean())


def test_fgsm_set_is_adversarial_inside_the_ball_and_perturbs_more_with_eps(small_model_files,
                                                                            digits):
    from snn_deploy.evaluate.stability import fgsm_set

    x, y = digits.x_test[:96], digits.y_test[:96]
    nir = load_target(small_model_files["nir"])
    adv = fgsm_set(nir, x, y, eps=0.15, encoding="rate", steps=12, seed=0)
    assert float((adv - x).abs().max()) <= 0.15 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    assert float((adv != x).float().mean()) > 0.5
    import torch

    signs = torch.randn(x.shape, generator=torch.Generator().manual_seed(0)).sign()
    noise = (x + 0.15 * signs).clamp(0.0, 1.0)  # the same budget, random directions
    clean, attacked = _float_accuracy(nir, x, y, 12), _float_accuracy(nir, adv, y, 12)
    assert attacked < clean - 0.2, (clean, attacked)
    assert attacked < _float_accuracy(nir, noise, y, 12) - 0.15  # a gradient step, not noise
    for path in (small_model_files["nir"], small_model_files["checkpoint"]):
        target = load_target(path)
        small, large = (perturbation_report(target, digits, Perturbation("fgsm", e), limit=64,
                                            steps=12, seed=0)["perturbation_ms"] for e in (0.02, 0.2))
        assert 0 < small < large, path
    report = perturbation_report(nir, digits, Perturbation.parse("fgsm:0.1"), limit=16, steps=12,
                                 seed=0)
    assert report["perturbation"] == "fgsm:0.1"
