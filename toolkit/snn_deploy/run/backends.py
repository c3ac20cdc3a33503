"""Every backend behind one protocol (run stage): ``Backend.run(batches, record=...) -> Recording``.

A backend is built for one model and runs consecutive (T, B, ...) input batches as one stream of
samples, every sample from rest. What it records beyond the output spikes and per-layer spike
counts is an option (``Record``), not a second function. ``BACKENDS`` maps the CLI's backend
names to the classes; a new backend is one class here with a ``run`` and one entry there.

- ``float``: a NIR layer chain (``run.float_backend``), or a trained Norse model itself; batches
  one by one (bounded memory).
- ``emulator``: a Deployment in Loihi 2 integer arithmetic (``run.emulator``), batches one by one.
- ``lava-sim``: a Deployment on Lava's CPU simulator, all samples in one Lava run
  (``run.lava_sim``, each layer reset at its first step of each sample).
- ``loihi2``: the same Lava graph on Loihi 2 chips; without Intel's lava-loihi it raises
  ``BackendUnavailable`` before reading any input.

Lava is imported only when a Lava backend runs.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterable, Protocol

import numpy as np
import torch

from snn_deploy.convert.nirgraph import FloatNetwork
from snn_deploy.errors import UserError
from snn_deploy.quantize.deployment import Deployment
from snn_deploy.run.emulator import Emulator
from snn_deploy.run.float_backend import run_float
from snn_deploy.run.membrane import MembraneEmulator
from snn_deploy.run.recording import Recording
from snn_deploy.train.model import LIFNetwork

Progress = Callable[[int, int], None]


@dataclasses.dataclass(frozen=True)
class Record:
    """What a run records beyond output spikes and per-layer counts. ``membrane``: the output
    layer's membrane before threshold and reset, in units of its threshold
    (``Recording.membrane``, the max-membrane decoder's input)."""

    membrane: bool = False


class Backend(Protocol):
    """A model on one backend."""

    name: str

    def run(self, batches: Iterable[torch.Tensor], *, record: Record = Record(),
            total: int | None = None, on_progress: Progress | None = None) -> Recording:
        """Run (T, B, ...) batches as one stream of samples; ``on_progress(done, total)``."""


def concat(parts: list[Recording]) -> Recording:
    """Recordings of consecutive batches as one."""
    membranes = [p.membrane for p in parts]
    return Recording(
        output=np.concatenate([p.output for p in parts], axis=1),
        layer_names=parts[0].layer_names,
        counts=tuple(np.concatenate(c) for c in zip(*(p.counts for p in parts))),
        membrane=None if any(m is None for m in membranes)
        else np.concatenate(membranes, axis=1),  # type: ignore[arg-type]
    )


def _streamed(run_batch: Callable[[torch.Tensor], Recording], batches: Iterable[torch.Tensor], *,
              total: int | None, on_progress: Progress | None) -> Recording:
    parts, done = [], 0
    for xb in batches:
        parts.append(run_batch(xb))
        done += xb.shape[1]
        if on_progress is not None:
            on_progress(done, total if total is not None else done)
    return concat(parts)


def run_checkpoint(model: LIFNetwork, x: torch.Tensor, *, membrane: bool = False) -> Recording:
    """Run the Norse model itself (the training-time model), layer by layer to count spikes; with
    ``membrane`` through its ``trace`` (Norse's own step), recording the output layer's pre-reset
    membrane.

    Layer names are the Norse module indices of the LIF cells, which are the node ids that
    ``norse.to_nir`` gives them, so reports of a checkpoint and of its NIR graph line up.
    """
    with torch.no_grad():
        if membrane:
            trace = model.trace(x)
            assert trace.membrane is not None
            return Recording(output=trace.output.to(torch.uint8).numpy(),
                             layer_names=tuple(str(2 * k + 1) for k in range(len(trace.spikes))),
                             counts=tuple(z.sum(0).to(torch.int64).numpy() for z in trace.spikes),
                             membrane=trace.membrane.to(torch.float64).numpy())
        modules = list(model.net)
        counts, names, h = [], [], x
        for i in range(0, len(modules), 2):
            linear, cell = modules[i], modules[i + 1]
            state, spikes = None, []
            for h_t in h:
                z, state = cell(linear(h_t), state)
                spikes.append(z)
            h = torch.stack(spikes)
            counts.append(h.sum(0).to(torch.int64).numpy())
            names.append(str(i + 1))
    return Recording(output=h.to(torch.uint8).numpy(), layer_names=tuple(names),
                     counts=tuple(counts))


class FloatBackend:
    """``float``: a NIR layer chain in torch, or a trained Norse model itself."""

    name = "float"

    def __init__(self, model: FloatNetwork | LIFNetwork, *, device: str | torch.device = "cpu"):
        self.model = model

    def run(self, batches: Iterable[torch.Tensor], *, record: Record = Record(),
            total: int | None = None, on_progress: Progress | None = None) -> Recording:
        model = self.model
        if isinstance(model, LIFNetwork):
            return _streamed(lambda xb: run_checkpoint(model, xb, membrane=record.membrane),
                             batches, total=total, on_progress=on_progress)
        return _streamed(lambda xb: run_float(model, xb, membrane=record.membrane).recording,
                         batches, total=total, on_progress=on_progress)


class EmulatorBackend:
    """``emulator``: a Deployment in Loihi 2 integer arithmetic, on a torch device."""

    name = "emulator"

    def __init__(self, dep: Deployment, *, device: str | torch.device = "cpu"):
        self.dep, self.device = dep, device

    def run(self, batches: Iterable[torch.Tensor], *, record: Record = Record(),
            total: int | None = None, on_progress: Progress | None = None) -> Recording:
        emulator = MembraneEmulator(self.dep, device=self.device) if record.membrane \
            else Emulator(self.dep, device=self.device)
        return _streamed(emulator.run, batches, total=total, on_progress=on_progress)


class LavaSimBackend:
    """``lava-sim``: a Deployment on Lava's CPU simulator (fixed_pt), all samples in one run."""

    name = "lava-sim"

    def __init__(self, dep: Deployment, *, device: str | torch.device = "cpu"):
        self.dep = dep  # Lava runs on the CPU whatever the torch device

    def run(self, batches: Iterable[torch.Tensor], *, record: Record = Record(),
            total: int | None = None, on_progress: Progress | None = None) -> Recording:
        from snn_deploy.run.lava_sim import run_lava_sim, run_lava_sim_membrane

        run_lava = run_lava_sim_membrane if record.membrane else run_lava_sim
        return run_lava(self.dep, torch.cat(list(batches), dim=1).numpy(), on_progress=on_progress)


class Loihi2Backend:
    """``loihi2``: the Lava graph on Loihi 2 chips (Intel's lava-loihi); its Recording carries the
    profiler's measured time and energy."""

    name = "loihi2"

    def __init__(self, dep: Deployment, *, device: str | torch.device = "cpu"):
        self.dep = dep

    def run(self, batches: Iterable[torch.Tensor], *, record: Record = Record(),
            total: int | None = None, on_progress: Progress | None = None) -> Recording:
        if record.membrane:
            raise UserError("the max-membrane decoder reads the output layer's v every step; the"
                            " loihi2 backend records spikes only (use emulator or lava-sim)")
        from snn_deploy.run.loihi2 import require_lava_loihi, run_loihi2

        require_lava_loihi()  # before any input is read
        return run_loihi2(self.dep, torch.cat(list(batches), dim=1).numpy(),
                          on_progress=on_progress)


BACKENDS: dict[str, type] = {
    "float": FloatBackend,
    "emulator": EmulatorBackend,
    "lava-sim": LavaSimBackend,
    "loihi2": Loihi2Backend,
}
# the backends that run a Deployment (the others run the float model)
DEPLOYED_BACKENDS = frozenset({"emulator", "lava-sim", "loihi2"})
