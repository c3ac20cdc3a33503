"""The ``lava-sim`` backend: a Deployment as Lava processes on Lava's CPU simulator.

Process graph: ``RingBuffer`` source -> (``Dense`` or ``Conv`` -> ``LIFReset``) per layer (plus a
``Dense`` from the LIF back to itself for a recurrent layer), each ``LIFReset`` a flat (n,)
population in C, H, W order, read by a ``SpikeRecorder`` (run/lava_probes/recorder.py); run with
``Loihi2SimCfg(select_tag="fixed_pt")``. run/lava_layers.py builds the synapses: a conv layer's
Lava ``Conv`` works in (W, H, C) order behind reshaping and transposing virtual ports. Input
layers of neurons (no synapse) are refused so far.

All samples go through one Lava run. Each Dense or Conv delays by one step, so layer l (1-based)
sees sample s during global steps [s*T + l, s*T + l + T). ``LIFReset`` zeroes u and v of layer l
at the first of those steps (``reset_interval = T``, ``reset_offset = l + 1``: Lava counts time
steps from 1) before adding that step's input, which is the first input of the same sample. No
gap steps are needed, the stale feed-forward Dense or Conv buffers are never read, and the output
of sample s is read from steps [s*T + L, s*T + L + T). The runtime is stopped in every case, also on error or
Ctrl-C.

A recurrent Dense would deliver, at a layer's reset step, the layer's own spikes of the step
before: the last step of the previous sample. LIFReset cannot clear that (it zeroes u and v
*before* the step's input arrives), and carried over it changes what a trained recurrent model
computes (measured: a latency-coded recurrent digits model, 0.90 from rest, 0.22 carried). So the
run pauses before every such step and sets the recurrent Dense's buffer ``a_buff`` to zero: every
sample starts from rest, as the NIR graph and the float backend assume, and a batched run equals
one fresh run per sample (tests/test_recurrent.py). Feed-forward deployments need no pauses.

A ``DelayDense`` (a dense layer with synaptic delays) would likewise carry the previous sample's
late spikes into the next one: its buffer holds what arrives up to 63 steps later. The run
pauses one step earlier, before layer l's last step of sample s - 1 (after s*T + l - 1 steps),
when column 0 of the buffer is that last step's input and columns 1.. are the stale spikes due
during sample s, and zeroes those columns: every sample starts from rest here too
(tests/test_delays.py).

The ``loihi2`` backend (run/loihi2.py) runs this same graph, built by ``build_graph``, with
``Loihi2HwCfg``: its ``Bridge`` puts lava-loihi's spike adapters where the host processes (source,
recorders) meet the neuro cores; here the ``DIRECT`` bridge connects them as they are.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

import numpy as np

from snn_deploy.errors import Terminated, UserError, terminate_raises
from snn_deploy.quantize.deployment import Deployment
from snn_deploy.run.lava_layers import feed_forward, recurrent, require_lava_kinds
from snn_deploy.run.recording import Recording

RUN_CHUNKS = 20  # the run is split into this many RunSteps calls, for progress reports


# Signals that end a run: Ctrl-C, and SIGTERM / SIGHUP (a job scheduler, a closed terminal).
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def _stopping(process) -> Iterator[None]:
    """Stop the Lava runtime of ``process`` when the block ends, however it ends: an error,
    Ctrl-C, or SIGTERM / SIGHUP (raised as ``Terminated`` meanwhile where nobody handles them, so
    that Lava's workers and its shared memory do not outlive this process).

    Lava 0.10's ``stop()`` of a runtime that was created but never ran waits forever: its workers
    wait for a first command that never comes (tests/test_interrupt.py shows it). Such a runtime
    (a Ctrl-C right after ``create_runtime``) first runs one step, which starts it, then stops.
    """
    with terminate_raises(only_default=True):
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                runtime = process.runtime
                if runtime is not None and not runtime._is_started:
                    from lava.magma.core.run_conditions import RunSteps

                    process.run(condition=RunSteps(num_steps=1))
            with contextlib.suppress(Exception):
                process.stop()


def _start_resource_tracker() -> None:
    """Start multiprocessing's resource tracker (Lava's shared memory registers with it) with
    SIGHUP ignored. It is exec'd, so it inherits no Python handler, only an ignored signal; it
    ignores SIGINT and SIGTERM itself, not SIGHUP, and a closed terminal would kill it (Python then
    warns on stderr that it "died unexpectedly" and starts another)."""
    from multiprocessing import resource_tracker

    before = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        resource_tracker.ensure_running()
    finally:
        signal.signal(signal.SIGHUP, before)


@contextlib.contextmanager
def _signals_held_in_children() -> Iterator[None]:
    """Start Lava's worker processes with SIGINT, SIGTERM and SIGHUP held back, so that these
    signals reach only this process, which then stops the runtime cleanly.

    A terminal's Ctrl-C (and a closed terminal's SIGHUP) signals the whole process group. Lava's
    workers die of it, the runtime's stop() then waits forever for their answer, and the shared
    memory segments of Lava's manager process stay in /dev/shm. While the workers are forked, these
    signals only note themselves (the workers inherit that handler, so they never act on them); a
    signal that came meanwhile is raised here once they are up (KeyboardInterrupt or
    ``Terminated``), and the runtime is stopped cleanly by the caller (``_stopping``).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    previous = {signum: signal.signal(signum, lambda signum, frame: pending.append(signum))
                for signum in _STOP_SIGNALS}
    try:
        _start_resource_tracker()
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if pending:
        if pending[0] == signal.SIGINT:
            raise KeyboardInterrupt
        raise Terminated(pending[0])


