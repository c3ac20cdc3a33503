"""Before/after table of threshold re-tuning (issue 5): float SNN, no re-tuning, rate, grad, robust.

    python benchmarks/retune.py [--nir M.nir] [--eps 0,0.05,0.1,0.2] [--out-dir DIR]

Without --nir, a 64-128-10 ReLU ANN is trained on digits (seed 0) and converted (max norm, T = 32,
direct coding) first. Every Deployment is made by ``api.deploy(..., dataset="digits",
retune_mode=M)`` and measured on the whole digits test split: clean accuracy on the emulator and on
lava-sim (they must agree), PGD-20 (L-inf, twin gradients) robust accuracy per eps verified on
lava-sim, spikes and energy per sample (loihi2 profile: a proxy). Prints JSON, then a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")

from snn_deploy import api  # noqa: E402
from snn_deploy.attack.base import AttackSettings  # noqa: E402
from snn_deploy.convert import ann_api  # noqa: E402
from snn_deploy.data import load_dataset  # noqa: E402
from snn_deploy.evaluate.accuracy import evaluate_target  # noqa: E402
from snn_deploy.evaluate.energy import price  # noqa: E402
from snn_deploy.evaluate.robustness import Evaluator, SourceSpec, sweep  # noqa: E402
from snn_deploy.quantize.deployment import save_deployment  # noqa: E402
from snn_deploy.targets import load_target  # noqa: E402

MODES = ("none", "rate", "grad", "robust")


def converted_model(folder: Path) -> Path:
    result = ann_api.train_ann(dataset="digits", epochs=20, lr=2e-3, seed=0)
    ann_api.save_ann(result, folder / "ann.pt", seed=0)
    ann_api.convert(folder / "ann.pt", out=folder / "snn.nir", steps=32, norm="max")
    return folder / "snn.nir"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nir", type=Path, default=None)
    parser.add_argument("--eps", default="0,0.05,0.1,0.2")
    parser.add_argument("--out-dir", type=Path, default=None)
    args = parser.parse_args()
    eps = [float(e) for e in args.eps.split(",")]
    split = load_dataset("digits")
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.out_dir or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        nir_path = args.nir or converted_model(folder)
        rows = []
        ev = evaluate_target(load_target(nir_path), split, backend="float")
        rows.append({"model": "float SNN", "clean_emulator": None, "clean_lava_sim": None,
                     "clean_float": ev.accuracy, "spikes_per_sample": ev.activity.spikes_per_sample})
        for mode in MODES:
            started = time.perf_counter()
            result = api.deploy(nir_path, profile="loihi2", dataset="digits", retune_mode=mode)
            deploy_s = time.perf_counter() - started
            path = folder / f"{mode}.deploy.h5"
            save_deployment(result.deployment, path)
            target = load_target(path)
            emu = evaluate_target(target, split, backend="emulator")
            lava = evaluate_target(target, split, backend="lava-sim")
            evaluator = Evaluator(target, split, backend="lava-sim", limit=None, seed=0)
            robust = sweep(evaluator, attacks=["pgd"], eps=eps, settings=AttackSettings(),
                           sources=[SourceSpec()])
            energy = price(emu.activity, result.deployment.profile)
            rows.append({
                "model": f"deployed, retune {mode}", "clean_float": None,
                "clean_emulator": emu.accuracy, "clean_lava_sim": lava.accuracy,
                "emulator_equals_lava_sim": bool((emu.predictions == lava.predictions).all()),
                "pgd_robust_accuracy_lava_sim": {str(r.eps): r.robust_accuracy for r in robust.rows},
                "spikes_per_sample": emu.activity.spikes_per_sample,
                "energy_per_sample_nj": None if energy is None else energy.per_sample_nj,
                "energy_basis": None if energy is None else energy.basis,
                "deploy_seconds": round(deploy_s, 1),
            })
        print(json.dumps({"benchmark": "retune", "nir": str(nir_path), "eps": eps, "rows": rows},
                         indent=2))
        head = "| model | clean (float / emulator / lava-sim) | " + " | ".join(
            f"PGD eps {e:g} (lava-sim)" for e in eps) + " | spikes/sample | energy nJ (proxy) |"
        print("\n" + head + "\n|" + " --- |" * (head.count("|") - 1))
        for r in rows:
            clean = f"{r['clean_float']:.4f}" if r["clean_float"] is not None else \
                f"{r['clean_emulator']:.4f} / {r['clean_lava_sim']:.4f}"
            pgd = r.get("pgd_robust_accuracy_lava_sim", {})
            cells = [f"{pgd[str(e)]:.4f}" if str(e) in pgd else "-" for e in eps]
            nj = r.get("energy_per_sample_nj")
            print(f"| {r['model']} | {clean} | " + " | ".join(cells) +
                  f" | {r['spikes_per_sample']:.1f} | {'-' if nj is None else f'{nj:.0f}'} |")


if __name__ == "__main__":
    main()
