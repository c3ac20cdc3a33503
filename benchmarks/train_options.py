"""Every training option of issue 6 through the CLI, end to end, on emulator and lava-sim; prints JSON.

For each configuration: `snn-deploy train` (a short run: 32 hidden LIF neurons, T = 16, 6
epochs; the point is the pipeline, not the accuracy), `export`, `deploy --profile loihi2
--dataset digits`, then `evaluate --backend emulator` and `evaluate --backend lava-sim` on the
first ``--limit`` test samples, and an `attack` (PGD-5 at eps 0.1) verified on each of the two
backends. Reported per configuration: accuracies, whether the two evaluate reports have
identical accuracy and per-layer spike counts, whether the two attack reports have identical
robust accuracy and spike counts, and the wall time.

    python benchmarks/train_options.py [--limit 60] [--only NAME,...] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BASE = ["--hidden", "32", "--steps", "16", "--epochs", "6", "--lr", "5e-3", "--seed", "0"]
CONFIGS: dict[str, list[str]] = {
    "rate": ["--encoding", "rate"],
    "direct": ["--encoding", "direct"],
    "latency": ["--encoding", "latency"],
    "burst-first": ["--encoding", "burst-first"],
    "burst-last": ["--encoding", "burst-last"],
    "fusion": ["--encoding", "fusion"],
    "decolle": ["--rule", "decolle"],
    "eprop": ["--rule", "eprop"],
    "recurrent": ["--recurrent"],
    "recurrent-eprop-latency": ["--recurrent", "--rule", "eprop", "--encoding", "latency"],
    "first-spike": ["--loss", "first_spike", "--decoder-beta", "0.5"],
    "max-membrane": ["--loss", "max_membrane", "--decoder-beta", "4"],
    "max-membrane-fusion": ["--loss", "max_membrane", "--encoding", "fusion"],
    "init-default": ["--init", "default"],
    "noise": ["--noise-sigma", "0.1"],
    "perturbation": ["--noise-sigma", "0.1", "--perturbation-weight", "1"],
    "adversarial-fgsm": ["--adversarial", "fgsm", "--eps", "0.1"],
    "adversarial-pgd": ["--adversarial", "pgd", "--eps", "0.1", "--attack-steps", "3"],
}


def cli(*args: object) -> None:
    proc = subprocess.run([sys.executable, "-m", "snn_deploy.cli", *map(str, args)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"snn-deploy {' '.join(map(str, args))}: {proc.stderr.strip()[-400:]}")


def layer_spikes(report: dict) -> list[float]:
    return [layer["spikes_per_sample"] for layer in report["layers"]]


def attack_rows(report: dict) -> list[tuple]:
    return [(r["eps"], r["robust_accuracy"], r["spikes_per_sample"]) for r in report["results"]]


def one(name: str, options: list[str], folder: Path, limit: int) -> dict:
    started = time.perf_counter()
    ckpt, graph, dep = folder / f"{name}.pt", folder / f"{name}.nir", folder / f"{name}.deploy.h5"
    cli("train", *BASE, *options, "--out", ckpt)
    cli("export", ckpt, "--out", graph)
    cli("deploy", graph, "--profile", "loihi2", "--dataset", "digits", "--out", dep)
    reports, attacks = {}, {}
    for backend in ("emulator", "lava-sim"):
        out = folder / f"{name}.{backend}.json"
        cli("evaluate", dep, "--backend", backend, "--limit", limit, "--json", out)
        reports[backend] = json.loads(out.read_text())
        out = folder / f"{name}.{backend}.attack.json"
        cli("attack", dep, "--backend", backend, "--attack", "pgd", "--eps", "0,0.1",
            "--iterations", 5, "--limit", limit, "--no-checks", "--json", out)
        attacks[backend] = json.loads(out.read_text())
    emu, lava = reports["emulator"], reports["lava-sim"]
    return {
        "options": " ".join(options),
        "emulator_accuracy": emu["accuracy"],
        "lava_sim_accuracy": lava["accuracy"],
        "evaluate_identical": emu["accuracy"] == lava["accuracy"]
        and layer_spikes(emu) == layer_spikes(lava),
        "robust_accuracy_eps0.1": attack_rows(attacks["emulator"])[-1][1],
        "attack_identical": attack_rows(attacks["emulator"]) == attack_rows(attacks["lava-sim"]),
        "wall_s": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=60)
    parser.add_argument("--only", default=None, help="Comma-separated configuration names.")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(CONFIGS)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            try:
                results[name] = one(name, CONFIGS[name], Path(tmp), args.limit)
            except RuntimeError as exc:
                results[name] = {"options": " ".join(CONFIGS[name]), "error": str(exc)}
            print(f"{name}: {results[name]}", file=sys.stderr, flush=True)
    ok = [r.get("evaluate_identical") and r.get("attack_identical") for r in results.values()]
    summary = {"benchmark": "train_options", "limit": args.limit, "configs": results,
               "all_identical": all(ok), "identical": sum(bool(o) for o in ok), "total": len(ok)}
    text = json.dumps(summary, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
