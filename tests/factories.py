"""Helpers shared by the test modules, which import them from here and never from each other:
random float layer chains of CUBA LIF neurons, the file mutations of the fuzz tests, and the
runner and verdicts of the ``snn-deploy`` console script."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
from hypothesis import strategies as st
from snn_deploy.coding import Coding
from snn_deploy.convert.conv import ConvGeometry
from snn_deploy.convert.nirgraph import FloatLayer, FloatNetwork, NeuronSpec
from snn_deploy.profiles import load_profile
from snn_deploy.quantize.deployment import (
    SIGN_MODES,
    Deployment,
    LayerStats,
    QuantLayer,
    RecurrentSynapse,
)

# --- networks ------------------------------------------------------------------------------------


def random_network(sizes, *, seed: int, mean: float = 0.4, theta: float = 1.0,
                   steps: int = 9) -> FloatNetwork:
    """A chain of CubaLIF layers (syn_keep 0.8, mem_gain 0.1) with normal(mean, 1) weights
    scaled by 6 / sqrt(fan-in), so that a few input spikes make it spike."""
    rng = np.random.default_rng(seed)
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        full = lambda v: np.full(n_out, float(v))  # noqa: E731
        spec = NeuronSpec(kind="CubaLIF", syn_keep=full(0.8), mem_gain=full(0.1), leak=True,
                          r=full(1), w_in=full(1), v_leak=full(0), v_threshold=full(theta),
                          v_reset=full(0))
        weight = rng.normal(mean, 1.0, size=(n_out, n_in)) * 6 / np.sqrt(n_in)
        layers.append(FloatLayer(synapse=f"fc{i}", neuron=f"lif{i}", weight=weight,
                                 bias=np.zeros(n_out), spec=spec))
    return FloatNetwork(dt=1e-3, input_size=sizes[0], layers=tuple(layers),
                        coding=Coding.of(encoding="rate", steps=steps))


# --- damaged files (tests/test_fuzz.py, tests/test_fuzz_checkpoint.py) ---------------------------

EXAMPLES = 40  # hypothesis examples per fuzz test


@st.composite
def mutations(draw, size: int):
    """(kind, details) of one damage to a file of ``size`` bytes."""
    kind = draw(st.sampled_from(["truncate", "flip", "overwrite"]))
    if kind == "truncate":
        return kind, draw(st.integers(0, size - 1))
    if kind == "flip":
        return kind, draw(st.lists(st.tuples(st.integers(0, size - 1), st.integers(0, 7)),
                                   min_size=1, max_size=16))
    start = draw(st.integers(0, size - 1))
    return kind, (start, draw(st.binary(min_size=1, max_size=64)))


def damaged(data: bytes, mutation) -> bytes:
    """``data`` with one mutation applied: truncated, bits flipped, or a byte run overwritten
    (an overwrite never makes the file longer)."""
    kind, detail = mutation
    if kind == "truncate":
        return data[:detail]
    buf = bytearray(data)
    if kind == "flip":
        for pos, bit in detail:
            buf[pos] ^= 1 << bit
    else:
        start, junk = detail
        buf[start:start + len(junk)] = junk
    return bytes(buf[:len(data)])


# --- the console script --------------------------------------------------------------------------

CLI_TIMEOUT_S = 300


def _command() -> list[str]:
    """The installed console script next to this interpreter, else ``python -m snn_deploy.cli``."""
    script = Path(sys.executable).parent / "snn-deploy"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    found = shutil.which("snn-deploy")
    return [found] if found else [sys.executable, "-m", "snn_deploy.cli"]


CLI = _command()


def run_cli(*args: object, cwd: Path) -> subprocess.CompletedProcess:
    """Run ``snn-deploy *args`` in ``cwd`` as a user would (a subprocess), capturing its output."""
    env = dict(os.environ)
    env.pop("PYTHONWARNINGS", None)
    return subprocess.run([*CLI, *(str(a) for a in args)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=CLI_TIMEOUT_S)


def assert_ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, f"rc={proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr


def assert_bad_input(proc: subprocess.CompletedProcess, *names: str) -> str:
    """rc 2, one non-empty stderr line that mentions every string in ``names``, no traceback."""
    detail = f"rc={proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, detail
    assert proc.returncode == 2, detail
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, f"expected exactly one line on stderr\n{detail}"
    line = lines[0].strip()
    assert line, detail
    assert "error" in line.lower(), detail
    for name in names:
        assert name in line, f"{name!r} not named in the error line\n{detail}"
    return line


PROFILE = load_profile("loihi2")
NO_STATS = LayerStats(weights_total=0, weights_saturated=0, threshold_saturated=False,
                      bias_saturated=0, u_peak_share=0.0)


@st.composite
def deployments(draw):
    depth = draw(st.integers(1, 3))
    sizes = [draw(st.integers(1, 6)) for _ in range(depth + 1)]
    graded = draw(st.booleans())
    layers = []
    for i in range(depth):
        n_in, n = sizes[i], sizes[i + 1]
        ints = lambda lo, hi, shape: np.array(  # noqa: E731
            draw(st.lists(st.integers(lo, hi), min_size=int(np.prod(shape)),
                          max_size=int(np.prod(shape))))).reshape(shape)
        recurrent = None
        if draw(st.booleans()):
            recurrent = RecurrentSynapse(
                weights=ints(-600, 600, (n, n)).astype(np.int32),
                weight_exp=draw(st.integers(-8, 7)), sign_mode=draw(st.sampled_from(SIGN_MODES)),
                num_weight_bits=draw(st.integers(1, 8)))
        layers.append(QuantLayer(
            synapse=f"fc{i}", neuron=f"lif{i}", recurrent=recurrent,
            weights=ints(-600, 600, (n, n_in)).astype(np.int32),  # beyond the 8-bit range
            weight_exp=draw(st.integers(-8, 7)), sign_mode=draw(st.sampled_from(SIGN_MODES)),
            num_weight_bits=draw(st.integers(1, 8)),
            num_message_bits=8 if (graded and i == 0) else 0,
            du=draw(st.integers(0, 4095)), dv=draw(st.integers(0, 4095)),
            vth=draw(st.one_of(st.integers(0, 50), st.integers(0, 2**17 - 1))),
            bias_mant=ints(-4096, 4095, (n,)).astype(np.int32),
            bias_exp=ints(0, 7, (n,)).astype(np.int32), scale=1.0, stats=NO_STATS,
        ))
    dep = Deployment(profile=PROFILE, layers=tuple(layers), input_size=sizes[0],
                     input_scale=255 if graded else 1, dt=1e-3, coding=Coding(), source_sha256="",
                     source_nir=b"", calibration="")
    steps = draw(st.integers(1, 7))
    batch = draw(st.integers(1, 3))
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    x = rng.random((steps, batch, sizes[0]))
    x = (x if graded else x < draw(st.floats(0.1, 0.9))).astype(np.float32)
    return dep, x


# --- conv networks, and Lava's state against the emulator's (tests/test_conv_lava.py) ------------


def conv_geometry(in_shape: tuple[int, int, int], c_out: int, kernel: tuple[int, int], *,
                  stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups: int = 1) -> ConvGeometry:
    """A ConvGeometry with its output shape computed (stride, padding, dilation: (H, W))."""
    hw = ConvGeometry.output_hw(in_shape[1:], kernel, stride, padding, dilation)
    return ConvGeometry(in_shape=in_shape, out_shape=(c_out, *hw), kernel=kernel, stride=stride,
                        padding=padding, dilation=dilation, groups=groups)


def native_layer(name: str, weights: np.ndarray, *, bias_mant: np.ndarray,
                 conv: ConvGeometry | None = None, vth: int = 40, du: int = 1024, dv: int = 512,
                 num_message_bits: int = 0) -> QuantLayer:
    """A dense layer ((n, n_in) weights), or a conv layer (``conv`` given: (C_out, C_in / groups,
    kH, kW) weights), mixed 8-bit, weight exponent 0, bias exponent 6."""
    n = int(np.prod(conv.out_shape)) if conv is not None else weights.shape[0]
    return QuantLayer(synapse=f"{name}_syn", neuron=name, weights=weights.astype(np.int32),
                      weight_exp=0, sign_mode="mixed", num_weight_bits=8,
                      num_message_bits=num_message_bits, du=du, dv=dv, vth=vth,
                      bias_mant=np.asarray(bias_mant, np.int32), bias_exp=np.full(n, 6, np.int32),
                      scale=1.0, stats=NO_STATS, kind="dense" if conv is None else "conv",
                      conv=conv, shape=conv.out_shape if conv is not None else ())


def layer_deployment(layers, input_size: int, *, input_scale: int = 1) -> Deployment:
    return Deployment(profile=PROFILE, layers=tuple(layers), input_size=input_size,
                      input_scale=input_scale, dt=1e-3, coding=Coding(), source_sha256="",
                      source_nir=b"", calibration="")


def lava_states(dep: Deployment, x: np.ndarray):
    """Run the lava-sim graph with Monitors: per layer (spikes, u, v), each (total_steps, n)
    int64, Lava's global time."""
    import tempfile

    from lava.proc.monitor.process import Monitor
    from snn_deploy.run.lava_sim import build_graph, execute, input_to_lava

    with tempfile.TemporaryDirectory() as tmp:
        graph = build_graph(dep, input_to_lava(dep, x), steps=x.shape[0], record_dir=Path(tmp))
        monitors = []
        for lif in graph.lifs:
            mu, mv = Monitor(), Monitor()
            mu.probe(lif.u, graph.total_steps)
            mv.probe(lif.v, graph.total_steps)
            monitors.append((lif, mu, mv))
        states = []

        def read() -> None:
            for lif, mu, mv in monitors:
                states.append((np.asarray(mu.get_data()[lif.name]["u"]).astype(np.int64),
                               np.asarray(mv.get_data()[lif.name]["v"]).astype(np.int64)))

        spikes = execute(graph, before_stop=read)
    return [(s.astype(np.int64), u, v) for s, (u, v) in zip(spikes, states)]


