"""Wall time of evaluating the whole digits test split on the lava-sim backend; prints JSON.

    python benchmarks/lava_sim.py [--deployment M.deploy.h5] [--per-sample-probe 5]

Without --deployment it trains, exports and deploys the default model (as `make demo` does) in a
temporary folder first; that preparation is not part of the timed figure. With
--per-sample-probe K it also times K samples run with one Lava runtime each (the naive approach),
and reports that figure extrapolated to the split, labelled as such.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")

from snn_deploy import api  # noqa: E402
from snn_deploy.data import load_dataset  # noqa: E402
from snn_deploy.evaluate.accuracy import evaluate_target  # noqa: E402
from snn_deploy.quantize.deployment import save_deployment  # noqa: E402
from snn_deploy.targets import load_target  # noqa: E402
from snn_deploy.train.model import save_checkpoint  # noqa: E402

TARGET_S = 90.0  # issue 2: whole test split on lava-sim within 90 s on a 2-core machine


def prepare(folder: Path) -> Path:
    result = api.train(dataset="digits", hidden=(128,), encoding="rate", steps=32, epochs=30,
                       seed=0, lr=2e-3, batch_size=64)
    save_checkpoint(result.model, folder / "m.pt")
    api.export(folder / "m.pt", folder / "m.nir")
    dep = api.deploy(folder / "m.nir", profile="loihi2", dataset="digits").deployment
    save_deployment(dep, folder / "m.deploy.h5")
    return folder / "m.deploy.h5"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deployment", type=Path, default=None)
    parser.add_argument("--per-sample-probe", type=int, default=0)
    args = parser.parse_args()
    split = load_dataset("digits")
    with tempfile.TemporaryDirectory() as tmp:
        path = args.deployment or prepare(Path(tmp))
        target = load_target(path)
        started = time.perf_counter()
        ev = evaluate_target(target, split, backend="lava-sim", seed=0)
        wall = time.perf_counter() - started
        out = {
            "benchmark": "lava_sim_whole_test_split",
            "n": ev.n, "steps": ev.steps,
            "layers": "-".join(str(s) for s in [target.deployment.input_size, *ev.layer_sizes]),
            "wall_time_s": round(wall, 2),
            "samples_per_s": round(ev.n / wall, 2),
            "steps_per_s": round(ev.n * ev.steps / wall, 1),
            "accuracy": ev.accuracy,
            "target_s": TARGET_S, "meets_target": wall <= TARGET_S,
            "cpus": os.cpu_count(), "python": platform.python_version(),
        }
        if args.per_sample_probe > 0:
            k = args.per_sample_probe
            started = time.perf_counter()
            for i in range(k):
                evaluate_target(target, split, backend="lava-sim", seed=0, limit=1)
                del i
            probe = time.perf_counter() - started
            out["runtime_per_sample_probe"] = {
                "samples": k, "wall_time_s": round(probe, 2),
                "extrapolated_split_s": round(probe / k * ev.n, 1),
                "note": "one Lava runtime per sample, first sample only each time; extrapolated",
            }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
