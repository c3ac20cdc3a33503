"""``run``: given time-major input on a backend -> the output layer's spikes.

Workflow layer (``snn_deploy.api``) over ``targets`` and the backends of ``snn_deploy.run``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from snn_deploy.api.common import check_device, select_host
from snn_deploy.api.inputs import load_npy, time_major
from snn_deploy.errors import UserError
from snn_deploy.fileio import atomic_path


@dataclasses.dataclass(frozen=True)
class RunResult:
    output: np.ndarray  # output layer spikes, uint8, in the input's layout
    samples: int
    steps: int

    def to_json(self) -> dict:
        """What ``run`` prints (the spikes themselves go to the .npy file)."""
        return {"samples": self.samples, "steps": self.steps,
                "output_shape": list(self.output.shape), "spikes": int(self.output.sum())}

    def write(self, out: str | Path) -> None:
        """Save the output spikes as .npy (atomically)."""
        with atomic_path(out) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, self.output)


def run(model: str | Path, *, input_path: str | Path, backend: str, device: str = "cpu",
        dt: float | None = None, partition: str | None = None,
        board: str | None = None) -> RunResult:
    """Run given time-major input (T, n) or (T, B, n) on a backend.

    Binary-spike deployments take only 0/1 values; graded (direct-coded) ones values in [0, 1].
    ``partition`` / ``board``: the Loihi 2 system of Intel's cloud a loihi2 run goes to.
    """
    from snn_deploy.evaluate.accuracy import check_backend, run_backend
    from snn_deploy.targets import load_target

    select_host(backend, partition, board)
    device = check_device(device)
    target = load_target(model, dt=dt)
    check_backend(target, backend)
    x = load_npy(input_path)
    shape = target.network.shape if target.network is not None else (target.input_size,)
    x3, single = time_major(x, shape, what=str(input_path))
    graded = (target.deployment.input_scale > 1) if target.deployment is not None else \
        not target.coding.binary
    if not graded and not np.isin(x3, (0, 1)).all():
        raise UserError(f"{input_path}: this model takes spikes, but the input holds values other"
                        " than 0 and 1")
    if graded and (x3.min() < 0 or x3.max() > 1):
        raise UserError(f"{input_path}: graded input must lie in [0, 1], got"
                        f" {x3.min():.4g}..{x3.max():.4g}")
    xt = torch.from_numpy(np.ascontiguousarray(x3, dtype=np.float32))
    out = run_backend(target, backend, [xt], device=device).output
    return RunResult(output=out[:, 0] if single else out, samples=x3.shape[1], steps=x3.shape[0])
