"""The ``loihi2`` backend: the lava-sim process graph run on Loihi 2 chips with ``Loihi2HwCfg``.

The graph is the one ``run/lava_sim.py`` builds (``build_graph``: source -> Dense -> LIFReset per
layer, recorders), with the same staggered resets and the same readout, so a Recording from the
chip lines up with lava-sim's and the emulator's sample for sample. What differs is the bridge
between host and chip: the input source and the spike recorders are Python processes on the host
CPU, the Dense and LIFReset processes go to neuro cores, and lava-loihi's spike adapters
(``lava.proc.embedded_io.spike``: ``PyToNxAdapter`` in, ``NxToPyAdapter`` out) carry spikes across.

Running needs Intel's lava-loihi, which Intel gives to members of its Neuromorphic Research
Community (INRC) with access to Loihi 2 systems in its cloud. Where it is missing every entry
point raises ``BackendUnavailable`` with one line saying so. ``lava.utils.loihi.is_installed()``
(open Lava 0.10) detects it: it looks for lava-loihi's ``lava.utils.loihi2_profiler`` module.

On the chip, Lava's profiler (``lava.utils.profiler.Profiler.init(run_cfg)``: execution time
per step in s, energy in J) measures the whole run; the Recording carries it as ``on_chip``
(basis "measured").

Not checked on a Loihi 2 system here (none is reachable): that lava-loihi maps ``LIFReset`` to a
neuro-core model, and that its adapters add no delay on the spike path (the readout assumes the
simulator's timing). ``tests/test_loihi2.py::test_chip_equals_emulator`` checks both where
lava-loihi is installed.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from snn_deploy.errors import BackendUnavailable, UserError
from snn_deploy.quantize.deployment import Deployment
from snn_deploy.run.lava_sim import LavaGraph, build_graph, execute, input_to_lava, to_recording
from snn_deploy.run.recording import OnChipMeasurement, Recording

UNAVAILABLE = (
    "backend loihi2 needs Intel's lava-loihi package, which is not installed here; Intel gives it,"
    " with access to Loihi 2 systems in its cloud, to members of its Neuromorphic Research"
    " Community (INRC); the emulator and lava-sim backends run here"
)
PROFILER_SOURCE = "Lava profiler (lava.utils.profiler.Profiler, Loihi2HwCfg) on a Loihi 2 system"


def lava_loihi_installed() -> bool:
    """Whether Intel's lava-loihi can be imported here (``lava.utils.loihi.is_installed``)."""
    from lava.utils import loihi

    return bool(loihi.is_installed())


def require_lava_loihi() -> None:
    """Raise ``BackendUnavailable`` (one line: what is missing, how to get it) without lava-loihi."""
    if not lava_loihi_installed():
        raise BackendUnavailable(UNAVAILABLE)


def use_slurm_host(*, partition: str | None = None, board: str | None = None) -> None:
    """Run later loihi2 runs on this SLURM partition or board of Intel's cloud.

    Calls ``lava.utils.loihi.use_slurm_host(partition=..., board=...)``, which sets process-wide
    state (environment variables read by lava-loihi); with neither given, SLURM picks.

    Raises:
        BackendUnavailable: lava-loihi is missing, SLURM is not reachable, or the board is
            unknown, down, or not in the partition.
    """
    require_lava_loihi()
    from lava.utils import loihi

    try:
        loihi.use_slurm_host(partition=partition, board=board)
    except (ImportError, ValueError) as exc:
        where = ", ".join(f"{k} {v!r}" for k, v in (("partition", partition), ("board", board))
                          if v is not None) or "the default SLURM host"
        raise BackendUnavailable(f"cannot run loihi2 on {where}: {exc}") from None


@dataclasses.dataclass(frozen=True)
class AdapterBridge:
    """Host <-> neuro-core spike adapters, e.g. lava-loihi's ``PyToNxAdapter``/``NxToPyAdapter``.

    Both are Lava processes built as ``cls(shape=(n,), num_message_bits=b)`` with ports ``inp``
    and ``out``. Binary spikes leave the chip with ``num_message_bits`` 0; input enters with the
    first Dense's ``num_message_bits`` (0 for spikes, the graded payload width otherwise).
    """

    py_to_nx: Callable[..., Any]
    nx_to_py: Callable[..., Any]

    def to_chip(self, port: Any, *, size: int, num_message_bits: int) -> Any:
        adapter = self.py_to_nx(shape=(size,), num_message_bits=num_message_bits)
        port.connect(adapter.inp)
        return adapter.out

    def to_host(self, port: Any, *, size: int) -> Any:
        adapter = self.nx_to_py(shape=(size,), num_message_bits=0)
        port.connect(adapter.inp)
        return adapter.out


