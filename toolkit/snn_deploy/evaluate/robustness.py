"""Hardware-in-the-loop robustness: attacks crafted with a gradient source (or queries), every
adversarial input verified on the target backend, robust accuracy and energy from the backend.

Robust accuracy at eps is the share of samples the backend classifies correctly on the clean input
*and* on every adversarial input found within eps: a point found at a smaller eps lies inside every
larger ball, so the figure is a per-sample worst case over the sweep and never rises with eps. The
per-attack, per-eps share before that accumulation is kept as ``attack_accuracy`` for the checks.

Every prediction (clean, adversarial, the float graph's, the query oracle's scores) is read with the
Deployment's own output decoder (``coding``: spike count, first-spike time or maximum
membrane); for a membrane decoder the backend records the output layer's pre-reset membrane
(run/membrane.py; on lava-sim from Lava's u and v every step).
"""

from __future__ import annotations

import copy
import dataclasses
import time
from typing import Callable, Iterator

import numpy as np
import torch

from snn_deploy.attack import ATTACKS, attack_names
from snn_deploy.attack.base import BATCH, AttackContext, AttackSettings, FrozenEncoder
from snn_deploy.attack.sources import make_source
from snn_deploy.coding import encoded_width
from snn_deploy.data import Split
from snn_deploy.errors import UserError
from snn_deploy.evaluate.accuracy import (
    BackendRef,
    _synapses,
    backend_of,
    recording_logits,
    recording_predictions,
    run_backend,
)
from snn_deploy.evaluate.counts import ActivityCounts, activity
from snn_deploy.evaluate.energy import Energy, price
from snn_deploy.profiles import Profile
from snn_deploy.run.backends import DEPLOYED_BACKENDS
from snn_deploy.run.emulator import run_emulator
from snn_deploy.run.membrane import MembraneEmulator
from snn_deploy.run.recording import Recording
from snn_deploy.targets import Target

Progress = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class SourceSpec:
    kind: str = "twin"  # twin | bptr | float
    surrogate: str = "fast_sigmoid"
    width: float = 0.5

    @property
    def label(self) -> str:
        return self.kind if self.kind == "bptr" else f"{self.kind}[{self.surrogate},{self.width:g}]"


@dataclasses.dataclass(frozen=True)
class Verified:
    """What the backend made of one set of inputs (one per sample)."""

    predictions: np.ndarray  # (n,)
    activity: ActivityCounts
    energy: Energy | None
    recording: Recording


@dataclasses.dataclass
class AttackRow:
    attack: str
    source: str
    norm: str
    eps: float
    robust_accuracy: float  # cumulative per-sample worst case, clean included
    attack_accuracy: float  # this attack at this eps alone, on the points it attacked
    source_accuracy: float  # what the gradient source predicted on the adversarial inputs
    agreement: float | None  # source and backend agree on the adversarial inputs
    attacked: int
    spikes_per_sample: float
    synops_per_sample: float
    energy_per_sample_nj: float | None
    seconds: float
    layers: list[dict] = dataclasses.field(default_factory=list)  # per layer: spikes, synops, nJ
    queries: int = 0
    eps_unit: str = "input range [0, 1]"
    # per sample, kept for the checks and plots (not in the JSON): backend-correct on this
    # attack's inputs, and the inputs themselves (values (n, d) or spikes (T, n, d))
    correct: np.ndarray | None = dataclasses.field(default=None, repr=False)
    inputs: torch.Tensor | None = dataclasses.field(default=None, repr=False)
    domain: str = "input"


@dataclasses.dataclass
class Robustness:
    backend: str
    n: int
    steps: int
    encoding: str
    clean_accuracy: float
    clean: Verified
    float_agreement: float | None  # float source graph vs backend on clean inputs
    rows: list[AttackRow]
    labels: np.ndarray
    settings: AttackSettings
    sources: dict[str, SourceSpec]  # label (as in the rows) -> spec
    ensemble: bool
    query_backend: str
    examples: dict  # for plots: one sample's clean and adversarial recordings
    diagnostics: list[dict] = dataclasses.field(default_factory=list)
    wall_time_s: float = 0.0
    decoder: str = "spike_count"  # the output decoder every prediction above was read with