class Bridge(Protocol):
    """Joins host processes (the input source, the spike recorders) to the layers' processes."""

    def to_chip(self, port: Any, *, size: int, num_message_bits: int) -> Any:
        """The port that carries host ``port``'s (size,) messages to the layers."""

    def to_host(self, port: Any, *, size: int) -> Any:
        """The port that carries a layer's (size,) binary spikes from ``port`` to the host."""


class _Direct:
    """Lava's CPU simulator: host and layer processes connect port to port."""

    def to_chip(self, port: Any, *, size: int, num_message_bits: int) -> Any:
        return port

    def to_host(self, port: Any, *, size: int) -> Any:
        return port


DIRECT: Bridge = _Direct()


@dataclasses.dataclass(frozen=True)
class LavaGraph:
    """The Lava processes of one run: the input source, each layer's LIF and record file."""

    source: Any
    lifs: tuple[Any, ...]
    records: tuple[Path, ...]
    total_steps: int
    steps: int = 1  # per sample
    # (depth l, the recurrent Dense of layer l): emptied before each of layer l's reset steps
    loops: tuple[tuple[int, Any], ...] = ()
    # (depth l, the DelayDense feeding layer l): its later columns emptied a step before that
    delayed: tuple[tuple[int, Any], ...] = ()

    def pauses(self) -> dict[int, list[tuple[Any, int]]]:
        """Step counts after which to empty synapse buffers, as (process, columns kept): for a
        recurrent Dense of layer l, all of it after s*T + l steps (Lava steps 0..s*T + l - 1 done;
        the next is l's first step of sample s), for each sample s; for a DelayDense into layer l,
        all but column 0 after s*T + l - 1 steps, for each sample s >= 1."""
        at: dict[int, list[tuple[Any, int]]] = {}
        for depth, loop in self.loops:
            for stop in range(depth, self.total_steps, self.steps):
                at.setdefault(stop, []).append((loop, 0))
        for depth, proc in self.delayed:
            for stop in range(depth - 1 + self.steps, self.total_steps, self.steps):
                at.setdefault(stop, []).append((proc, 1))
        return at


