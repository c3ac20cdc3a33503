"""The ``lava-sim`` backend: a Deployment as Lava processes on Lava's CPU simulator.

Process graph: ``RingBuffer`` source -> (``Dense`` -> ``LIFReset``) per layer, each ``LIFReset``
read by a ``SpikeRecorder`` (run/lava_probes/recorder.py); run with
``Loihi2SimCfg(select_tag="fixed_pt")``.

All samples go through one Lava run. Each Dense delays by one step, so layer l (1-based) sees
sample s during global steps [s*T + l, s*T + l + T). ``LIFReset`` zeroes u and v of layer l at the
first of those steps (``reset_interval = T``, ``reset_offset = l + 1``: Lava counts time steps
from 1) before adding that step's input, which is the first input of the same sample. No gap
steps are needed, the stale Dense buffers are never read, and the output of sample s is read from
steps [s*T + L, s*T + L + T). The runtime is stopped in every case, also on error or Ctrl-C.
"""

from __future__ import annotations

import contextlib
import signal
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from snn_deploy.errors import UserError
from snn_deploy.quantize.deployment import Deployment
from snn_deploy.run.recording import Recording

# Lava SignMode names for our sign_mode strings (lava/utils/weightutils.py, SignMode).
_SIGN_MODE_NAMES = {"mixed": "MIXED", "excitatory": "EXCITATORY", "inhibitory": "INHIBITORY"}

RUN_CHUNKS = 20  # the run is split into this many RunSteps calls, for progress reports


@contextlib.contextmanager
def _stopping(process) -> Iterator[None]:
    """Stop the Lava runtime of ``process`` when the block ends, however it ends."""
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            process.stop()


@contextlib.contextmanager
def _sigint_ignored_in_children() -> Iterator[None]:
    """Start Lava's worker processes with SIGINT ignored, so Ctrl-C reaches only this process.

    A terminal's Ctrl-C signals the whole process group. Lava's workers die of it, and the
    runtime's stop() then waits forever for their answer; with the workers ignoring SIGINT, the
    KeyboardInterrupt in this process stops the runtime cleanly.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def build_processes(dep: Deployment, *, steps: int, total_steps: int, data: np.ndarray,
                    record_dir: Path) -> tuple[Any, list[Path]]:
    """Create and connect the Lava processes; returns the source and each layer's record file."""
    from lava.proc.dense.process import Dense
    from lava.proc.io.source import RingBuffer as Source
    from lava.proc.lif.process import LIFReset
    from lava.utils.weightutils import SignMode

    from snn_deploy.run.lava_probes.recorder import SpikeRecorder, create_record_file

    source = Source(data=data)
    port = source.s_out
    records = []
    for depth, layer in enumerate(dep.layers, start=1):
        dense = Dense(
            weights=layer.weights, weight_exp=layer.weight_exp,
            num_weight_bits=layer.num_weight_bits, num_message_bits=layer.num_message_bits,
            sign_mode=getattr(SignMode, _SIGN_MODE_NAMES[layer.sign_mode]),
            name=f"dense:{layer.synapse}",
        )
        lif = LIFReset(
            shape=(layer.size,), du=layer.du, dv=layer.dv, vth=layer.vth,
            bias_mant=layer.bias_mant, bias_exp=layer.bias_exp,
            reset_interval=steps, reset_offset=(depth + 1) % steps, name=f"lif:{layer.neuron}",
        )
        port.connect(dense.s_in)
        dense.a_out.connect(lif.a_in)
        record = record_dir / f"layer{depth}.npy"
        create_record_file(record, steps=total_steps, width=layer.size)
        lif.s_out.connect(SpikeRecorder(shape=(layer.size,), path=str(record)).a_in)
        records.append(record)
        port = lif.s_out
    return source, records


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
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg

    steps, batch = x.shape[0], x.shape[1]
    if steps < 1 or batch < 1:
        raise UserError(f"nothing to run: {steps} steps x {batch} samples")
    data = input_to_lava(dep, x)
    total = data.shape[1]
    cfg = Loihi2SimCfg(select_tag="fixed_pt")
    bounds = np.linspace(0, total, min(RUN_CHUNKS, total) + 1).astype(int)
    with tempfile.TemporaryDirectory(prefix="snn-deploy-lava-") as tmp:
        source, records = build_processes(dep, steps=steps, total_steps=total, data=data,
                                          record_dir=Path(tmp))
        with _stopping(source):
            with _sigint_ignored_in_children():
                source.create_runtime(run_cfg=cfg)
            for done, todo in zip(bounds[:-1], np.diff(bounds)):
                source.run(condition=RunSteps(num_steps=int(todo)))
                if on_progress is not None:
                    on_progress(int(done + todo), total)
        recorded = [np.load(path) for path in records]  # (total, n) uint8 each
    per_step = [  # (B, T, n) per layer, aligned with the input
        spikes[depth:depth + batch * steps].reshape(batch, steps, -1)
        for depth, spikes in enumerate(recorded, start=1)
    ]
    return Recording(
        output=per_step[-1].transpose(1, 0, 2).astype(np.uint8),
        layer_names=tuple(layer.neuron for layer in dep.layers),
        counts=tuple(s.sum(axis=1).astype(np.int64) for s in per_step),
    )
