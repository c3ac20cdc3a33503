"""What every API function shares: output checks, the torch device, the Loihi 2 host, JSON results.

Workflow layer (``snn_deploy.api``): nothing here runs a stage.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from snn_deploy.errors import UserError
from snn_deploy.fileio import check_writable


def check_outputs(*outputs: str | Path | None, inputs: tuple[str | Path | None, ...]) -> None:
    """Before any work: every output writable and none of them an input of the command (nor the
    same file twice); see ``fileio.check_writable`` for what else is refused."""
    given = [Path(o) for o in outputs if o is not None]
    sources = [i for i in inputs if i is not None]
    for k, out in enumerate(given):
        check_writable(out, inputs=sources)
        for other in given[:k]:
            if os.path.abspath(out) == os.path.abspath(other):
                raise UserError(f"{out} is named as two outputs of this command")


def profile_file(profile: str | None) -> str | None:
    """A --profile given as a file path (an input of the command), or None for a name."""
    return profile if profile is not None and str(profile).endswith(".toml") else None


def check_device(name: str) -> str:
    """``name`` if it is a torch device snn-deploy runs on here (cpu, cuda, cuda:N)."""
    import torch

    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device: unknown torch device {name!r} (use cpu, cuda or cuda:N)") from None
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"--device {name}: snn-deploy runs on cpu or cuda, not {device.type}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available on this machine")
    return name


def select_host(backend: str, partition: str | None, board: str | None) -> None:
    """Point later loihi2 runs at the partition or board (lava.utils.loihi.use_slurm_host)."""
    if partition is None and board is None:
        return
    if backend != "loihi2":
        raise UserError(f"--partition and --board choose a Loihi 2 system: they need --backend"
                        f" loihi2, not {backend}")
    from snn_deploy.run.loihi2 import use_slurm_host

    use_slurm_host(partition=partition, board=board)


def jsonable(value: object) -> object:
    """Plain JSON values for dataclasses, paths, tuples and numpy numbers (arrays are left out of
    results: a result's ``to_json`` names the fields it reports)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    return value
