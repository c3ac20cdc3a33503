"""Throughput of the float, emulator and lava-sim backends on the digits Deployment; prints JSON.

    python benchmarks/backends.py [--deployment M.deploy.h5] [--samples 10000]

Backend figures time the backend alone on input encoded beforehand (rate coding, T = 32, the
digits test split tiled to ``--samples``): float and emulator in batches of 512, median of 3 after
a warm-up; lava-sim on the 360-sample test split in one Lava run. ``evaluate_*`` figures time the
whole `evaluate` (encoding included). Peak memory of an emulator evaluation of ``--samples``
samples is measured in a child process (ru_maxrss, which includes torch itself). Without
--deployment, the default model is trained, exported and deployed first (not timed).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable

warnings.filterwarnings("ignore")

import torch  # noqa: E402
from snn_deploy.data import Split, load_dataset  # noqa: E402
from snn_deploy.evaluate.accuracy import BATCH, encoded_batches, evaluate_target  # noqa: E402
from snn_deploy.run.emulator import Emulator  # noqa: E402
from snn_deploy.run.float_backend import run_float  # noqa: E402
from snn_deploy.run.lava_sim import run_lava_sim  # noqa: E402
from snn_deploy.targets import load_target  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from lava_sim import prepare  # noqa: E402

TARGETS = {"emulator_over_lava_sim": 1000.0, "emulator_time_over_float": 3.0, "peak_memory_gb": 2.0}


def tiled(split: Split, n: int) -> Split:
    reps = -(-n // len(split.x_test))
    return dataclasses.replace(split, x_test=split.x_test.repeat(reps, 1)[:n],
                               y_test=split.y_test.repeat(reps)[:n])


def median_rate(run: Callable[[], int], repeats: int) -> float:
    """Samples per second of ``run`` (which returns how many samples it ran), median."""
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        n = run()
        rates.append(n / (time.perf_counter() - started))
    return statistics.median(rates)


def child_memory(path: Path, samples: int) -> None:
    target = load_target(path)
    ev = evaluate_target(target, tiled(load_dataset("digits"), samples), backend="emulator", seed=0)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"n": ev.n, "peak_memory_gb": peak_kb / 1e6}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deployment", type=Path, default=None)
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--child-memory", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_memory:
        child_memory(args.deployment, args.samples)
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = args.deployment or prepare(Path(tmp))
        target = load_target(path)
        dep, net = target.require_deployment(), target.require_network()
        steps = int(target.coding.get("steps", 32))
        split = load_dataset("digits")
        big = tiled(split, args.samples)
        batches = list(encoded_batches(big.x_test, encoding="rate", steps=steps, seed=0))
        small = torch.cat(list(encoded_batches(split.x_test, encoding="rate", steps=steps, seed=0)),
                          dim=1)

        def emulate() -> int:
            emulator = Emulator(dep)
            for xb in batches:
                emulator.run(xb)
            return args.samples

        def float_run() -> int:
            for xb in batches:
                run_float(net, xb)
            return args.samples

        emulate()  # warm-up: first-touch memory, thread pools
        emu = median_rate(emulate, 3)
        flt = median_rate(float_run, 3)
        lava = median_rate(lambda: run_lava_sim(dep, small.numpy()).batch, 1)
        evaluate = {backend: median_rate(
            lambda b=backend: evaluate_target(target, big, backend=b, seed=0).n, 3)
            for backend in ("float", "emulator")}
        mem = subprocess.run([sys.executable, __file__, "--child-memory", "--deployment", str(path),
                              "--samples", str(args.samples)], capture_output=True, text=True,
                             check=True)
        peak = json.loads(mem.stdout.strip().splitlines()[-1])["peak_memory_gb"]
    out = {
        "benchmark": "backends",
        "steps": steps, "batch": BATCH,
        "layers": "-".join(str(s) for s in [dep.input_size, *(layer.size for layer in dep.layers)]),
        "emulator_samples_per_s": round(emu, 1),
        "float_samples_per_s": round(flt, 1),
        "lava_sim_samples_per_s": round(lava, 2),
        "emulator_over_lava_sim": round(emu / lava, 1),
        "emulator_time_over_float": round(flt / emu, 2),
        "evaluate_emulator_samples_per_s": round(evaluate["emulator"], 1),
        "evaluate_float_samples_per_s": round(evaluate["float"], 1),
        "emulator_peak_memory_gb": round(peak, 3),
        "samples_streamed": args.samples,
        "targets": TARGETS,
        "meets_targets": {
            "emulator_over_lava_sim": emu / lava >= TARGETS["emulator_over_lava_sim"],
            "emulator_time_over_float": flt / emu <= TARGETS["emulator_time_over_float"],
            "peak_memory_gb": peak < TARGETS["peak_memory_gb"],
        },
        "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
