"""loihi2 backend: the chip runs the lava-sim process graph; without lava-loihi, one clear line.

No Loihi 2 system is reachable here: the graph tests build (not run) real Lava processes, with
stand-in processes where lava-loihi's spike adapters go, and compare them process by process with
lava-sim's graph. The chip run itself is tested only where lava-loihi is installed.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.utils import loihi
from snn_deploy.errors import BackendUnavailable
from snn_deploy.profiles import load_profile
from snn_deploy.quantize.deployment import Deployment, RecurrentSynapse
from snn_deploy.quantize.fixed_point import quantize_network
from snn_deploy.run import loihi2
from snn_deploy.run.lava_sim import build_graph, input_to_lava

from tests.factories import assert_bad_input, random_network, run_cli

STEPS, BATCH = 5, 3


class StandInAdapter(AbstractProcess):
    """A process with lava-loihi's adapter interface: ``cls(shape=, num_message_bits=)``, ports
    ``inp`` and ``out``. Never run, only built."""

    def __init__(self, *, shape: tuple[int, ...], num_message_bits: int) -> None:
        super().__init__(shape=shape, num_message_bits=num_message_bits)
        self.inp = InPort(shape=shape)
        self.out = OutPort(shape=shape)


STAND_IN = loihi2.AdapterBridge(py_to_nx=StandInAdapter, nx_to_py=StandInAdapter)


def _deployment(*, recurrent: bool, graded: bool) -> Deployment:
    network = random_network([7, 6, 4], seed=11)
    dep = quantize_network(network, load_profile("loihi2"), graded_input=graded, u_peaks=None,
                           source_sha256=hashlib.sha256(b"").hexdigest(), source_nir=b"",
                           calibration="none")
    if recurrent:
        first = dep.layers[0]
        rec = RecurrentSynapse(weights=np.arange(36, dtype=np.int32).reshape(6, 6) % 7 - 3,
                               weight_exp=1, sign_mode="mixed", num_weight_bits=8)
        dep = dataclasses.replace(dep, layers=(dataclasses.replace(first, recurrent=rec),
                                               *dep.layers[1:]))
    return dep


def _input(dep: Deployment) -> np.ndarray:
    x = (np.random.default_rng(0).random((STEPS, BATCH, dep.input_size)) < 0.5)
    return input_to_lava(dep, x.astype(np.float32))


def _value(v: object) -> object:
    return np.asarray(v).tolist() if isinstance(v, np.ndarray) else v


def _describe(process: AbstractProcess, record_dir: Path) -> dict:
    """Type, every Var (name, shape, initial value) and every constructor parameter (the
    given name included; Lava's default names count processes, so they differ)."""
    params = {k: _value(v) for k, v in process.proc_params._parameters.items()
              if k != "log_config"}
    if "path" in params:  # recorder files: same name, compared relative to their folder
        params["path"] = str(Path(params["path"]).relative_to(record_dir))
    return {"type": type(process).__name__, "params": params,
            "vars": sorted((v.name, v.shape, _value(v.init)) for v in process.vars)}


def _walk(source: AbstractProcess, record_dir: Path, *, skip: type | None = None
          ) -> tuple[list[dict], list[tuple[int, int]], list[AbstractProcess]]:
    """Every process reachable from ``source`` (breadth first, ports in order) and the edges
    between them, with processes of type ``skip`` bridged over (an edge through them)."""
    order: list[AbstractProcess] = []
    index: dict[int, int] = {}
    edges: set[tuple[int, int]] = set()
    skipped: list[AbstractProcess] = []

    def targets(process: AbstractProcess) -> list[AbstractProcess]:
        found = []
        for port in process.out_ports:
            for dst in port.out_connections:
                if skip is not None and isinstance(dst.process, skip):
                    skipped.append(dst.process)
                    found += targets(dst.process)
                else:
                    found.append(dst.process)
        return found

    queue = [source]
    index[id(source)] = 0
    order.append(source)
    while queue:
        process = queue.pop(0)
        for dst in targets(process):
            if id(dst) not in index:
                index[id(dst)] = len(order)
                order.append(dst)
                queue.append(dst)
            edges.add((index[id(process)], index[id(dst)]))
    return [_describe(p, record_dir) for p in order], sorted(edges), skipped


@pytest.mark.parametrize("graded", [False, True], ids=["spikes", "graded"])
@pytest.mark.parametrize("recurrent", [False, True], ids=["feed-forward", "recurrent"])
def test_hardware_graph_is_the_lava_sim_graph(tmp_path, recurrent, graded):
    """Same processes (types, names, shapes, weights, decays, thresholds, biases, resets), same
    connections; the hardware graph only adds one adapter in and one out per layer."""
    dep = _deployment(recurrent=recurrent, graded=graded)
    data = _input(dep)
    sim = build_graph(dep, data, steps=STEPS, record_dir=tmp_path)
    sim_nodes, sim_edges, _ = _walk(sim.source, tmp_path)
    hw = loihi2.build_hw_graph(dep, data, steps=STEPS, record_dir=tmp_path, bridge=STAND_IN)
    hw_nodes, hw_edges, adapters = _walk(hw.source, tmp_path, skip=StandInAdapter)

    kinds = [n["type"] for n in sim_nodes]
    assert kinds.count("Dense") == len(dep.layers) + int(recurrent)
    assert kinds.count("LIFReset") == kinds.count("SpikeRecorder") == len(dep.layers)
    assert hw_edges == sim_edges
    for i, (a, b) in enumerate(zip(sim_nodes, hw_nodes, strict=True)):
        assert a == b, f"process {i}: lava-sim {a}\n!= loihi2 {b}"
    dense = next(n for n in hw_nodes if n["type"] == "Dense")
    assert np.array_equal(dense["params"]["weights"], dep.layers[0].weights)

    # One adapter host -> chip after the source, one chip -> host before each recorder.
    shapes = sorted((a.proc_params["shape"], a.proc_params["num_message_bits"])
                    for a in set(adapters))
    expected = [((dep.input_size,), dep.layers[0].num_message_bits)]
    expected += [((layer.size,), 0) for layer in dep.layers]
    assert shapes == sorted(expected)
    assert [p.process for p in hw.source.s_out.out_connections] == \
        [a for a in adapters if a.proc_params["shape"] == (dep.input_size,)][:1]


class FakeProfiler:
    """Lava's profiler interface (lava.utils.profiler), with made-up readings."""

    def __init__(self) -> None:
        self.probed: list[tuple[str, int]] = []

    def execution_time_probe(self, *, num_steps: int) -> None:
        self.probed.append(("time", num_steps))
        self.execution_time = np.full(num_steps, 2e-6)

    def energy_probe(self, *, num_steps: int) -> None:
        self.probed.append(("energy", num_steps))
        self.energy, self.static_energy = 3e-6, 1e-6


@pytest.mark.slow
def test_profiled_run_reads_out_like_lava_sim_and_keeps_the_measurement():
    """The hardware run's plumbing (one RunSteps call, readout, profiler) on Lava's CPU
    simulator: the same spikes as the emulator, and the profiler's readings in ``on_chip``."""
    import torch
    from lava.magma.core.run_configs import Loihi2SimCfg
    from snn_deploy.run.emulator import run_emulator
    from snn_deploy.run.lava_sim import DIRECT

    dep = _deployment(recurrent=True, graded=False)
    x = (np.random.default_rng(5).random((STEPS, BATCH, dep.input_size)) < 0.5)
    x = x.astype(np.float32)
    profiler = FakeProfiler()
    run = loihi2.run_profiled(dep, x, run_cfg=Loihi2SimCfg(select_tag="fixed_pt"),
                              profiler=profiler, bridge=DIRECT)
    emulated = run_emulator(dep, torch.from_numpy(x))
    assert sum(int(c.sum()) for c in emulated.counts) > 0, "the test network must spike"
    np.testing.assert_array_equal(run.output, emulated.output)
    for c_run, c_emu in zip(run.counts, emulated.counts, strict=True):
        np.testing.assert_array_equal(c_run, c_emu)
    total = STEPS * BATCH + len(dep.layers)
    assert profiler.probed == [("time", total), ("energy", total)]
    m = run.on_chip
    assert m is not None and (m.basis, m.samples, m.steps) == ("measured", BATCH, total)
    assert m.time_s == pytest.approx(total * 2e-6) and m.time_per_step_s == pytest.approx(2e-6)
    assert (m.energy_j, m.static_energy_j) == (3e-6, 1e-6)
    assert m.energy_per_sample_nj == pytest.approx(3e-6 * 1e9 / BATCH)


def test_evaluate_report_carries_the_chip_measurement(small_model_files, digits):
    """What the profiler measured goes into the evaluate report next to the priced energy; the
    other backends report ``on_chip`` None."""
    from snn_deploy.evaluate.accuracy import evaluate_target
    from snn_deploy.evaluate.report import evaluation_report, format_on_chip
    from snn_deploy.run.recording import OnChipMeasurement
    from snn_deploy.targets import load_target

    target = load_target(small_model_files["deployment"])
    ev = evaluate_target(target, digits, backend="emulator", limit=8, seed=0)
    assert evaluation_report(ev, target=target, dataset="digits")["on_chip"] is None
    m = OnChipMeasurement(samples=8, steps=8 * ev.steps + 2, time_s=0.25, energy_j=4e-6,
                          static_energy_j=1e-6, source=loihi2.PROFILER_SOURCE)
    report = evaluation_report(dataclasses.replace(ev, backend="loihi2", on_chip=m),
                               target=target, dataset="digits")
    chip = report["on_chip"]
    assert chip["basis"] == "measured" and chip["samples"] == 8 and chip["steps"] == m.steps
    assert chip["time_per_step_s"] == pytest.approx(0.25 / m.steps)
    assert chip["energy_per_sample_nj"] == pytest.approx(500.0)
    assert report["energy_basis"] == "proxy"  # the priced figure stays, with its own basis
    line = format_on_chip(chip)
    assert "\n" not in line and "500 nJ/sample" in line and "static 1e-06 J" in line


@pytest.mark.parametrize("args, needle", [
    (("--backend", "emulator", "--partition", "oheogulch"), "need --backend loihi2"),
    (("--backend", "float", "--board", "ncl-og-01"), "need --backend loihi2"),
    (("--backend", "loihi2", "--partition", "oheogulch"), "lava-loihi"),
])
def test_cli_partition_and_board_need_loihi2_and_lava_loihi(small_model_files, tmp_path, args,
                                                            needle):
    if loihi.is_installed() and args[1] == "loihi2":
        pytest.skip("lava-loihi is installed here")
    out = tmp_path / "r.json"
    assert_bad_input(run_cli("evaluate", small_model_files["deployment"], *args, "--limit", 4,
                             "--json", out, cwd=tmp_path), needle)
    assert not out.exists()
    np.save(tmp_path / "x.npy", np.zeros((4, 64), dtype=np.float32))
    assert_bad_input(run_cli("run", small_model_files["deployment"], "--input", tmp_path / "x.npy",
                             *args, "--out", tmp_path / "y.npy", cwd=tmp_path), needle)
    assert not (tmp_path / "y.npy").exists()
    if args[1] != "float":
        assert_bad_input(run_cli("attack", small_model_files["deployment"], *args, "--limit", 4,
                                 "--json", out, cwd=tmp_path), needle)


# --------------------------------------------------------------------------------------------
# Without Intel's lava-loihi


@pytest.fixture
def no_lava_loihi(monkeypatch):
    monkeypatch.setattr(loihi, "is_installed", lambda *a, **k: False)


def _assert_one_line(message: str) -> None:
    assert "\n" not in message
    for part in ("lava-loihi", "Intel", "INRC", "cloud", "emulator", "lava-sim"):
        assert part in message, f"{part!r} missing from: {message}"


def test_detection_uses_lavas_is_installed(monkeypatch):
    assert loihi2.lava_loihi_installed() == loihi.is_installed()
    monkeypatch.setattr(loihi, "is_installed", lambda *a, **k: True)
    assert loihi2.lava_loihi_installed()


@pytest.mark.parametrize("call", [
    lambda dep, x: loihi2.run_loihi2(dep, x),
    lambda dep, x: loihi2.run_loihi2(dep, x, partition="oheogulch", board="ncl-ext-og-01"),
    lambda dep, x: loihi2.use_slurm_host(partition="oheogulch"),
    lambda dep, x: loihi2.embedded_io_bridge(),
], ids=["run", "run-on-board", "use_slurm_host", "adapters"])
def test_missing_lava_loihi_is_one_line(no_lava_loihi, call):
    dep = _deployment(recurrent=False, graded=False)
    x = np.zeros((STEPS, BATCH, dep.input_size), dtype=np.float32)
    with pytest.raises(BackendUnavailable) as info:
        call(dep, x)
    _assert_one_line(str(info.value))


@pytest.mark.slow
def test_run_backend_refuses_before_reading_input(no_lava_loihi, small_model_files):
    from snn_deploy.evaluate.accuracy import run_backend
    from snn_deploy.targets import load_target

    def batches():
        raise AssertionError("input was read")
        yield

    with pytest.raises(BackendUnavailable) as info:
        run_backend(load_target(small_model_files["deployment"]), "loihi2", batches())
    _assert_one_line(str(info.value))


@pytest.mark.slow
@pytest.mark.skipif(loihi.is_installed(), reason="lava-loihi is installed here")
def test_cli_evaluate_on_loihi2_without_lava_loihi_exits_2(small_model_files, tmp_path):
    out = tmp_path / "report.json"
    proc = run_cli("evaluate", small_model_files["deployment"], "--backend", "loihi2",
                   "--limit", 5, "--json", out, cwd=tmp_path)
    line = assert_bad_input(proc, "loihi2", "lava-loihi", "INRC")
    assert "emulator" in line and "lava-sim" in line
    assert not out.exists()


# --------------------------------------------------------------------------------------------
# On a Loihi 2 system (INRC cloud) only


@pytest.mark.slow
@pytest.mark.skipif(not loihi.is_installed(), reason="needs Intel's lava-loihi and a Loihi 2 system")
def test_chip_equals_emulator():
    """Spike for spike: the chip runs the deployment's integer arithmetic, with the same timing."""
    import torch
    from snn_deploy.run.emulator import run_emulator

    dep = _deployment(recurrent=False, graded=False)
    x = (np.random.default_rng(5).random((STEPS, BATCH, dep.input_size)) < 0.5)
    x = x.astype(np.float32)
    chip = loihi2.run_loihi2(dep, x)
    emulated = run_emulator(dep, torch.from_numpy(x))
    np.testing.assert_array_equal(chip.output, emulated.output)
    for c_chip, c_emu in zip(chip.counts, emulated.counts, strict=True):
        np.testing.assert_array_equal(c_chip, c_emu)
    assert chip.on_chip is not None and chip.on_chip.time_s > 0
