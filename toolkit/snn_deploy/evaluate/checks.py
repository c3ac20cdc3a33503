"""Validity checks every attack report carries (docs/checks.md: raised if / why / what to do).

Each check is ``{"check", "passed", "detail"}`` with ``passed`` true, false (a warning the reader
must act on) or null (could not run, the detail says why). Checks that need extra attacks run
them verified on the emulator, which is bit-exact to lava-sim (tests/test_emulator.py), on at
most ``AUX_SAMPLES`` samples.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict

import numpy as np
import torch

from snn_deploy.attack.base import AttackSettings
from snn_deploy.attack.losses import cross_entropy
from snn_deploy.evaluate.robustness import AttackRow, Evaluator, Robustness, SourceSpec, run_attack

AUX_SAMPLES = 100
GRADIENT_ATTACKS = ("fgsm", "pgd", "apgd-ce", "apgd-dlr")
ITERATIVE = ("pgd", "apgd-ce", "apgd-dlr")
TOLERANCE = 0.02  # two points: differences below this are noise on a few hundred samples


def _check(name: str, passed: bool | None, detail: str) -> dict:
    return {"check": name, "passed": passed, "detail": detail}


ENSEMBLE_NOTE = ("not run with --ensemble (each attack sees only the points still robust, so"
                 " attacks are not comparable): rerun the attacks without --ensemble")


def _rows(result: Robustness, *names: str) -> list[AttackRow]:
    return [r for r in result.rows if r.attack in names]


def _best_by_eps(rows: list[AttackRow]) -> dict[float, float]:
    best: dict[float, float] = {}
    for r in rows:
        best[r.eps] = min(best.get(r.eps, 1.0), r.robust_accuracy)
    return best


def robust_below_clean(result: Robustness) -> dict:
    if result.ensemble:
        return _check("robust accuracy <= clean accuracy", None, ENSEMBLE_NOTE)
    high = [r for r in result.rows if r.attack != "ensemble" and r.eps > 0
            and r.attacked == result.n and r.attack_accuracy > result.clean_accuracy]
    detail = "; ".join(f"{r.attack} eps={r.eps:g}: {r.attack_accuracy:.3f}" for r in high[:5])
    return _check("robust accuracy <= clean accuracy", not high,
                  f"accuracy on adversarial inputs above clean {result.clean_accuracy:.3f}: {detail}"
                  if high else f"every attack's accuracy <= clean {result.clean_accuracy:.3f}")


def monotone(result: Robustness) -> dict:
    if result.ensemble:
        return _check("accuracy does not rise with eps", None, ENSEMBLE_NOTE)
    series: dict[tuple[str, str], list[AttackRow]] = defaultdict(list)
    for r in result.rows:
        if r.attack != "ensemble" and r.attacked == result.n:
            series[(r.attack, r.source)].append(r)
    rises = []
    for (attack, source), rows in series.items():
        rows.sort(key=lambda r: r.eps)
        for a, b in zip(rows, rows[1:]):
            if b.attack_accuracy > a.attack_accuracy + 1e-12:
                rises.append(f"{attack} ({source}) {a.eps:g}->{b.eps:g}: "
                             f"{a.attack_accuracy:.3f}->{b.attack_accuracy:.3f}")
    if not any(len(v) > 1 for v in series.values()):
        return _check("accuracy does not rise with eps", None, "not run: fewer than two eps values")
    return _check("accuracy does not rise with eps", not rises,
                  "each attack alone: " + "; ".join(rises[:5]) if rises else
                  "each attack alone is non-increasing in eps (reported robust accuracy is a "
                  "per-sample worst case over the sweep, non-increasing by construction)")


def full_box(result: Robustness) -> dict:
    name = "eps covering the input box drives accuracy to about 0"
    limit = 1.0 if result.settings.norm == "linf" else None
    rows = [r for r in _rows(result, *GRADIENT_ATTACKS, "square", "ensemble")
            if r.domain == "input" and limit is not None and r.eps >= limit]
    if not rows:
        return _check(name, None, "not run: no L-inf eps >= 1 in the sweep (add 1.0)")
    best = min(r.robust_accuracy for r in rows)
    return _check(name, best <= 0.05,
                  f"robust accuracy at eps >= 1: {best:.3f}" + ("" if best <= 0.05 else
                  " (> 0.05: the attack cannot find inputs that the whole box contains: its"
                  " gradients are masked or too weak)"))


def _aux(ev: Evaluator, result: Robustness, attack: str, eps: float, settings: AttackSettings,
         points: np.ndarray, spec: SourceSpec | None = None) -> np.ndarray:
    """Backend-correct (on the emulator) per point after an auxiliary attack."""
    ctx = ev.context(spec or SourceSpec(), settings)
    adv, _, _ = run_attack(ev, ctx, attack, eps, torch.as_tensor(points))
    return ev.verify(adv, backend="emulator").predictions[points] == result.labels[points]


def iterative_vs_fgsm(ev: Evaluator, result: Robustness) -> dict:
    name = "iterative attacks at least as strong as FGSM"
    if result.ensemble:
        return _check(name, None, ENSEMBLE_NOTE)
    iterative = [r for r in _rows(result, *ITERATIVE) if r.eps > 0 and r.attacked == result.n]
    if not iterative:
        return _check(name, None, "not run: no iterative attack in the sweep")
    fgsm = {(r.eps, r.source): r.robust_accuracy for r in _rows(result, "fgsm")}
    points = np.arange(result.n)
    weaker = []
    for r in iterative:
        ref = fgsm.get((r.eps, r.source))
        if ref is None:  # run FGSM with the same source at this eps
            spec = result.sources.get(r.source, SourceSpec())
            ok = _aux(ev, result, "fgsm", r.eps, result.settings, points, spec)
            ref = float((ok & (result.clean.predictions == result.labels)).mean())
            fgsm[(r.eps, r.source)] = ref
        if r.robust_accuracy > ref + TOLERANCE:
            weaker.append(f"{r.attack} eps={r.eps:g}: {r.robust_accuracy:.3f} vs FGSM {ref:.3f}")
    return _check(name, not weaker, "; ".join(weaker[:5]) if weaker else
                  "every iterative attack <= FGSM at the same eps and source (+2 points)")


def more_iterations(ev: Evaluator, result: Robustness) -> dict:
    name = "more iterations and restarts change little"
    if result.ensemble:
        return _check(name, None, ENSEMBLE_NOTE)
    rows = [r for r in _rows(result, *ITERATIVE) if 0 < r.eps and r.attacked == result.n
            and r.correct is not None]
    if not rows:
        return _check(name, None, "not run: no iterative attack in the sweep")
    informative = [r for r in rows if 0.05 < r.robust_accuracy] or rows
    r = informative[0]
    points = np.arange(min(result.n, AUX_SAMPLES))
    s = result.settings
    stronger = dataclasses.replace(s, iterations=2 * s.iterations, restarts=s.restarts + 1,
                                   seed=s.seed + 1)
    ok = _aux(ev, result, r.attack, r.eps, stronger, points, result.sources.get(r.source, SourceSpec()))
    clean_ok = result.clean.predictions[points] == result.labels[points]
    assert r.correct is not None
    base = float((r.correct[points] & clean_ok).mean())
    more = float((ok & r.correct[points] & clean_ok).mean())
    drop = base - more
    return _check(name, drop <= TOLERANCE,
                  f"{r.attack} eps={r.eps:g} on {len(points)} samples: {base:.3f} with "
                  f"{s.iterations} iterations x {s.restarts} restarts, {more:.3f} adding "
                  f"{stronger.iterations} x {stronger.restarts}" +
                  ("" if drop <= TOLERANCE else ": the sweep's attack had not converged; raise"
                   " --iterations / --restarts"))


def blackbox_not_stronger(result: Robustness) -> dict:
    name = "black-box (Square) and transfer attacks not stronger than white-box"
    white = _best_by_eps([r for r in _rows(result, *GRADIENT_ATTACKS) if r.source.startswith(("twin", "bptr"))])
    others = [r for r in result.rows if r.attack == "square" or
              (r.attack in GRADIENT_ATTACKS and r.source.startswith("float"))]
    if not others or not white:
        return _check(name, None, "not run: needs a white-box gradient attack and Square or a"
                      " float (transfer) source in the sweep")
    stronger = [f"{r.attack} ({r.source}) eps={r.eps:g}: {r.robust_accuracy:.3f} < white-box "
                f"{white[r.eps]:.3f}" for r in others
                if r.eps in white and r.robust_accuracy < white[r.eps] - TOLERANCE]
    return _check(name, not stronger, "; ".join(stronger[:5]) + " (white-box gradients are"
                  " masked: trust the stronger attack, and use --ensemble)" if stronger else
                  "no black-box or transfer attack beats the best white-box one by > 2 points")


def noise_weaker(ev: Evaluator, result: Robustness) -> dict:
    name = "random noise at the same eps weaker than attacks"
    attacks = _best_by_eps([r for r in _rows(result, *GRADIENT_ATTACKS, "square")
                            if r.eps > 0 and r.domain == "input"])
    if not attacks:
        return _check(name, None, "not run: no input-space attack in the sweep")
    noise = _best_by_eps(_rows(result, "uniform", "gaussian"))
    points = np.arange(result.n)
    clean_ok = result.clean.predictions == result.labels
    worse = []
    for e, acc in sorted(attacks.items()):
        if e not in noise:
            noise[e] = float((_aux(ev, result, "uniform", e, result.settings, points) & clean_ok).mean())
        if noise[e] < acc - TOLERANCE:
            worse.append(f"eps={e:g}: noise {noise[e]:.3f} < attack {acc:.3f}")
    return _check(name, not worse, "; ".join(worse) + " (the attacks are weaker than chance:"
                  " their gradients mislead)" if worse else
                  "uniform noise never beats the best attack by > 2 points: " +
                  ", ".join(f"eps={e:g} noise {noise[e]:.3f} / attack {a:.3f}"
                            for e, a in sorted(attacks.items())))


def nonzero_gradients(ev: Evaluator, result: Robustness, specs: list[SourceSpec]) -> dict:
    points = torch.arange(min(result.n, AUX_SAMPLES))
    parts, bad = [], False
    for spec in specs:
        ctx = ev.context(spec, result.settings)
        grad, _ = ctx.gradient(ev.x[points], ev.y[points], points, cross_entropy)
        zero = float((grad.flatten(1).abs().sum(dim=1) == 0).float().mean())
        bad |= zero > 0.1
        parts.append(f"{spec.label}: {zero:.1%} of samples with an all-zero input gradient")
    return _check("non-zero gradients", not bad, "; ".join(parts) +
                  (" (> 10%: the source cannot guide an attack; try another --surrogate/--width"
                   " or --source bptr)" if bad else ""))


def deterministic(ev: Evaluator, result: Robustness) -> dict:
    name = "deterministic outputs"
    k = min(result.n, 32)
    first = ev.subset(k)
    repeat = first.verify(first.x).predictions
    same = bool(np.array_equal(repeat, result.clean.predictions[:k]))
    detail = f"{result.backend} run twice on the same {k} encoded inputs: " + \
        ("identical outputs" if same else "different outputs: the backend is random, use EOT")
    if ev.encoder.stochastic:
        fresh = ev.encoder.spikes(ev.x, ev.idx, draw=1)
        pred = ev.verify(fresh, "spikes", backend="emulator").predictions
        fresh_acc = float((pred == result.labels).mean())
        detail += (f"; the {ev.encoding} encoder is random: evaluation freezes its noise per sample"
                   f" (seeded), clean accuracy {result.clean_accuracy:.3f} frozen vs {fresh_acc:.3f}"
                   f" with a fresh draw")
        gap = _fresh_gap(ev, result)
        if gap is not None:
            detail += gap[1]
            same = same and gap[0]
    return _check(name, same, detail)


def _fresh_gap(ev: Evaluator, result: Robustness) -> tuple[bool, str] | None:
    """Do the strongest attack's inputs still fool the backend under fresh encoder noise?"""
    rows = [r for r in _rows(result, *GRADIENT_ATTACKS) if r.inputs is not None and r.eps > 0
            and r.domain == "input" and r.attacked == result.n]
    if not rows:
        return None
    # the smallest eps that halves accuracy: at larger eps every draw is fooled, which says nothing
    halved = [r for r in rows if r.attack_accuracy <= result.clean_accuracy / 2]
    r = min(halved, key=lambda r: r.eps) if halved else max(rows, key=lambda r: r.eps)
    assert r.inputs is not None
    fresh = ev.encoder.spikes(r.inputs, ev.idx, draw=1)
    acc = float((ev.verify(fresh, "spikes", backend="emulator").predictions == result.labels).mean())
    ok = acc - r.attack_accuracy <= 0.05 or result.settings.eot > 1
    return ok, (f"; {r.attack} eps={r.eps:g} adversarial inputs: accuracy {r.attack_accuracy:.3f}"
                f" with the frozen noise, {acc:.3f} with fresh noise" +
                ("" if ok else " (the attack exploits the frozen noise: rerun with --eot 8)"))