def assert_states_equal_lava(dep: Deployment, x: np.ndarray) -> list:
    """Every layer's spikes, u and v at every step of every sample: the emulator (both step
    loops) against one Lava run (layer l's local step k of sample b is Lava's step b*T + l + k).
    Returns the emulator's traces."""
    import torch
    from snn_deploy.run.emulator import KERNELS, run_layers

    steps, batch = x.shape[0], x.shape[1]
    lava = lava_states(dep, x)
    for kernel in KERNELS:
        traces = run_layers(dep, torch.from_numpy(x), record_state=True, kernel=kernel)
        for depth, (trace, theirs) in enumerate(zip(traces, lava, strict=True), start=1):
            window = slice(depth, depth + batch * steps)
            ours = (trace.spikes.to(torch.int64).numpy(), trace.u.numpy(), trace.v.numpy())
            for name, a, b in zip(("spikes", "u", "v"), ours, theirs):
                b = b[window].reshape(batch, steps, -1).transpose(1, 0, 2)  # (T, B, n)
                bad = np.argwhere(a != b)
                assert len(bad) == 0, (
                    f"{kernel} layer {depth} {name}: {len(bad)} mismatches, first (t, b, n)"
                    f" {bad[:3].tolist()}: emulator {a[tuple(bad[0])]} vs Lava {b[tuple(bad[0])]}")
    return traces


def zip_records(records: dict[str, bytes], *, compression: int = zipfile.ZIP_STORED) -> bytes:
    """A zip archive of ``records`` (name -> bytes), as a checkpoint file's bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compression) as z:
        for name, data in records.items():
            z.writestr(name, data)
    return buf.getvalue()


def read_records(blob: bytes) -> dict[str, bytes]:
    """The members of a zip archive's bytes, name -> bytes."""
    with zipfile.ZipFile(io.BytesIO(blob)) as z:
        return {name: z.read(name) for name in z.namelist()}
