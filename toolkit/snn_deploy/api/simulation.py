"""``run``: given input on a backend -> the output layer's spikes (and every layer's recording).

Workflow layer (``snn_deploy.api``) over ``targets`` and the backends of ``snn_deploy.run``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from snn_deploy.api.common import check_device, select_host
from snn_deploy.api.inputs import load_npy, time_major
from snn_deploy.bounds import MAX_STEPS
from snn_deploy.errors import UserError
from snn_deploy.evaluate.accuracy import check_backend, run_backend
from snn_deploy.fileio import all_or_nothing, atomic_path
from snn_deploy.quantize.deployment import Deployment
from snn_deploy.run.emulator import INPUT_AS, Pipeline
from snn_deploy.run.probes import LayerProbe, probe_layers
from snn_deploy.targets import Target, load_target


@dataclasses.dataclass(frozen=True)
class RunResult:
    output: np.ndarray  # output layer spikes, uint8, in the input's layout
    samples: int
    steps: int
    probes: tuple[LayerProbe, ...] = ()  # every layer's recording (``--record``), batch axis kept
    recorded: tuple[str, ...] = ()  # which of spikes, u, v
    single: bool = True  # one sample given without a batch axis: none in the files
    decoder: str = "spike_count"  # the model's output decoder
    classes: tuple[int, ...] | None = None  # its class per sample (None: it reads the membrane)

    def to_json(self) -> dict:
        """What ``run`` prints (the spikes themselves go to the .npy file)."""
        return {"samples": self.samples, "steps": self.steps,
                "output_shape": list(self.output.shape), "spikes": int(self.output.sum()),
                "decoder": self.decoder,
                "classes": None if self.classes is None else list(self.classes)}

    def readout(self) -> str:
        """"readout (average): class 6", the decoder's class of each sample (the first 10)."""
        if self.classes is None:
            return f"readout ({self.decoder}): needs the membrane, use evaluate"
        shown = ", ".join(str(c) for c in self.classes[:10])
        more = ", ..." if len(self.classes) > 10 else ""
        return f"readout ({self.decoder}): class{'es' if len(self.classes) > 1 else ''}" \
            f" {shown}{more}"

    def write(self, out: str | Path | None = None, out_dir: str | Path | None = None) -> list[Path]:
        """Save the output spikes as .npy, and with ``out_dir`` every recorded layer's arrays as
        LAYER-spikes.npy, LAYER-u.npy, LAYER-v.npy: all written, or none."""
        written = []
        with all_or_nothing():
            if out is not None:
                written.append(_save(Path(out), self.output))
            for probe in self.probes if out_dir is not None else ():
                for key, array in probe.arrays(self.recorded).items():
                    written.append(_save(Path(out_dir) / f"{probe.name}-{key}.npy",
                                         array[:, 0] if self.single else array))
        return written


def _save(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)
    return path


def _spike_input(target: Target, x: np.ndarray, *, what: str) -> tuple[np.ndarray, bool]:
    """Time-major input checked against the model's coding: 0/1 spikes, or levels in [0, 1]."""
    shape = target.network.shape if target.network is not None else (target.input_size,)
    x3, single = time_major(x, shape, what=what)
    graded = (target.deployment.input_scale > 1) if target.deployment is not None else \
        not target.coding.binary
    if not graded and not np.isin(x3, (0, 1)).all():
        raise UserError(f"{what}: this model takes spikes, but the input holds values other"
                        " than 0 and 1")
    if graded and (x3.min() < 0 or x3.max() > 1):
        raise UserError(f"{what}: graded input must lie in [0, 1], got"
                        f" {x3.min():.4g}..{x3.max():.4g}")
    return x3, single