def embedded_io_bridge() -> AdapterBridge:
    """lava-loihi's spike adapters (``lava.proc.embedded_io.spike``), as open Lava's
    ``lava/networks/gradedvecnetwork.py`` uses them for Loihi 2."""
    require_lava_loihi()
    from lava.proc.embedded_io.spike import NxToPyAdapter, PyToNxAdapter

    return AdapterBridge(py_to_nx=PyToNxAdapter, nx_to_py=NxToPyAdapter)


def build_hw_graph(dep: Deployment, data: np.ndarray, *, steps: int, record_dir: Path,
                   bridge: AdapterBridge | None = None) -> LavaGraph:
    """The lava-sim graph (``build_graph``) with spike adapters at the host/chip boundary.

    ``bridge`` defaults to lava-loihi's adapters (``BackendUnavailable`` without lava-loihi).
    """
    return build_graph(dep, data, steps=steps, record_dir=record_dir,
                       bridge=bridge if bridge is not None else embedded_io_bridge())


def run_loihi2(dep: Deployment, x: np.ndarray, *, partition: str | None = None,
               board: str | None = None,
               on_progress: Callable[[int, int], None] | None = None) -> Recording:
    """Run (T, B, n) input on a Loihi 2 system in one Lava run, as ``run_lava_sim`` does on CPU.

    ``partition`` / ``board`` pick the SLURM host (``use_slurm_host``); without them, whatever
    was selected before (or SLURM's default). The Recording's ``on_chip`` holds the time and
    energy Lava's profiler measured.

    Raises:
        BackendUnavailable: lava-loihi is missing, or the partition/board cannot be used.
    """
    if x.shape[0] < 1 or x.shape[1] < 1:
        raise UserError(f"nothing to run: {x.shape[0]} steps x {x.shape[1]} samples")
    require_lava_loihi()
    if partition is not None or board is not None:
        use_slurm_host(partition=partition, board=board)
    from lava.magma.core.run_configs import Loihi2HwCfg
    from lava.utils.profiler import Profiler

    run_cfg = Loihi2HwCfg()
    return run_profiled(dep, x, run_cfg=run_cfg, profiler=Profiler.init(run_cfg),
                        bridge=embedded_io_bridge(), on_progress=on_progress)


def run_profiled(dep: Deployment, x: np.ndarray, *, run_cfg: Any, profiler: Any, bridge: Any,
                 on_progress: Callable[[int, int], None] | None = None) -> Recording:
    """Run (T, B, n) input through the lava-sim graph with ``run_cfg``, measured by ``profiler``.

    ``profiler`` follows Lava's profiler API (``lava.utils.profiler``): ``execution_time_probe``
    and ``energy_probe(num_steps=...)`` before the run, ``execution_time`` / ``energy`` after. It
    must be made from ``run_cfg`` before this call (``Profiler.init(run_cfg)`` adds its callbacks
    to the run configuration). The run is one RunSteps call: the profiler measures one run.
    """
    steps, batch = x.shape[0], x.shape[1]
    data = input_to_lava(dep, x)
    measured: list[OnChipMeasurement] = []
    with tempfile.TemporaryDirectory(prefix="snn-deploy-loihi2-") as tmp:
        graph = build_graph(dep, data, steps=steps, record_dir=Path(tmp), bridge=bridge)
        profiler.execution_time_probe(num_steps=graph.total_steps)
        profiler.energy_probe(num_steps=graph.total_steps)

        def read_profiler() -> None:
            measured.append(measurement(profiler, samples=batch, steps=graph.total_steps))

        recorded = execute(graph, run_cfg=run_cfg, chunks=1, on_progress=on_progress,
                           before_stop=read_profiler)
    recording = to_recording(dep, recorded, steps=steps, batch=batch)
    return dataclasses.replace(recording, on_chip=measured[0])


def measurement(profiler: Any, *, samples: int, steps: int) -> OnChipMeasurement:
    """Read a Lava Loihi 2 profiler after its run: ``execution_time`` (s per step, summed),
    ``energy`` and ``static_energy`` (J; None where the profiler has no such attribute)."""
    energy = getattr(profiler, "energy", None)
    static = getattr(profiler, "static_energy", None)
    return OnChipMeasurement(
        samples=samples, steps=steps,
        time_s=float(np.sum(profiler.execution_time)),
        energy_j=None if energy is None else float(np.sum(energy)),
        static_energy_j=None if static is None else float(np.sum(static)),
        source=PROFILER_SOURCE,
    )
