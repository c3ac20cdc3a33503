"""Peer NIR graphs (../shared/peer, docs/nir-import.md): deploy each to loihi2 and compare backends.

For each graph: deploy (scales from the weights alone), then run the same fixed-seed Bernoulli
spike input (T steps, B samples) on float (the NIR graph), emulator and lava-sim, and print
emulator == lava-sim (every layer, every step) and float vs deployed agreement of the output:
Pearson correlation of the output spike counts over (sample, neuron), argmax agreement of the
counts, and the share of (step, sample, neuron) output entries that agree.

    python benchmarks/peer_graphs.py [--peer ../shared/peer] [--steps 300] [--batch 4]
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from snn_deploy import api
from snn_deploy.evaluate.accuracy import run_backend
from snn_deploy.quantize.deployment import save_deployment
from snn_deploy.targets import load_target

# file, --dt, --source-reset, input spike probability
GRAPHS = {
    "lif_norse.nir": (1e-4, "zero", 0.3),
    "braille_noDelay_bias_zero.nir": (1e-4, "zero", 0.1),
    "braille_noDelay_noBias_subtract.nir": (1e-4, "subtract", 0.1),
    "cnn_sinabs.nir": (None, "zero", 0.1),
}


def agreement(a: np.ndarray, b: np.ndarray) -> dict:
    """Float-vs-deployed figures for (T, B, n) output spikes."""
    ca, cb = a.sum(axis=0).astype(float), b.sum(axis=0).astype(float)
    corr = float(np.corrcoef(ca.ravel(), cb.ravel())[0, 1]) if ca.std() > 0 and cb.std() > 0 \
        else float("nan")
    return {"count_corr": corr, "argmax_agree": float(np.mean(ca.argmax(1) == cb.argmax(1))),
            "step_agree": float(np.mean(a == b)), "float_spikes": int(ca.sum()),
            "deployed_spikes": int(cb.sum())}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--peer", default=str(Path(__file__).resolve().parents[2] / "shared/peer"))
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="peer_out")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(exist_ok=True)
    for name, (dt, reset, rate) in GRAPHS.items():
        path = Path(args.peer) / name
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = api.deploy(path, profile="loihi2", dt=dt, source_reset=reset, seed=args.seed)
        dep_path = out / (path.stem + ".deploy.h5")
        save_deployment(result.deployment, dep_path)
        target = load_target(dep_path)
        gen = torch.Generator().manual_seed(args.seed)
        x = (torch.rand((args.steps, args.batch, target.input_size), generator=gen) < rate).float()
        recs, times = {}, {}
        for backend in ("float", "emulator", "lava-sim"):
            start = time.perf_counter()
            recs[backend] = run_backend(target, backend, [x])
            times[backend] = time.perf_counter() - start
        emu, lava = recs["emulator"], recs["lava-sim"]
        exact = np.array_equal(emu.output, lava.output) and all(
            np.array_equal(a, b) for a, b in zip(emu.counts, lava.counts))
        figures = agreement(recs["float"].output, emu.output)
        print(f"{name}: layers {[len(c[0]) for c in emu.counts]}, rate {rate}, T {args.steps},"
              f" B {args.batch}, seed {args.seed}")
        print(f"  warnings: {len(result.warnings)}; notes: {len(result.notes)}")
        print(f"  emulator == lava-sim (all layers, spike for spike): {exact}")
        print(f"  per-layer spikes float / emulator: "
              + ", ".join(f"{int(f.sum())}/{int(e.sum())}"
                          for f, e in zip(recs["float"].counts, emu.counts)))
        print("  float vs deployed output: " + ", ".join(
            f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in figures.items()))
        print("  seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in times.items()), flush=True)


if __name__ == "__main__":
    main()