def _empty_buffer(proc: Any, keep: int) -> None:
    """Zero a synapse's ``a_buff``, all of it (keep 0) or its columns from ``keep`` on."""
    buf = np.zeros(proc.a_buff.shape, dtype=np.int32)
    if keep:
        buf[:, :keep] = np.asarray(proc.a_buff.get())[:, :keep]
    proc.a_buff.set(buf)


def build_graph(dep: Deployment, data: np.ndarray, *, steps: int, record_dir: Path,
                bridge: Bridge = DIRECT) -> LavaGraph:
    """Create and connect the Lava processes for a (n, total_steps) int32 source buffer.

    ``bridge`` joins the host processes to the layers: ``DIRECT`` for Lava's CPU simulator,
    lava-loihi's spike adapters for Loihi 2 (run/loihi2.py); the layers are the same either way.
    """
    require_lava_kinds(dep)
    from lava.proc.io.source import RingBuffer as Source
    from lava.proc.lif.process import LIFReset

    from snn_deploy.run.lava_probes.recorder import SpikeRecorder, create_record_file

    total_steps = data.shape[1]
    source = Source(data=data)
    port = bridge.to_chip(source.s_out, size=dep.input_size,
                          num_message_bits=dep.layers[0].num_message_bits)
    lifs, records, loops, delayed = [], [], [], []
    for depth, layer in enumerate(dep.layers, start=1):
        a_out = feed_forward(layer, port)  # a Dense or a Conv, flat C, H, W output
        lif = LIFReset(
            shape=(layer.size,), du=layer.du, dv=layer.dv, vth=layer.vth,
            bias_mant=layer.bias_mant, bias_exp=layer.bias_exp,
            reset_interval=steps, reset_offset=(depth + 1) % steps, name=f"lif:{layer.neuron}",
        )
        a_out.connect(lif.a_in)
        if layer.delays is not None:
            delayed.append((depth, a_out.process))
        if layer.recurrent is not None:  # the LIF's input port sums both synapses' outputs
            loops.append((depth, recurrent(layer, lif)))
        record = record_dir / f"layer{depth}.npy"
        create_record_file(record, steps=total_steps, width=layer.size)
        bridge.to_host(lif.s_out, size=layer.size).connect(
            SpikeRecorder(shape=(layer.size,), path=str(record)).a_in)
        lifs.append(lif)
        records.append(record)
        port = lif.s_out
    return LavaGraph(source=source, lifs=tuple(lifs), records=tuple(records),
                     total_steps=total_steps, steps=steps, loops=tuple(loops),
                     delayed=tuple(delayed))


def execute(graph: LavaGraph, *, on_progress: Callable[[int, int], None] | None = None,
            before_stop: Callable[[], None] | None = None, run_cfg: Any = None,
            chunks: int = RUN_CHUNKS) -> list[np.ndarray]:
    """Run the graph to its end in ``chunks`` RunSteps calls (more where recurrent synapses are
    emptied between samples, ``LavaGraph.pauses``); the runtime is stopped in every case.

    ``run_cfg`` defaults to ``Loihi2SimCfg(select_tag="fixed_pt")``. Returns each layer's recorded
    spikes, (total_steps, n) uint8. ``before_stop`` runs while the runtime is still up (e.g. to
    read Monitors or a profiler).
    """
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg

    if run_cfg is None:
        run_cfg = Loihi2SimCfg(select_tag="fixed_pt")
    total = graph.total_steps
    reports = {int(b) for b in np.linspace(0, total, max(1, min(chunks, total)) + 1)[1:]}
    pauses = graph.pauses()
    done = 0
    with _stopping(graph.source):
        with _signals_held_in_children():
            graph.source.create_runtime(run_cfg=run_cfg)
        for stop in sorted(reports | set(pauses)):
            if stop > done:
                graph.source.run(condition=RunSteps(num_steps=stop - done))
                done = stop
            for proc, keep in pauses.get(stop, ()):
                _empty_buffer(proc, keep)
            if on_progress is not None and stop in reports:
                on_progress(stop, total)
        if before_stop is not None:
            before_stop()
    return [np.load(path) for path in graph.records]


