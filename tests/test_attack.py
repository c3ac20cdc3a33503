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
from snn_deploy.coding import decoder_predict
from snn_deploy.evaluate import accuracy
from snn_deploy.evaluate.checks import monotone, robust_below_clean
from snn_deploy.evaluate.robustness import Evaluator, SourceSpec, run_attack, sweep
from snn_deploy.targets import load_target

from tests.factories import assert_bad_input, assert_ok, run_cli

pytestmark = pytest.mark.usefixtures("one_thread")


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
    x, eps = evaluator.x[points], 0.3
    adv, _, _ = run_attack(evaluator, ctx, name, eps, points)
    delta = adv[points] - x
    size = delta.abs().amax(dim=1) if norm == "linf" else delta.norm(dim=1)
    assert float(size.max()) <= eps + 1e-6
    assert float(adv.min()) >= 0 and float(adv.max()) <= 1
    assert float(size.max()) > 0


@pytest.mark.parametrize("name", list(ATTACKS))
def test_eps_zero_returns_the_input_bit_for_bit(evaluator, name):
    """The attack code itself, not the report's bookkeeping: with no budget every attack returns
    its input's exact bits, leaves the input alone and asks the backend nothing."""
    attack = ATTACKS[name]
    points = torch.arange(12)
    ctx = evaluator.context(SourceSpec(), AttackSettings(iterations=3, restarts=2, seed=1))
    x = evaluator.clean_spikes()[:, points] if attack.domain == "spikes" else evaluator.x[points]
    before = x.clone()
    out = attack.run(ctx, x, evaluator.y[points], points, 0.0)
    assert out.shape == x.shape and out.dtype == x.dtype == torch.float32
    assert torch.equal(out.view(torch.int32), before.view(torch.int32)), \
        f"{name} at eps 0 changed {int((out.view(torch.int32) != before.view(torch.int32)).sum())} values"
    assert torch.equal(x.view(torch.int32), before.view(torch.int32)), f"{name} wrote into its input"
    assert ctx.queries_used == 0


def test_pgd_lowers_backend_accuracy_and_beats_noise(evaluator):
    settings = AttackSettings(iterations=10, seed=0)
    result = sweep(evaluator, attacks=["pgd", "uniform"], eps=[0.2, 1.0], settings=settings,
                   sources=[SourceSpec()])
    pgd = {r.eps: r for r in result.rows if r.attack == "pgd"}
    noise = {r.eps: r for r in result.rows if r.attack == "uniform"}
    assert result.clean_accuracy > 0.5
    assert pgd[0.2].robust_accuracy < result.clean_accuracy
    assert pgd[1.0].robust_accuracy <= 0.05
    assert pgd[0.2].robust_accuracy < noise[0.2].robust_accuracy
    # the twin source computes the backend's arithmetic: it predicts every adversarial input's class
    assert all(r.agreement == 1.0 for r in pgd.values())
    # both checks look at each attack alone (attack_accuracy), not at the cumulative worst case
    assert monotone(result)["passed"] is True
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


# --- APGD's momentum and step-size rule, observed on a scripted loss ----------------------------
# Croce & Hein 2020, Algorithm 1: z = P(x_k + eta * sign(grad)), x_{k+1} = P(x_k + ALPHA (z - x_k)
# + (1 - ALPHA)(x_k - x_{k-1})); eta starts at 2 eps and halves at a checkpoint when the loss rose
# on fewer than RHO of the steps since the last one, and the iterate then restarts from the best
# point. The paper's constants, not the module's, so that a changed constant fails here.
PAPER_ALPHA = 0.75
CENTRE, EPS = 0.5, 0.2  # a ball [0.3, 0.7] well inside the box [0, 1]: only the ball projects


class ScriptedContext:
    """A stand-in AttackContext for one sample of label 0 and two classes: ``gradient`` records
    each point it is asked about and answers call k with the gradient ``sign(k)`` everywhere and
    the logits ``score(k)``. APGD uses nothing else of a context."""

    def __init__(self, *, iterations: int, sign, score):
        self.settings = AttackSettings(norm="linf", iterations=iterations, seed=0)
        self.sign, self.score = sign, score
        self.points: list[torch.Tensor] = []

    def gradient(self, x, y, idx, loss):
        k = len(self.points)
        self.points.append(x.detach().clone())
        return torch.full_like(x, float(self.sign(k))), torch.tensor([self.score(k)])


def _scripted_apgd(ctx: ScriptedContext, n: int = 32) -> torch.Tensor:
    x = torch.full((1, n), CENTRE)
    return ATTACKS["apgd-ce"].run(ctx, x, torch.tensor([0]), torch.tensor([0]), EPS)


def _ball(v: torch.Tensor) -> torch.Tensor:
    return v.clamp(CENTRE - EPS, CENTRE + EPS)


