"""Peer NIR graphs (../shared/peer, docs/nir-import.md): deploy each to loihi2 and compare backends.

For each graph: deploy (scales from the weights and thresholds alone), then run fixed-seed
Bernoulli spike input (T steps, B samples per seed) on float (the NIR graph), the emulator and
lava-sim, and report

* emulator == lava-sim: every layer's spikes, every step of every sample (rasters from
  ``run.emulator.run_layers`` and from the Lava run's spike recorders), and the two Recordings;
* float vs deployed (emulator) agreement: per layer the Pearson correlation of the spike counts
  over (sample, neuron); for the output layer also the share of samples with the same argmax
  count, the coincidence of the spike trains 2 |F and D| / (|F| + |D|) over (step, sample,
  neuron) and the share of equal (step, sample, neuron) entries;
* the deploy warnings and notes, and for a source reset other than zero what it changes;
* wall times per stage and the peak resident memory of this process and of Lava's workers.

    python benchmarks/peer_graphs.py [--peer ../shared/peer] [--steps 300] [--batch 4]
        [--seeds 0,1,2] [--graphs lif_norse.nir,...] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from snn_deploy import api
from snn_deploy.convert.nirfile import read_nir
from snn_deploy.convert.nirgraph import graph_to_network
from snn_deploy.quantize.fidelity import count_correlation as corr
from snn_deploy.run.emulator import run_emulator, run_layers
from snn_deploy.run.float_backend import run_float
from snn_deploy.run.lava_sim import build_graph, execute, input_to_lava, to_recording

# file -> (--dt, --source-reset, input spike probability); the snnTorch and Norse graphs carry no
# dt but were made for dt = 1e-4 s (../shared/peer/README.md), the Sinabs CNN needs none (IF only).
GRAPHS = {
    "lif_norse.nir": (1e-4, "zero", 0.3),
    "braille_noDelay_bias_zero.nir": (1e-4, "zero", 0.1),
    "braille_noDelay_noBias_subtract.nir": (1e-4, "subtract", 0.1),
    "cnn_sinabs.nir": (None, "sinabs", 0.1),
}
DEFAULT_PEER = Path(__file__).resolve().parents[2] / "shared" / "peer"


def agreement(float_rec, deployed_rec) -> dict:
    """Float-vs-deployed figures for two Recordings of the same input."""
    f, d = float_rec.output.astype(np.int64), deployed_rec.output.astype(np.int64)
    both = int(np.minimum(f, d).sum())
    total = int(f.sum() + d.sum())
    cf, cd = float_rec.counts[-1], deployed_rec.counts[-1]
    return {
        "layer_count_corr": [corr(a, b) for a, b in zip(float_rec.counts, deployed_rec.counts)],
        "layer_spikes_float": [int(c.sum()) for c in float_rec.counts],
        "layer_spikes_deployed": [int(c.sum()) for c in deployed_rec.counts],
        "output_count_corr": corr(cf, cd),
        "argmax_agree": float(np.mean(cf.argmax(axis=1) == cd.argmax(axis=1))),
        "coincidence": 2 * both / total if total else 1.0,
        "step_agree": float(np.mean(f == d)),
    }


def lava_rasters(dep, x: np.ndarray) -> tuple[list[np.ndarray], object]:
    """Each layer's (T, B, n) spikes from one Lava run, and that run's Recording."""
    steps, batch = x.shape[0], x.shape[1]
    with tempfile.TemporaryDirectory(prefix="peer-lava-") as tmp:
        recorded = execute(build_graph(dep, input_to_lava(dep, x), steps=steps,
                                       record_dir=Path(tmp)))
    rasters = [r[depth:depth + batch * steps].reshape(batch, steps, -1).transpose(1, 0, 2)
               for depth, r in enumerate(recorded, start=1)]
    return rasters, to_recording(dep, recorded, steps=steps, batch=batch)


def exact(dep, x: torch.Tensor) -> tuple[bool, list[int], object, float, float]:
    """(emulator == lava-sim on every layer, mismatches per layer, the emulator Recording,
    emulator seconds, lava-sim seconds)."""
    start = time.perf_counter()
    traces = run_layers(dep, x)
    emu_rec = run_emulator(dep, x)
    t_emu = time.perf_counter() - start
    start = time.perf_counter()
    rasters, lava_rec = lava_rasters(dep, x.numpy())
    t_lava = time.perf_counter() - start
    bad = [int((t.spikes.numpy().astype(np.uint8) != r).sum()) for t, r in zip(traces, rasters)]
    same = not any(bad) and np.array_equal(emu_rec.output, lava_rec.output) and all(
        np.array_equal(a, b) for a, b in zip(emu_rec.counts, lava_rec.counts))
    return same, bad, emu_rec, t_emu, t_lava


def peak_mb() -> tuple[float, float]:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return own, children


def bench(path: Path, *, dt, reset: str, rate: float, steps: int, batch: int,
          seeds: list[int]) -> dict:
    start = time.perf_counter()
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        result = api.deploy(path, profile="loihi2", dt=dt, source_reset=reset, seed=seeds[0])
    t_deploy = time.perf_counter() - start
    dep = result.deployment
    net = graph_to_network(read_nir(path), dt=dt)
    graph = read_nir(path)
    row = {"graph": path.name, "dt": dt, "source_reset": reset, "rate": rate, "steps": steps,
           "batch": batch, "seeds": seeds,
           "node_types": sorted({type(n).__name__ for n in graph.nodes.values()}),
           "layers": [layer.size for layer in dep.layers],
           "weights": int(sum(layer.weights.size for layer in dep.layers)),
           "warnings": list(result.warnings), "notes": list(result.notes),
           "deploy_s": t_deploy, "runs": []}
    for seed in seeds:
        gen = torch.Generator().manual_seed(seed)
        x = (torch.rand((steps, batch, dep.input_size), generator=gen) < rate).float()
        start = time.perf_counter()
        flt = run_float(net, x).recording
        t_float = time.perf_counter() - start
        same, bad, emu, t_emu, t_lava = exact(dep, x)
        row["runs"].append({"seed": seed, "emulator_equals_lava": same, "mismatches": bad,
                            "float_s": t_float, "emulator_s": t_emu, "lava_s": t_lava,
                            **agreement(flt, emu)})
    row["peak_mb_self"], row["peak_mb_lava_workers"] = peak_mb()
    return row


def summary(row: dict) -> str:
    runs = row["runs"]
    lo = lambda key: min(r[key] for r in runs)  # noqa: E731
    lines = [
        f"{row['graph']}: {'-'.join(map(str, row['layers']))} neurons, {row['weights']} weights,"
        f" node types {', '.join(row['node_types'])}",
        f"  input: Bernoulli p = {row['rate']}, T = {row['steps']}, B = {row['batch']},"
        f" seeds {row['seeds']}; dt {row['dt']}, --source-reset {row['source_reset']}",
        *(f"  note: {n}" for n in row["notes"]),
        *(f"  warning: {w}" for w in row["warnings"]),
        "  emulator == lava-sim (every layer, every step): "
        + ", ".join(f"seed {r['seed']} {r['emulator_equals_lava']} {r['mismatches']}" for r in runs),
        "  float vs deployed, worst over seeds: output count corr"
        f" {lo('output_count_corr'):.4f}, argmax agree {lo('argmax_agree'):.3f}, coincidence"
        f" {lo('coincidence'):.4f}, step agree {lo('step_agree'):.4f}; per-layer count corr "
        + ", ".join(f"{min(r['layer_count_corr'][k] for r in runs):.4f}"
                    for k in range(len(row["layers"]))),
        "  spikes float/deployed (seed {}): ".format(runs[0]["seed"]) + ", ".join(
            f"{a}/{b}" for a, b in zip(runs[0]["layer_spikes_float"],
                                       runs[0]["layer_spikes_deployed"])),
        f"  seconds: deploy {row['deploy_s']:.1f}; per seed float"
        f" {np.median([r['float_s'] for r in runs]):.1f}, emulator"
        f" {np.median([r['emulator_s'] for r in runs]):.1f}, lava-sim"
        f" {np.median([r['lava_s'] for r in runs]):.1f} (median); peak memory"
        f" {row['peak_mb_self']:.0f} MB (this process, so far), {row['peak_mb_lava_workers']:.0f}"
        " MB (largest Lava worker, so far)",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer", default=str(DEFAULT_PEER))
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--graphs", default=",".join(GRAPHS))
    parser.add_argument("--json", default=None, help="also write the figures as JSON")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    for name in args.graphs.split(","):
        dt, reset, rate = GRAPHS[name]
        row = bench(Path(args.peer) / name, dt=dt, reset=reset, rate=rate, steps=args.steps,
                    batch=args.batch, seeds=seeds)
        print(summary(row), flush=True)
        rows.append(row)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
