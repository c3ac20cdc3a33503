"""Hardware-in-the-loop attacks: encoder, gradient attacks, the sweep, checks and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from snn_deploy.attack import ATTACKS
from snn_deploy.attack.apgd import checkpoints
from snn_deploy.attack.base import BATCH, AttackSettings, FrozenEncoder, project
from snn_deploy.attack.losses import dlr
from snn_deploy.evaluate import accuracy
from snn_deploy.evaluate.checks import monotone, robust_below_clean
from snn_deploy.evaluate.robustness import Evaluator, SourceSpec, run_attack, sweep
from snn_deploy.targets import load_target

from tests.test_cli import assert_bad_input, assert_ok, run_cli


@pytest.fixture(scope="module")
def evaluator(small_model_files, digits):
    return Evaluator(load_target(small_model_files["deployment"]), digits, backend="emulator",
                     limit=60, seed=3)


def test_frozen_encoder_reproduces_evaluate_spikes(digits):
    assert BATCH == accuracy.BATCH
    x = digits.x_train[:700]
    expected = torch.cat(list(accuracy.encoded_batches(x, encoding="rate", steps=6, seed=4)), dim=1)
    enc = FrozenEncoder("rate", steps=6, seed=4, n_samples=700, n_inputs=64)
    assert torch.equal(enc.spikes(x, torch.arange(700)), expected)
    idx = torch.tensor([650, 3])  # any subset, in any order, encodes as in the whole split
    assert torch.equal(enc.spikes(x[idx], idx), expected[:, idx])
    x_adv = x[idx].clone().requires_grad_(True)
    enc.differentiable(x_adv, idx).sum().backward()
    assert torch.equal(x_adv.grad, torch.full_like(x_adv, 6.0))  # straight through, T steps


def test_clean_accuracy_equals_evaluate(evaluator, small_model_files, digits):
    ev = accuracy.evaluate_target(load_target(small_model_files["deployment"]), digits,
                                  backend="emulator", limit=60, seed=3)
    clean = evaluator.verify(evaluator.x)
    assert np.array_equal(clean.predictions, ev.predictions)


@pytest.mark.parametrize("name", ["fgsm", "pgd", "apgd-ce", "apgd-dlr"])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_gradient_attacks_stay_in_the_ball(evaluator, name, norm):
    ctx = evaluator.context(SourceSpec(), AttackSettings(norm=norm, iterations=4, seed=1))
    points = torch.arange(12)
    x = evaluator.x[points]
    for eps in (0.0, 0.3):
        adv, _, _ = run_attack(evaluator, ctx, name, eps, points)
        delta = adv[points] - x
        size = delta.abs().amax(dim=1) if norm == "linf" else delta.norm(dim=1)
        assert float(size.max()) <= eps + 1e-6
        assert float(adv.min()) >= 0 and float(adv.max()) <= 1
        if eps == 0:
            assert torch.equal(adv[points], x)
        else:
            assert float(size.max()) > 0


def test_pgd_lowers_backend_accuracy_and_beats_noise(evaluator):
    settings = AttackSettings(iterations=10, seed=0)
    result = sweep(evaluator, attacks=["pgd", "uniform"], eps=[0.0, 0.2, 1.0], settings=settings,
                   sources=[SourceSpec()])
    pgd = {r.eps: r for r in result.rows if r.attack == "pgd"}
    noise = {r.eps: r for r in result.rows if r.attack == "uniform"}
    assert pgd[0.0].robust_accuracy == result.clean_accuracy > 0.5
    assert pgd[0.2].robust_accuracy < result.clean_accuracy
    assert pgd[1.0].robust_accuracy <= 0.05
    assert pgd[0.2].robust_accuracy < noise[0.2].robust_accuracy
    accs = [pgd[e].robust_accuracy for e in sorted(pgd)]
    assert accs == sorted(accs, reverse=True)
    assert all(r.agreement is not None and 0 <= r.agreement <= 1 for r in pgd.values())
    assert monotone(result)["passed"] in (True, False)
    assert robust_below_clean(result)["passed"] is True


def test_monotone_check_flags_a_rising_attack(evaluator):
    result = sweep(evaluator, attacks=["fgsm"], eps=[0.1, 0.2], settings=AttackSettings(),
                   sources=[SourceSpec()])
    rows = [r for r in result.rows if r.attack == "fgsm"]
    rows[1].attack_accuracy = rows[0].attack_accuracy + 0.1  # as if FGSM got weaker with eps
    check = monotone(result)
    assert check["passed"] is False and "fgsm" in check["detail"]


def test_apgd_checkpoints_follow_the_paper():
    marks = checkpoints(100)
    assert marks[:4] == [22, 41, 57, 70] and marks == sorted(marks) and marks[-1] <= 100


def test_dlr_is_shift_invariant_and_negative_when_correct():
    z = torch.tensor([[5.0, 1.0, 0.0, 0.0], [0.0, 3.0, 1.0, 0.0]])
    y = torch.tensor([0, 0])
    assert torch.allclose(dlr(z, y), dlr(z + 3.0, y))
    assert float(dlr(z, y)[0]) < 0 < float(dlr(z, y)[1])


def test_project_clips_to_box_and_ball():
    x = torch.tensor([[0.0, 0.5, 1.0]])
    out = project(torch.tensor([[-1.0, 0.9, 2.0]]), x, 0.2, "linf")
    assert torch.allclose(out, torch.tensor([[0.0, 0.7, 1.0]]))


def test_emulator_and_lava_sim_agree_on_the_adversarial_set(small_model_files, digits):
    ev = Evaluator(load_target(small_model_files["deployment"]), digits, backend="lava-sim",
                   limit=24, seed=0)
    ctx = ev.context(SourceSpec(), AttackSettings(iterations=5))
    adv, _, _ = run_attack(ev, ctx, "pgd", 0.2, ev.idx)
    on_lava = ev.verify(adv)
    on_emulator = ev.verify(adv, backend="emulator")
    assert np.array_equal(on_lava.predictions, on_emulator.predictions)
    assert on_lava.activity == on_emulator.activity


def test_cli_attack_writes_reports(small_model_files, tmp_path):
    out = tmp_path / "rep"
    proc = run_cli("attack", small_model_files["deployment"], "--attack", "fgsm,pgd",
                   "--eps", "0,0.3,1", "--iterations", "5", "--limit", "40",
                   "--json", tmp_path / "a.json", "--report-dir", out, cwd=tmp_path)
    assert_ok(proc)
    report = json.loads((tmp_path / "a.json").read_text())
    for key in ("backend", "dataset", "n", "clean_accuracy", "results", "diagnostics"):
        assert key in report
    for row in report["results"]:
        for key in ("attack", "norm", "eps", "robust_accuracy", "spikes_per_sample",
                    "energy_per_sample_nj", "agreement"):
            assert key in row
    at_zero = [r for r in report["results"] if r["eps"] == 0]
    assert all(r["robust_accuracy"] == report["clean_accuracy"] for r in at_zero)
    assert {c["check"] for c in report["diagnostics"]} >= {
        "robust accuracy <= clean accuracy", "non-zero gradients", "deterministic outputs"}
    assert (out / "report.md").read_text().startswith("# Robustness")
    for name in ("robust_accuracy.png", "energy.png", "report.json"):
        assert (out / name).stat().st_size > 0


@pytest.mark.parametrize("args, names", [
    (["--eps", "-0.1"], ["--eps", "-0.1"]),
    (["--attack", "pgd,bogus"], ["bogus", "fgsm", "square", "spike-jitter"]),
    (["--backend", "loihi2"], ["loihi2", "lava-loihi"]),
    (["--source", "magic"], ["magic", "twin"]),
    (["--iterations", "0"], ["--iterations"]),
])
def test_cli_attack_bad_input(small_model_files, tmp_path, args, names):
    proc = run_cli("attack", small_model_files["deployment"], *args, "--json", tmp_path / "r.json",
                   cwd=tmp_path)
    assert_bad_input(proc, *names)
    assert not (tmp_path / "r.json").exists()


def test_cli_attack_refuses_a_nir_file(small_model_files, tmp_path):
    assert_bad_input(run_cli("attack", small_model_files["nir"], cwd=tmp_path), "Deployment")


def test_every_attack_is_registered_once():
    assert len(ATTACKS) == 9 and all(a.domain in ("input", "spikes") for a in ATTACKS.values())


def test_square_note_only_when_square_beats_the_gradient_attacks():
    from snn_deploy.evaluate.attack_report import square_note

    rows = [{"attack": "pgd", "eps": 0.1, "robust_accuracy": 0.4},
            {"attack": "square", "eps": 0.1, "robust_accuracy": 0.5}]
    assert square_note({"results": rows}) is None
    rows[1]["robust_accuracy"] = 0.3
    assert "Square beats" in square_note({"results": rows})


def test_ensemble_is_the_per_sample_worst_case(evaluator):
    sources = [SourceSpec("twin"), SourceSpec("bptr"), SourceSpec("float")]
    result = sweep(evaluator, attacks=["fgsm", "pgd"], eps=[0.1], settings=AttackSettings(iterations=5),
                   sources=sources, ensemble=True)
    ensemble = [r for r in result.rows if r.attack == "ensemble"]
    others = [r for r in result.rows if r.attack != "ensemble"]
    assert len(ensemble) == 1 and len(others) == 6
    # each attack ran only on the points its predecessors left robust
    assert [r.attacked for r in others] == sorted((r.attacked for r in others), reverse=True)
    assert ensemble[0].robust_accuracy == min(r.robust_accuracy for r in others)
    single = sweep(evaluator, attacks=["pgd"], eps=[0.1], settings=AttackSettings(iterations=5),
                   sources=sources[:1])
    assert ensemble[0].robust_accuracy <= single.rows[0].robust_accuracy


def test_report_has_per_layer_energy_clean_and_adversarial(evaluator, small_model_files):
    from snn_deploy.evaluate.attack_report import attack_report

    result = sweep(evaluator, attacks=["fgsm"], eps=[0.0, 0.3], settings=AttackSettings(),
                   sources=[SourceSpec()])
    report = attack_report(result, target=load_target(small_model_files["deployment"]),
                           dataset="digits", seed=3)
    for part in [report["clean"], *report["results"]]:
        layers = part["layers"]
        assert len(layers) == 2 and all(layer["energy_nj"] > 0 for layer in layers)
        assert sum(layer["energy_nj"] for layer in layers) == pytest.approx(part["energy_per_sample_nj"])
        assert sum(layer["spikes_per_sample"] for layer in layers) == pytest.approx(part["spikes_per_sample"])
    assert report["energy_basis"] == "proxy"
    json.dumps(report)


def test_eot_scores_iterates_in_expectation_not_by_the_frozen_draw(evaluator):
    assert evaluator.encoder.stochastic  # rate coding: the frozen draw is one of many
    points = torch.arange(8)
    x, y = evaluator.x[points], evaluator.y[points]
    ctx = evaluator.context(SourceSpec(), AttackSettings(eot=4, seed=0))
    _, logits = ctx.gradient(x, y, points, lambda z, t: torch.nn.functional.cross_entropy(
        z, t, reduction="none"))
    draws = [ctx.logits(x, points, d).detach() for d in range(4)]
    assert torch.allclose(logits, sum(draws) / 4)
    assert torch.allclose(ctx.expected_logits(x, points), logits)
    assert not torch.allclose(logits, draws[0])  # the frozen draw alone scores differently
    one = evaluator.context(SourceSpec(), AttackSettings(eot=1))
    assert torch.equal(one.gradient(x, y, points, lambda z, t: z.sum(dim=1))[1],
                       one.logits(x, points).detach())