def input_to_lava(dep: Deployment, x: np.ndarray) -> np.ndarray:
    """(T, B, n) encoded input -> (n, B*T + L) int32 source buffer (L zero steps at the end)."""
    steps, batch = x.shape[0], x.shape[1]
    x = x.reshape(steps, batch, -1)
    if x.shape[2] != dep.input_size:
        raise UserError(f"input has {x.shape[2]} channels, the deployment takes {dep.input_size}")
    scaled = np.rint(np.asarray(x, dtype=np.float64) * dep.input_scale).astype(np.int32)
    flat = scaled.transpose(1, 0, 2).reshape(batch * steps, -1)  # sample-major, then time
    pad = np.zeros((dep.depth, flat.shape[1]), dtype=np.int32)
    return np.concatenate([flat, pad]).T.copy()


def run_lava_sim(dep: Deployment, x: np.ndarray, *,
                 on_progress: Callable[[int, int], None] | None = None) -> Recording:
    """Run (T, B, n) input (spikes, or values in [0, 1] for graded input) in one Lava run."""
    steps, batch = x.shape[0], x.shape[1]
    if steps < 1 or batch < 1:
        raise UserError(f"nothing to run: {steps} steps x {batch} samples")
    data = input_to_lava(dep, x)
    with tempfile.TemporaryDirectory(prefix="snn-deploy-lava-") as tmp:
        graph = build_graph(dep, data, steps=steps, record_dir=Path(tmp))
        recorded = execute(graph, on_progress=on_progress)
    return to_recording(dep, recorded, steps=steps, batch=batch)


def to_recording(dep: Deployment, recorded: list[np.ndarray], *, steps: int, batch: int
                 ) -> Recording:
    """Each layer's (B*T + L, n) recorded spikes of one run -> the Recording of its B samples."""
    per_step = [  # (B, T, n) per layer, aligned with the input
        spikes[depth:depth + batch * steps].reshape(batch, steps, -1)
        for depth, spikes in enumerate(recorded, start=1)
    ]
    return Recording(
        output=per_step[-1].transpose(1, 0, 2).astype(np.uint8),
        layer_names=tuple(layer.neuron for layer in dep.layers),
        counts=tuple(s.sum(axis=1).astype(np.int64) for s in per_step),
    )


def run_lava_sim_membrane(dep: Deployment, x: np.ndarray, *,
                          on_progress: Callable[[int, int], None] | None = None) -> Recording:
    """``run_lava_sim`` that also records the output LIF's u and v every step (a ``StateRecorder``,
    run/lava_probes/state.py) and returns the Recording with its pre-reset ``membrane``
    (run/membrane.py), for the max-membrane decoder."""
    from snn_deploy.run.lava_probes.state import StateRecorder, create_state_file
    from snn_deploy.run.membrane import lava_membrane

    steps, batch = x.shape[0], x.shape[1]
    if steps < 1 or batch < 1:
        raise UserError(f"nothing to run: {steps} steps x {batch} samples")
    data = input_to_lava(dep, x)
    with tempfile.TemporaryDirectory(prefix="snn-deploy-lava-") as tmp:
        graph = build_graph(dep, data, steps=steps, record_dir=Path(tmp))
        size = dep.layers[-1].size
        paths = [Path(tmp) / "output_u.npy", Path(tmp) / "output_v.npy"]
        for path in paths:
            create_state_file(path, steps=graph.total_steps, width=size)
        probe = StateRecorder(shape=(size,), u_path=str(paths[0]), v_path=str(paths[1]))
        probe.u_ref.connect_var(graph.lifs[-1].u)
        probe.v_ref.connect_var(graph.lifs[-1].v)
        recorded = execute(graph, on_progress=on_progress)
        u, v = (np.load(path) for path in paths)
    membrane = lava_membrane(dep, u, v, steps=steps, batch=batch)
    return dataclasses.replace(to_recording(dep, recorded, steps=steps, batch=batch),
                               membrane=membrane)