def _bias_input(dep: Deployment, x: np.ndarray, *, steps: int | None,
                what: str) -> tuple[np.ndarray, bool]:
    """Bias mantissas of the input layer, (*shape) or (B, *shape), held for ``steps`` steps ->
    (T, B, n)."""
    if steps is None or not 1 <= steps <= MAX_STEPS:
        raise UserError(f"--input-as bias needs --steps in 1..{MAX_STEPS}")
    layer = dep.layers[0]
    shape = layer.shape or (layer.size,)
    n = layer.size
    if tuple(x.shape) in {tuple(shape), (n,)}:
        x2, single = x.reshape(1, n), True
    elif x.ndim >= 2 and tuple(x.shape[1:]) in {tuple(shape), (n,)} and x.shape[0] >= 1:
        x2, single = x.reshape(x.shape[0], n), False
    else:
        raise UserError(f"{what}: shape {x.shape} is not one value per input neuron: expected"
                        f" {tuple(shape)} or (B, *{tuple(shape)})")
    if not np.all(x2 == np.round(x2)):
        raise UserError(f"{what}: bias mantissas must be whole numbers")
    return np.broadcast_to(x2, (steps, *x2.shape)), single


def run(model: str | Path, *, input_path: str | Path, backend: str, device: str = "cpu",
        dt: float | None = None, partition: str | None = None, board: str | None = None,
        input_as: str = "spikes", steps: int | None = None, record: tuple[str, ...] = (),
        reset_interval: int | None = None, v_convention: str = "lava") -> RunResult:
    """Run given input on a backend.

    ``input_as`` "spikes": time-major input (T, n) or (T, B, n) (binary-spike deployments take
    only 0/1 values; graded, direct-coded ones values in [0, 1]); "bias": one integer per neuron
    of the Deployment's input layer, (*shape) or (B, *shape), held as its bias for ``steps``
    steps, as netx's ``input`` block takes an image. ``record``: also record every layer's
    spikes, u and/or v (the emulator; ``run.probes``), in Lava's global time with netx's resets
    every ``reset_interval`` steps when given, the v at a spike read as ``v_convention`` says.
    ``partition`` / ``board``: the Loihi 2 system of Intel's cloud a loihi2 run goes to.
    """
    if input_as not in INPUT_AS:
        raise UserError(f"unknown --input-as {input_as!r}: choose from {', '.join(INPUT_AS)}")
    if (record or input_as == "bias" or reset_interval is not None) and backend != "emulator":
        raise UserError("--record, --input-as bias and --reset-interval run on the emulator"
                        f" backend, not {backend}")
    if reset_interval is not None and not record:
        raise UserError("--reset-interval applies to --record runs")
    if reset_interval is not None and not 1 <= reset_interval <= MAX_STEPS:
        raise UserError(f"--reset-interval must be in 1..{MAX_STEPS}, got {reset_interval}")
    select_host(backend, partition, board)
    device = check_device(device)
    target = load_target(model, dt=dt)
    check_backend(target, backend)
    x = load_npy(input_path)
    if input_as == "bias":
        x3, single = _bias_input(target.require_deployment(), x, steps=steps, what=str(input_path))
    else:
        x3, single = _spike_input(target, x, what=str(input_path))
    xt = torch.from_numpy(np.ascontiguousarray(x3, dtype=np.float32))
    if record:
        pipeline = Pipeline(reset_interval) if reset_interval is not None else None
        probes = tuple(probe_layers(target.require_deployment(), xt, input_as=input_as,
                                    pipeline=pipeline, v_convention=v_convention, device=device))
        out = probes[-1].spikes.reshape(*xt.shape[:2], -1)
    else:
        probes = ()
        out = run_backend(target, backend, [xt], device=device).output
    decoder = target.coding.decoder
    classes = None if decoder.reads_membrane else tuple(
        int(c) for c in decoder.predict(torch.from_numpy(out.astype(np.float32))))
    return RunResult(output=out[:, 0] if single else out, samples=x3.shape[1], steps=x3.shape[0],
                     probes=probes, recorded=tuple(record), single=single, decoder=decoder.name,
                     classes=classes)