def _next_point(x_k, x_prev, *, eta: float, sign: float) -> torch.Tensor:
    """The paper's update from x_k (previous point x_prev) with step eta along ``sign``."""
    z = _ball(x_k + eta * sign)
    return _ball(x_k + PAPER_ALPHA * (z - x_k) + (1 - PAPER_ALPHA) * (x_k - x_prev))


def test_apgd_moves_with_momentum_and_keeps_its_step_while_the_loss_rises():
    """A loss that rises at every step never triggers a halving: eta stays 2 eps through all the
    checkpoints, and every iterate mixes the projected step with the previous move."""
    sign = lambda k: 1.0 if k % 2 == 0 else -1.0  # noqa: E731  (the gradient flips each step)
    rising = lambda k: [5.0 - 0.1 * k, 0.0]  # noqa: E731  (CE = softplus(-a) rises, never fooled)
    ctx = ScriptedContext(iterations=10, sign=sign, score=rising)
    out = _scripted_apgd(ctx)
    p = ctx.points
    assert len(p) == 11 and set(checkpoints(10)) == {3, 5, 6, 7, 8, 9, 10}
    torch.testing.assert_close(p[1], _ball(p[0] + 2 * EPS), rtol=0, atol=1e-6)  # the first step: no momentum
    for k in range(1, 10):
        torch.testing.assert_close(p[k + 1], _next_point(p[k], p[k - 1], eta=2 * EPS, sign=sign(k)),
                                   rtol=0, atol=1e-6, msg=f"iterate {k + 1}")
    # plain projected steps would bounce between the faces; momentum stops at least 2 eps / 4 short
    assert (p[2] - _ball(p[1] - 2 * EPS)).min() >= 0.25 * 2 * EPS - 1e-6
    assert torch.equal(out, p[10])  # nothing fooled: the highest-loss point, here the last one


def test_apgd_halves_its_step_at_each_checkpoint_and_restarts_from_the_best_point():
    """A flat loss (the common case for spike counts) halves eta at every checkpoint (3 and 5 of 10
    iterations) and sends the iterate back to the best point, here the random start."""
    ctx = ScriptedContext(iterations=10, sign=lambda k: 1.0, score=lambda k: [5.0, 0.0])
    out = _scripted_apgd(ctx)
    p = ctx.points
    start = p[0]
    assert bool(((start - CENTRE).abs() <= EPS).all()) and len(torch.unique(start)) > 8
    assert torch.equal(p[1], p[3]) and torch.allclose(p[1], torch.full_like(start, CENTRE + EPS))
    after_first = _next_point(start, p[2], eta=EPS, sign=1.0)  # eta 2 eps -> eps at iteration 3
    torch.testing.assert_close(p[4], after_first, rtol=0, atol=1e-6)
    after_second = _next_point(start, p[4], eta=EPS / 2, sign=1.0)  # eps -> eps / 2 at 5
    torch.testing.assert_close(p[6], after_second, rtol=0, atol=1e-6)
    # the data tell the halvings apart: the old step, or no restart, would land elsewhere
    assert (p[4] - _next_point(start, p[2], eta=2 * EPS, sign=1.0)).abs().max() > 0.05
    assert (p[6] - _next_point(start, p[4], eta=EPS, sign=1.0)).abs().max() > 0.02
    assert (p[4] - _next_point(p[3], p[2], eta=EPS, sign=1.0)).abs().max() > 0.05
    assert torch.equal(out, start)  # the loss never rose above the start's: it is the best point


def test_apgd_does_not_settle_for_a_tie_the_decoder_gives_to_the_true_class():
    """Iterate 2 ties (spike counts 1, 1 for label 0), iterate 3 on is misclassified (0, 2+);
    the loss rises at every step, so no checkpoint intervenes. The deployed decoder breaks ties
    towards the lowest class (coding.decoder_predict), so the tie is no adversarial
    example (attack/base.misclassified; APGD once took margin <= 0 as fooled)."""
    tie = [1.0, 1.0]
    assert decoder_predict(torch.tensor([[tie]]), decoder="spike_count").tolist() == [0]
    score = lambda k: [3.0 - k, 0.0] if k < 2 else tie if k == 2 else [0.0, float(k)]  # noqa: E731
    sign = lambda k: 1.0 if k % 2 == 0 else -1.0  # noqa: E731
    ctx = ScriptedContext(iterations=4, sign=sign, score=score)
    out = _scripted_apgd(ctx)
    assert not torch.equal(ctx.points[2], ctx.points[3])
    assert any(torch.equal(out, p) for p in ctx.points[3:]), (
        "APGD returned the tied iterate 2, which the backend classifies correctly, not iterate 3,"
        " which it misclassifies")


# --- attack strength on the trained model -----------------------------------------------------


@pytest.fixture(scope="module")
def clean_correct(evaluator) -> np.ndarray:
    return evaluator.verify(evaluator.x).predictions == evaluator.y.numpy()