class Evaluator:
    """Holds what a sweep needs: the target, the frozen encoder, the data and the backend."""

    def __init__(self, target: Target, split: Split, *, backend: BackendRef, limit: int | None,
                 seed: int, device: str = "cpu", energy_profile: Profile | None = None):
        name = backend if isinstance(backend, str) else backend.name
        if name not in DEPLOYED_BACKENDS:
            raise UserError(f"attack runs on a deployed backend ({', '.join(sorted(DEPLOYED_BACKENDS))}),"
                            f" not {name!r}")
        self.target, self.backend, self.device = target, name, device
        self.dep = target.require_deployment()
        self.profile = energy_profile or self.dep.profile
        coding = self.dep.coding
        self.decoder = coding.decoder
        if self.decoder.reads_membrane and name == "loihi2":
            raise UserError(f"{target.path} decodes by {self.decoder.name}, which reads the output"
                            " layer's membrane every step; the loihi2 backend records spikes only"
                            " (attack on emulator or lava-sim)")
        self.encoding, self.steps = coding.encoding, coding.steps
        x, y = split.part("test")
        if encoded_width(self.encoding, x.shape[1]) != self.dep.input_size:
            raise UserError(f"{target.path} takes {self.dep.input_size} inputs, but {split.name}"
                            f" samples have {x.shape[1]}")
        if limit is not None:
            if limit < 1:
                raise UserError(f"--limit must be >= 1, got {limit}")
            x, y = x[:limit], y[:limit]
        self.x, self.y = x.to(torch.float32), y.to(torch.int64)
        self.idx = torch.arange(len(x))
        self.encoder = FrozenEncoder(self.encoding, steps=self.steps, seed=seed,
                                     n_samples=len(x), n_inputs=x.shape[1])
        self.weights, self.recurrent = _synapses(target, name)
        self.runner = backend_of(target, backend, device=device)  # after the checks above

    def subset(self, k: int) -> Evaluator:
        """The same evaluation on its first k samples (same encoder noise)."""
        other = copy.copy(self)
        other.x, other.y, other.idx = self.x[:k], self.y[:k], self.idx[:k]
        return other

    # -- backends --------------------------------------------------------------------------
    def batches(self, x: torch.Tensor, domain: str) -> Iterator[torch.Tensor]:
        for start in range(0, len(self.idx), BATCH):
            part = slice(start, start + BATCH)
            yield x[:, part] if domain == "spikes" else self.encoder.spikes(x[part], self.idx[part])

    def verify(self, x: torch.Tensor, domain: str = "input",
               backend: BackendRef | None = None) -> Verified:
        """Run inputs for all n samples (values (n, d) or spikes (T, n, d)) on the backend (or on
        ``backend``, e.g. the emulator for a check)."""
        events: list[np.ndarray] = []

        def counted() -> Iterator[torch.Tensor]:
            for xb in self.batches(x, domain):
                events.append((xb != 0).sum(dim=0).to(torch.int64).numpy())
                yield xb

        rec = run_backend(self.target, backend or self.runner, counted(), device=self.device,
                          membrane=self.decoder.reads_membrane)
        counts = activity(rec, np.concatenate(events), self.weights, self.recurrent, steps=self.steps)
        return Verified(predictions=recording_predictions(rec, self.decoder),
                        activity=counts, energy=price(counts, self.profile), recording=rec)

    def oracle(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Query the backend's arithmetic (the emulator, bit-exact to lava-sim) on values."""
        return self.spike_oracle(self.encoder.spikes(x, idx), idx)

    def spike_oracle(self, s: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """The decoder's logits of spike-train inputs on the emulator (membrane recorded for a
        membrane decoder)."""
        if self.decoder.reads_membrane:
            rec = MembraneEmulator(self.dep, device=self.device).run(s)
        else:
            rec = run_emulator(self.dep, s, device=self.device)
        return recording_logits(rec, self.decoder)

    def context(self, spec: SourceSpec, settings: AttackSettings) -> AttackContext:
        source = make_source(spec.kind, self.target, surrogate=spec.surrogate, width=spec.width)
        return AttackContext(source=source, encoder=self.encoder, settings=settings,
                             oracle=self.oracle, spike_oracle=self.spike_oracle)

    def clean_spikes(self) -> torch.Tensor:
        return self.encoder.spikes(self.x, self.idx)

    def float_predictions(self) -> np.ndarray | None:
        """The float source graph's classes on the clean inputs, under the same decoder."""
        if self.target.network is None:
            return None
        rec = run_backend(self.target, "float", self.batches(self.x, "input"),
                          membrane=self.decoder.reads_membrane)
        return recording_predictions(rec, self.decoder)


def run_attack(ev: Evaluator, ctx: AttackContext, name: str, eps: float,
               points: torch.Tensor) -> tuple[torch.Tensor, np.ndarray, int]:
    """Attack the given sample indices; returns the full adversarial input set (clean elsewhere),
    the source's predictions on the attacked points, and the queries used."""
    attack = ATTACKS[name]
    before = ctx.queries_used
    if attack.domain == "spikes":
        if not ev.encoder.binary:
            raise UserError(f"{name} changes spike trains: it needs a spike encoding, and"
                            f" this Deployment uses {ev.encoding!r}")
        full = ev.clean_spikes()
        if len(points):
            part = attack.run(ctx, full[:, points], ev.y[points], points, eps)
            full[:, points] = part
            with torch.no_grad():
                src = ctx.source.spike_logits(part).argmax(dim=1).numpy()
        else:
            src = np.zeros(0, dtype=np.int64)
    else:
        full = ev.x.clone()
        if len(points):
            part = attack.run(ctx, ev.x[points], ev.y[points], points, eps)
            full[points] = part
            with torch.no_grad():
                src = ctx.logits(part, points).argmax(dim=1).numpy()
        else:
            src = np.zeros(0, dtype=np.int64)
    return full, src, ctx.queries_used - before


def sweep(ev: Evaluator, *, attacks: list[str], eps: list[float], settings: AttackSettings,
          sources: list[SourceSpec], ensemble: bool = False,
          on_progress: Progress | None = None) -> Robustness:
    """Run every (source, attack, eps) and verify on the backend; see the module docstring."""
    _check_sweep(ev, attacks, eps)
    started = time.perf_counter()
    say = on_progress or (lambda _msg: None)
    y = ev.y.numpy()
    say(f"clean run on {ev.backend}")
    clean = ev.verify(ev.x)
    clean_ok = clean.predictions == y
    float_pred = ev.float_predictions()
    contexts = {spec.label: ev.context(spec, settings) for spec in sources}
    rows: list[AttackRow] = []
    alive_by_key: dict[tuple[str, str, str], np.ndarray] = {}  # (attack, source, domain) -> robust
    ens_alive = clean_ok.copy()
    examples: dict = {}
    for e in sorted(eps):
        ens_before = ens_alive.copy()
        for name in attacks:
            attack = ATTACKS[name]
            for label, ctx in contexts.items():
                if attack.uses != "gradient" and label != next(iter(contexts)):
                    continue  # query and noise attacks do not depend on the gradient source
                key = (name, label if attack.uses == "gradient" else "-", attack.domain)
                # in an ensemble every attack works on, and reports, the running worst case
                alive = ens_alive if ensemble else alive_by_key.setdefault(key, clean_ok.copy())
                targets = np.flatnonzero(ens_alive if ensemble else np.ones_like(clean_ok))
                t0 = time.perf_counter()
                say(f"{name} ({key[1]}) eps={e:g} on {len(targets)} samples")
                adv, src, queries = run_attack(ev, ctx, name, e, torch.as_tensor(targets))
                seconds = time.perf_counter() - t0
                say(f"verifying {name} eps={e:g} on {ev.backend}")
                ver = ev.verify(adv, attack.domain)
                ok = ver.predictions == y
                alive &= ok
                rows.append(_attack_row(name, key[1], settings=settings, eps=e, alive=alive, ok=ok,
                                        attacked=targets, src=src, y=y, ver=ver, adv=adv,
                                        seconds=seconds, queries=queries))
                flipped = np.flatnonzero(clean_ok & ~ok)
                if len(flipped) and "adversarial" not in examples and attack.domain == "input":
                    examples = _example(ev, int(flipped[0]), attack=name, eps=e, y=y, clean=clean,
                                        ver=ver, adv=adv)
        if ensemble:
            rows.append(_ensemble_row("+".join(contexts), settings=settings, eps=e,
                                      alive=ens_alive, before=ens_before))
    return Robustness(
        backend=ev.backend, n=len(y), steps=ev.steps, encoding=ev.encoding,
        clean_accuracy=float(clean_ok.mean()), clean=clean,
        float_agreement=None if float_pred is None else float((float_pred == clean.predictions).mean()),
        rows=rows, labels=y, settings=settings, sources={spec.label: spec for spec in sources},
        ensemble=ensemble,
        query_backend="emulator (bit-exact to lava-sim)" if ev.backend == "lava-sim" else ev.backend,
        examples=examples, wall_time_s=time.perf_counter() - started, decoder=ev.decoder.name)


def _check_sweep(ev: Evaluator, attacks: list[str], eps: list[float]) -> None:
    """Refuse unknown attacks, negative eps and spike attacks on a non-spike encoding."""
    unknown = [a for a in attacks if a not in ATTACKS]
    if unknown:
        raise UserError(f"unknown attack {unknown[0]!r}: choose from {', '.join(attack_names())}")
    if any(e < 0 for e in eps):
        raise UserError(f"--eps must be >= 0, got {min(eps)}")
    spiky = [a for a in attacks if ATTACKS[a].domain == "spikes"]
    if spiky and not ev.encoder.binary:
        raise UserError(f"{spiky[0]} changes spike trains: it needs a spike encoding, and"
                        f" this Deployment uses {ev.encoding!r}")


def _attack_row(name: str, source: str, *, settings: AttackSettings, eps: float,
                alive: np.ndarray, ok: np.ndarray, attacked: np.ndarray, src: np.ndarray,
                y: np.ndarray, ver: Verified, adv: torch.Tensor, seconds: float,
                queries: int) -> AttackRow:
    """One attack at one eps: ``alive`` the running worst case (this attack's ``ok`` included),
    ``attacked`` the points it attacked and ``src`` the source's predictions on them."""
    attack = ATTACKS[name]
    return AttackRow(
        attack=name, source=source, norm=settings.norm if attack.domain == "input"
        else "spikes", eps=eps, robust_accuracy=float(alive.mean()),
        attack_accuracy=float(ok[attacked].mean()) if len(attacked) else float("nan"),
        source_accuracy=float((src == y[attacked]).mean()) if len(attacked) else float("nan"),
        agreement=float((src == ver.predictions[attacked]).mean()) if len(attacked) else None,
        attacked=len(attacked), spikes_per_sample=ver.activity.spikes_per_sample,
        synops_per_sample=ver.activity.synops_per_sample,
        energy_per_sample_nj=None if ver.energy is None else ver.energy.per_sample_nj,
        seconds=seconds, layers=layer_activity(ver), queries=queries,
        eps_unit=attack.eps_unit, correct=ok,
        inputs=adv, domain=attack.domain)


def _ensemble_row(source: str, *, settings: AttackSettings, eps: float, alive: np.ndarray,
                  before: np.ndarray) -> AttackRow:
    """The ensemble's worst case at one eps; ``before``: the points still correct before it."""
    return AttackRow(
        attack="ensemble", source=source, norm=settings.norm, eps=eps,
        robust_accuracy=float(alive.mean()),
        attack_accuracy=float(alive[before].mean()) if before.any() else float("nan"),
        source_accuracy=float("nan"), agreement=None, attacked=int(before.sum()),
        spikes_per_sample=float("nan"), synops_per_sample=float("nan"),
        energy_per_sample_nj=None, seconds=0.0)


def _example(ev: Evaluator, i: int, *, attack: str, eps: float, y: np.ndarray, clean: Verified,
             ver: Verified, adv: torch.Tensor) -> dict:
    """Sample i's clean and adversarial recordings and inputs, for the plots."""
    one = ev.idx[i:i + 1]
    return {"sample": i, "attack": attack, "eps": eps, "label": int(y[i]),
            "clean": _one(clean.recording, i), "adversarial": _one(ver.recording, i),
            "clean_input": ev.encoder.spikes(ev.x[one], one)[:, 0].numpy(),
            "adversarial_input": ev.encoder.spikes(adv[one], one)[:, 0].numpy()}


def layer_activity(ver: Verified) -> list[dict]:
    """Per layer and sample: spikes sent, synaptic operations received, energy (nJ or None)."""
    a = ver.activity
    energy = ver.energy.layers_nj if ver.energy is not None else [None] * len(a.layer_spikes_per_sample)
    return [{"name": name, "spikes_per_sample": spikes, "synops_per_sample": synops, "energy_nj": nj}
            for name, spikes, synops, nj in zip(ver.recording.layer_names, a.layer_spikes_per_sample,
                                                a.layer_synops_per_sample, energy)]


def _one(rec: Recording, i: int) -> dict:
    """Sample i's output-layer spikes (T, C) and per-layer spike counts."""
    return {"output": rec.output[:, i].copy(),
            "layer_spikes": [int(c[i].sum()) for c in rec.counts],
            "layer_names": list(rec.layer_names)}
