"""evaluate --perturbation: the membrane-potential perturbation mean square as a report output."""

from __future__ import annotations

import json

from snn_deploy.evaluate.stability import Perturbation, perturbation_report
from snn_deploy.targets import load_target

from tests.test_cli import assert_bad_input, assert_ok, run_cli


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
    for spec in ("uniform:0.1", "gaussian:-1", "gaussian:x"):
        assert_bad_input(run_cli("evaluate", small_model_files["nir"], "--perturbation", spec,
                                 "--json", tmp_path / "b.json", cwd=tmp_path), "--perturbation")
    assert not (tmp_path / "b.json").exists()