def _robust(ev: Evaluator, clean_correct: np.ndarray, name: str, eps: float,
            settings: AttackSettings) -> float:
    """Backend accuracy after one attack on every sample, clean mistakes counted as lost."""
    adv, _, _ = run_attack(ev, ev.context(SourceSpec(), settings), name, eps, ev.idx)
    return float(((ev.verify(adv).predictions == ev.y.numpy()) & clean_correct).mean())


def test_pgd_with_more_iterations_is_not_weaker_than_one_step(evaluator, clean_correct):
    """Same seed (so the same random start), same eps: ten steps of 2.5 eps / 10 fool more samples
    than one step of 2.5 eps (here 3 more of the 60)."""
    eps = 0.08
    one = _robust(evaluator, clean_correct, "pgd", eps, AttackSettings(iterations=1, seed=0))
    ten = _robust(evaluator, clean_correct, "pgd", eps, AttackSettings(iterations=10, seed=0))
    clean = float(clean_correct.mean())
    assert 0 < ten and one < clean, f"eps {eps} is no test: PGD {one:.3f} / {ten:.3f}, clean {clean:.3f}"
    assert ten < one, f"PGD with 10 iterations left {ten:.3f} robust, with 1 iteration {one:.3f}"


def test_apgd_ce_is_at_least_as_strong_as_pgd_with_the_same_budget(evaluator, clean_correct):
    """Same 10 iterations and seed, at two eps where PGD is neither at 0 nor at clean accuracy.
    (While APGD took ties as fooled it was weaker here: 0.467 / 0.167 against PGD's 0.433 /
    0.133.)"""
    settings = AttackSettings(iterations=10, seed=0)
    clean = float(clean_correct.mean())
    weaker = []
    for eps in (0.1, 0.15):
        pgd = _robust(evaluator, clean_correct, "pgd", eps, settings)
        apgd = _robust(evaluator, clean_correct, "apgd-ce", eps, settings)
        assert 0 < pgd < clean, f"eps {eps} is no test: PGD {pgd:.3f}, clean {clean:.3f}"
        if apgd > pgd:
            weaker.append(f"eps {eps}: APGD-CE {apgd:.3f} > PGD {pgd:.3f}")
    assert not weaker, "; ".join(weaker)


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
    pgd = {r["eps"]: r["robust_accuracy"] for r in report["results"] if r["attack"] == "pgd"}
    assert pgd[0.3] < report["clean_accuracy"] and pgd[1.0] <= 0.05
    checks = {c["check"]: c["passed"] for c in report["diagnostics"]}
    assert checks["robust accuracy <= clean accuracy"] is True
    assert checks["eps covering the input box drives accuracy to about 0"] is True
    assert checks["non-zero gradients"] is True and "deterministic outputs" in checks
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


def test_every_attack_is_registered_under_its_own_name():
    assert list(ATTACKS) == ["fgsm", "pgd", "apgd-ce", "apgd-dlr", "square", "gaussian", "uniform",
                             "spike-flip", "spike-jitter"]
    assert all(key == a.name for key, a in ATTACKS.items())
    assert {a.name for a in ATTACKS.values() if a.domain == "spikes"} == {"spike-flip", "spike-jitter"}
    assert all(a.domain == "input" for a in ATTACKS.values() if not a.name.startswith("spike-"))


def test_square_note_only_when_square_beats_the_gradient_attacks():
    from snn_deploy.evaluate.attack_report import square_note

    rows = [{"attack": "pgd", "eps": 0.1, "robust_accuracy": 0.4},
            {"attack": "square", "eps": 0.1, "robust_accuracy": 0.5}]
    assert square_note({"results": rows}) is None
    rows[1]["robust_accuracy"] = 0.3
    assert "Square beats" in square_note({"results": rows})


def test_ensemble_is_at_least_as_strong_as_every_attack_alone(evaluator):
    """Each attack of the ensemble sees only the points its predecessors left robust, with a
    random start drawn for that smaller batch, so its worst case is not the standalone one by
    construction: it must still be no weaker than any (attack, source) run alone on every point."""
    sources = [SourceSpec("twin"), SourceSpec("bptr"), SourceSpec("float")]
    settings = AttackSettings(iterations=5)
    together = sweep(evaluator, attacks=["fgsm", "pgd"], eps=[0.1], settings=settings,
                     sources=sources, ensemble=True)
    alone = sweep(evaluator, attacks=["fgsm", "pgd"], eps=[0.1], settings=settings,
                  sources=sources)
    ensemble = [r for r in together.rows if r.attack == "ensemble"]
    assert len(ensemble) == 1 and len(alone.rows) == 6
    best_alone = min(alone.rows, key=lambda r: r.robust_accuracy)
    assert ensemble[0].robust_accuracy <= best_alone.robust_accuracy < alone.clean_accuracy, \
        (ensemble[0].robust_accuracy, best_alone.attack, best_alone.source, best_alone.robust_accuracy)


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
