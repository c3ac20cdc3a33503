"""lava-sim backend: real Lava runs, kept small.

The batched run (all samples in one Lava run, state reset between samples by staggered LIFReset)
must equal fresh single-sample runs exactly, and the deployed network must track the float graph.
"""

from __future__ import annotations

import hashlib
import multiprocessing

import numpy as np
import pytest
import torch
from snn_deploy.convert.nirgraph import FloatNetwork
from snn_deploy.profiles import load_profile
from snn_deploy.quantize.fixed_point import quantize_network
from snn_deploy.run.float_backend import run_float
from snn_deploy.run.lava_sim import run_lava_sim
from snn_deploy.targets import load_target

from tests.factories import random_network

pytestmark = pytest.mark.slow
DT = 1e-3


def _random_network(sizes, *, seed, theta=1.0) -> FloatNetwork:
    return random_network(sizes, seed=seed, theta=theta)


def _deploy(network, *, graded=False):
    return quantize_network(network, load_profile("loihi2"), graded_input=graded, u_peaks=None,
                            source_sha256=hashlib.sha256(b"").hexdigest(), source_nir=b"",
                            calibration="none")


@pytest.mark.parametrize("graded", [False, True], ids=["spikes", "graded"])
def test_one_batched_run_equals_fresh_runs_per_sample(graded):
    network = _random_network([12, 9, 6, 4], seed=0)
    dep = _deploy(network, graded=graded)
    rng = np.random.default_rng(1)
    steps, batch = 9, 4
    x = rng.random((steps, batch, 12)) if graded else (rng.random((steps, batch, 12)) < 0.4)
    x = x.astype(np.float32)
    together = run_lava_sim(dep, x)
    assert together.output.shape == (steps, batch, 4)
    assert sum(int(c.sum()) for c in together.counts) > 0, "the test network must spike"
    for b in range(batch):
        alone = run_lava_sim(dep, x[:, b:b + 1])
        np.testing.assert_array_equal(together.output[:, b], alone.output[:, 0],
                                      err_msg=f"sample {b}: batched run differs from a fresh run")
        for layer, (c_all, c_one) in enumerate(zip(together.counts, alone.counts)):
            np.testing.assert_array_equal(c_all[b], c_one[0], err_msg=f"layer {layer}, sample {b}")


def test_lava_timing_and_values_track_the_float_graph():
    """Same time alignment as the float chain: the output spike trains nearly coincide."""
    network = _random_network([16, 12, 5], seed=3)
    x = (np.random.default_rng(4).random((20, 6, 16)) < 0.3).astype(np.float32)
    float_out = run_float(network, torch.from_numpy(x))
    peaks = list(float_out.u_peaks)
    dep = quantize_network(network, load_profile("loihi2"), graded_input=False, u_peaks=peaks,
                           source_sha256="", source_nir=b"", calibration="test input")
    lava_out = run_lava_sim(dep, x)
    agreement = (lava_out.output == float_out.recording.output).mean()
    assert float_out.recording.output.sum() > 10
    assert agreement > 0.97, f"only {agreement:.3f} of output spike slots agree"
    shifted = (lava_out.output[1:] == float_out.recording.output[:-1]).mean()
    assert agreement > shifted, "lava-sim output is misaligned by one step"


def test_trained_model_accuracy_matches_float(small_model_files, digits):
    from snn_deploy.evaluate.accuracy import evaluate_target

    target = load_target(small_model_files["deployment"])
    fl = evaluate_target(target, digits, backend="float", limit=60, seed=2)
    lv = evaluate_target(target, digits, backend="lava-sim", limit=60, seed=2)
    assert fl.n == lv.n == 60
    assert abs(fl.accuracy - lv.accuracy) <= 0.05
    assert (fl.predictions == lv.predictions).mean() >= 0.9
    assert lv.activity.spikes_per_sample > 0 and lv.activity.synops_per_sample > 0


def test_runtime_is_stopped_when_a_run_fails():
    dep = _deploy(_random_network([6, 4, 3], seed=5))
    x = np.ones((4, 8, 6), dtype=np.float32)

    def explode(done, total):
        raise RuntimeError("stop here")

    with pytest.raises(RuntimeError, match="stop here"):
        run_lava_sim(dep, x, on_progress=explode)
    assert multiprocessing.active_children() == []
    # and Lava still works afterwards
    assert run_lava_sim(dep, x[:, :1]).output.shape == (4, 1, 3)


def test_spike_recorder_equals_lavas_ringbuffer_sink(tmp_path):
    """Our recorder (a workaround for Lava's element-by-element Var.get) records what Lava's sink does."""
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.io.sink import RingBuffer as Sink
    from lava.proc.io.source import RingBuffer as Source
    from lava.proc.lif.process import LIF
    from snn_deploy.run.lava_probes.recorder import SpikeRecorder, create_record_file

    steps = 25
    rng = np.random.default_rng(7)
    source = Source(data=rng.integers(0, 3, size=(5, steps)).astype(np.int32))
    lif = LIF(shape=(5,), du=100, dv=200, vth=1)
    source.s_out.connect(lif.a_in)
    sink = Sink(shape=(5,), buffer=steps)
    path = tmp_path / "rec.npy"
    create_record_file(path, steps=steps, width=5)
    lif.s_out.connect(sink.a_in)
    lif.s_out.connect(SpikeRecorder(shape=(5,), path=str(path)).a_in)
    try:
        source.run(condition=RunSteps(num_steps=steps), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
        expected = np.asarray(sink.data.get()).T
    finally:
        source.stop()
    recorded = np.load(path)
    assert expected.sum() > 0
    np.testing.assert_array_equal(recorded, expected != 0)


def test_a_twenty_layer_deployment_runs_on_lava_as_on_the_emulator():
    """Load: 20 layers (61 Lava processes) in one run, several samples; the spikes must reach
    the last layer, and every layer must equal the emulator's."""
    from snn_deploy.run.emulator import run_emulator

    network = random_network([6] + [5] * 20, seed=4, mean=1.0)
    dep = _deploy(network)
    x = (np.random.default_rng(2).random((30, 3, 6)) < 0.6).astype(np.float32)
    lava = run_lava_sim(dep, x)
    emu = run_emulator(dep, x)
    assert len(lava.counts) == 20 and lava.counts[-1].sum() > 0, "spikes must reach layer 20"
    np.testing.assert_array_equal(lava.output, emu.output)
    for k, (a, b) in enumerate(zip(lava.counts, emu.counts)):
        np.testing.assert_array_equal(a, b, err_msg=f"layer {k + 1}")
