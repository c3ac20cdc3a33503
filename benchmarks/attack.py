"""Cost of hardware-in-the-loop attacks on the digits Deployment; prints JSON.

    python benchmarks/attack.py [--deployment M.deploy.h5] [--eps 0.1]

``pgd_seconds``: PGD-20 (L-inf, one random start) over the whole digits test split at T = 32,
gradients through the differentiable twin, then every adversarial input verified on the emulator.
``lava_sim_verify_seconds``: verifying that same adversarial set on lava-sim (one Lava run).
``step_cost_vs_float``: one PGD step (forward and input gradient, all test samples at once)
through the twin over one through a plain Norse LIF model of the same sizes, medians of 9 timed
alternately after a warm-up. Without --deployment the default model is trained, exported and deployed first (not timed).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from snn_deploy.attack.base import AttackSettings  # noqa: E402
from snn_deploy.attack.losses import cross_entropy  # noqa: E402
from snn_deploy.data import load_dataset  # noqa: E402
from snn_deploy.evaluate.robustness import Evaluator, SourceSpec, run_attack  # noqa: E402
from snn_deploy.targets import load_target  # noqa: E402
from snn_deploy.train.model import LIFNetwork, ModelConfig  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from lava_sim import prepare  # noqa: E402

TARGETS = {"pgd_seconds": 60.0, "lava_sim_verify_seconds": 180.0, "step_cost_vs_float": 2.0}


def interleaved_medians(a, b, repeats: int = 9) -> tuple[float, float]:
    """Median seconds of a() and of b(), timed alternately so that load drift hits both alike."""
    a(), b()
    ta, tb = [], []
    for _ in range(repeats):
        for fn, times in ((a, ta), (b, tb)):
            started = time.perf_counter()
            fn()
            times.append(time.perf_counter() - started)
    return statistics.median(ta), statistics.median(tb)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deployment", type=Path, default=None)
    parser.add_argument("--eps", type=float, default=0.1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.deployment or prepare(Path(tmp))
        target = load_target(path)
        ev = Evaluator(target, load_dataset("digits"), backend="emulator", limit=None, seed=0)
        settings = AttackSettings(norm="linf", iterations=20, restarts=1, seed=0)
        ctx = ev.context(SourceSpec(), settings)
        y = ev.y.numpy()
        clean = ev.verify(ev.x)
        started = time.perf_counter()
        adv, _, _ = run_attack(ev, ctx, "pgd", args.eps, ev.idx)
        on_emulator = ev.verify(adv)
        pgd_seconds = time.perf_counter() - started
        started = time.perf_counter()
        on_lava = ev.verify(adv, backend="lava-sim")
        lava_seconds = time.perf_counter() - started

        x, idx = ev.x, ev.idx
        dep = target.require_deployment()
        norse = LIFNetwork(ModelConfig(input_size=dep.input_size,
                                       hidden=tuple(layer.size for layer in dep.layers[:-1]),
                                       output_size=dep.layers[-1].size)).requires_grad_(False)

        def float_step() -> None:
            xg = x.clone().requires_grad_(True)
            logits = norse(ev.encoder.differentiable(xg, idx)).sum(dim=0)
            torch.autograd.grad(F.cross_entropy(logits, ev.y), xg)

        twin_step, float_step_s = interleaved_medians(
            lambda: ctx.gradient(x, ev.y, idx, cross_entropy), float_step)
        out = {
            "benchmark": "attack",
            "n": int(len(y)), "steps": ev.steps, "eps": args.eps, "attack": "pgd-20 linf",
            "clean_accuracy": float((clean.predictions == y).mean()),
            "robust_accuracy_emulator": float(((on_emulator.predictions == y) &
                                               (clean.predictions == y)).mean()),
            "robust_accuracy_lava_sim": float(((on_lava.predictions == y) &
                                               (clean.predictions == y)).mean()),
            "emulator_equals_lava_sim": bool((on_emulator.predictions == on_lava.predictions).all()),
            "pgd_seconds": round(pgd_seconds, 2),
            "lava_sim_verify_seconds": round(lava_seconds, 2),
            "twin_step_seconds": round(twin_step, 4),
            "float_step_seconds": round(float_step_s, 4),
            "step_cost_vs_float": round(twin_step / float_step_s, 2),
            "targets": TARGETS,
        }
        out["meets_targets"] = {
            "pgd_seconds": out["pgd_seconds"] <= TARGETS["pgd_seconds"],
            "lava_sim_verify_seconds": out["lava_sim_verify_seconds"] <= TARGETS["lava_sim_verify_seconds"],
            "step_cost_vs_float": out["step_cost_vs_float"] <= TARGETS["step_cost_vs_float"],
        }
        out["torch_threads"] = torch.get_num_threads()
        print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
