"""``attack``: adversarial inputs made on a gradient source, verified on the target backend.

Workflow layer (``snn_deploy.api``): checks the names against the registries (``ATTACKS``,
``SOURCE_KINDS``, ``SURROGATES``), runs ``evaluate.robustness.sweep`` and the validity checks
(``evaluate.checks``) and builds the attack report (``evaluate.attack_report``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Sequence

from snn_deploy.api.common import check_device, select_host
from snn_deploy.errors import UserError
from snn_deploy.evaluate.attack_report import attack_report, markdown, write_text
from snn_deploy.evaluate.report import write_json
from snn_deploy.evaluate.robustness import Robustness, SourceSpec
from snn_deploy.fileio import all_or_nothing


@dataclasses.dataclass(frozen=True)
class AttackResult:
    """The attack report (keys in DESIGN.md) and the sweep it was made from (for plots)."""

    report: dict
    robustness: Robustness

    def to_json(self) -> dict:
        return self.report

    def summary(self) -> str:
        """What ``attack`` prints: clean accuracy, a row per attack and budget, energy, checks."""
        from snn_deploy.evaluate.attack_report import results_table, square_note

        r = self.report
        lines = [f"clean accuracy on {r['backend']}: {r['clean_accuracy']:.4f} ({r['n']} samples)",
                 results_table(r)]
        note = square_note(r)
        if note:
            lines.append(note)
        if r["clean"]["energy_per_sample_nj"] is not None:
            lines.append(f"energy per sample (clean): {r['clean']['energy_per_sample_nj']:.2f} nJ,"
                         f" basis: {r['energy_basis']} ({r['energy_profile']}: {r['energy_source']})")
        for c in r["diagnostics"]:
            mark = {True: "ok  ", False: "WARN", None: "skip"}[c["passed"]]
            lines.append(f"[{mark}] {c['check']}: {c['detail']}")
        return "\n".join(lines)

    def write(self, *, json_out: str | Path | None = None,
              report_dir: str | Path | None = None) -> list[Path]:
        """The JSON and the report folder (report.json, report.md, PNG plots), all or none;
        returns the plots written."""
        plots: list[Path] = []
        with all_or_nothing():
            if json_out:
                write_json(self.report, json_out)
            if report_dir:
                from snn_deploy.evaluate.plots import write_plots

                out = Path(report_dir)
                plots = write_plots(self.robustness, out, energy_basis=self.report["energy_basis"])
                write_json(self.report, out / "report.json")
                write_text(markdown(self.report, plots=plots), out / "report.md")
        return plots


def check_names(*, attacks: Sequence[str], eps: Sequence[float], sources: Sequence[str],
                surrogates: Sequence[str]) -> None:
    """Every name in its registry and every budget finite and >= 0, else a ``UserError``."""
    from snn_deploy.attack import ATTACKS, attack_names
    from snn_deploy.attack.sources import SOURCE_KINDS
    from snn_deploy.run.twin import SURROGATES

    for name in attacks:
        if name not in ATTACKS:
            raise UserError(f"unknown attack {name!r}: choose from {', '.join(attack_names())}")
    for e in eps:
        if not (e >= 0 and e < float("inf")):
            raise UserError(f"--eps must be finite and >= 0, got {e:g}")
    for kind in sources:
        if kind not in SOURCE_KINDS:
            raise UserError(f"unknown gradient source {kind!r}: choose from {', '.join(SOURCE_KINDS)}")
    for shape in surrogates:
        if shape not in SURROGATES:
            raise UserError(f"unknown surrogate {shape!r}: choose from {', '.join(SURROGATES)}")


def source_specs(sources: Sequence[str], surrogates: Sequence[str], *, width: float,
                 ensemble: bool) -> list[SourceSpec]:
    """One spec per source (twin and float: per surrogate with ``ensemble``, else the first)."""
    specs: list[SourceSpec] = []
    for kind in sources:
        shapes = surrogates if ensemble else surrogates[:1]
        specs += [SourceSpec(kind)] if kind == "bptr" else \
            [SourceSpec(kind, surrogate=shape, width=width) for shape in shapes]
    return specs


def attack(model: str | Path, *, backend: str = "emulator", attacks: Sequence[str] = ("pgd",),
           eps: Sequence[float] = (0.0, 0.05, 0.1, 0.2, 0.5, 1.0), norm: str = "linf",
           iterations: int = 20, restarts: int = 1, step_size: float | None = None, eot: int = 1,
           queries: int = 1000, sources: Sequence[str] = ("twin",),
           surrogates: Sequence[str] = ("fast_sigmoid", "triangle"), width: float = 0.5,
           ensemble: bool = False, limit: int | None = None, dataset: str | None = None,
           seed: int = 0, device: str = "cpu", energy_profile: str | None = None,
           checks: bool = True, partition: str | None = None, board: str | None = None,
           on_progress: Callable[[str], None] | None = None) -> AttackResult:
    """Attack a Deployment and verify every adversarial input on the target backend.

    Settings as ``attack.base.AttackSettings``; ``sources``: gradient sources (twin, bptr, float);
    ``surrogates``: shapes for twin/float sources (all with ``ensemble``, the first otherwise);
    ``ensemble``: per-sample worst case over all of them; ``checks``: run the validity checks.
    """
    from snn_deploy.attack.base import AttackSettings
    from snn_deploy.data import load_dataset
    from snn_deploy.evaluate.checks import run_checks
    from snn_deploy.evaluate.robustness import Evaluator, sweep
    from snn_deploy.profiles import load_profile
    from snn_deploy.targets import load_target

    check_names(attacks=attacks, eps=eps, sources=sources, surrogates=surrogates)
    if backend == "loihi2":
        from snn_deploy.run.loihi2 import require_lava_loihi

        require_lava_loihi()
    select_host(backend, partition, board)
    settings = AttackSettings(norm=norm, iterations=iterations, restarts=restarts,
                              step_size=step_size, eot=eot, queries=queries, seed=seed)
    target = load_target(model)
    target.require_deployment()
    name = dataset or target.coding.dataset
    specs = source_specs(sources, surrogates, width=width, ensemble=ensemble)
    ev = Evaluator(target, load_dataset(name), backend=backend, limit=limit, seed=seed,
                   device=check_device(device),
                   energy_profile=load_profile(energy_profile) if energy_profile else None)
    result = sweep(ev, attacks=list(attacks), eps=list(eps), settings=settings, sources=specs,
                   ensemble=ensemble, on_progress=on_progress)
    if checks:
        if on_progress is not None:
            on_progress("validity checks")
        result.diagnostics = run_checks(ev, result, specs)
    return AttackResult(report=attack_report(result, target=target, dataset=name, seed=seed),
                        robustness=result)