def verified_on_backend(result: Robustness) -> dict:
    rows = [r for r in result.rows if r.agreement is not None]
    if not rows:
        return _check("adversarial examples re-evaluated on the target backend", True,
                      f"clean inputs run on {result.backend}")
    low = min(r.agreement for r in rows if r.agreement is not None)
    mean = float(np.mean([r.agreement for r in rows]))
    return _check("adversarial examples re-evaluated on the target backend", low >= 0.8,
                  f"every adversarial input re-run on {result.backend}; gradient source and backend"
                  f" agree on {mean:.1%} of them on average (lowest {low:.1%})" +
                  ("" if low >= 0.8 else ": the source is a poor model of the deployed network,"
                   " its own tally would mislead"))


def float_agreement(result: Robustness) -> dict:
    if result.float_agreement is None:
        return _check("clean agreement float vs deployed", None,
                      "not run: the Deployment has no float source graph (imported from netx)")
    a = result.float_agreement
    return _check("clean agreement float vs deployed", a >= 0.95,
                  f"float source graph and {result.backend} predict the same class on {a:.1%} of"
                  " clean test samples" + ("" if a >= 0.95 else ": quantization changed the model;"
                                           " robustness of the float model does not carry over"))


def run_checks(ev: Evaluator, result: Robustness, specs: list[SourceSpec]) -> list[dict]:
    return [
        robust_below_clean(result),
        monotone(result),
        full_box(result),
        iterative_vs_fgsm(ev, result),
        more_iterations(ev, result),
        blackbox_not_stronger(result),
        noise_weaker(ev, result),
        nonzero_gradients(ev, result, specs),
        deterministic(ev, result),
        verified_on_backend(result),
        float_agreement(result),
    ]
