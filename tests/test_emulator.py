"""The emulator against Lava's fixed-point models: spike for spike and state for state.

Lava runs the same process graph as the lava-sim backend (all samples in one run, staggered
LIFReset), with Monitors on every LIF's u and v. Layer l's local step k of sample b is Lava's
global step b*T + l + k.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from snn_deploy.coding import Coding
from snn_deploy.quantize.deployment import (
    Deployment,
    QuantLayer,
    RecurrentSynapse,
)
from snn_deploy.run.emulator import input_levels, run_emulator, run_layers
from snn_deploy.run.lava_sim import build_graph, execute, input_to_lava, run_lava_sim, to_recording
from snn_deploy.targets import load_target

from tests.factories import NO_STATS, PROFILE, assert_states_equal_lava, deployments

pytestmark = pytest.mark.slow


def assert_equal_to_lava(dep: Deployment, x: np.ndarray) -> int:
    """Every layer's spikes, u and v at every step of every sample, for both step loops, against
    one Lava run (``factories.assert_states_equal_lava``); the kernel's own spike counts agree
    with its spikes; returns #spikes."""
    traces = assert_states_equal_lava(dep, x)
    for trace in traces:
        np.testing.assert_array_equal(trace.spike_counts().numpy(), trace.spikes.sum(0).numpy())
    return sum(int(t.spikes.sum()) for t in traces)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(deployments())
def test_emulator_equals_lava_on_random_networks(case):
    dep, x = case
    assert_equal_to_lava(dep, x)


def test_emulator_equals_lava_state_for_state_on_a_busy_network():
    """A hand-made case that surely spikes, wraps u and saturates v."""
    rng = np.random.default_rng(0)
    layers = (
        QuantLayer(synapse="a", neuron="A", weights=rng.integers(-300, 300, (7, 5)).astype(np.int32),
                   weight_exp=7, sign_mode="mixed", num_weight_bits=8, num_message_bits=0, du=0,
                   dv=0, vth=60000, bias_mant=np.full(7, 4000, np.int32),
                   bias_exp=np.full(7, 7, np.int32), scale=1.0, stats=NO_STATS),
        QuantLayer(synapse="b", neuron="B", weights=rng.integers(0, 255, (4, 7)).astype(np.int32),
                   weight_exp=-2, sign_mode="excitatory", num_weight_bits=6, num_message_bits=0,
                   du=409, dv=2000, vth=10, bias_mant=np.zeros(4, np.int32),
                   bias_exp=np.zeros(4, np.int32), scale=1.0, stats=NO_STATS),
    )
    dep = Deployment(profile=PROFILE, layers=layers, input_size=5, input_scale=1, dt=1e-3,
                     coding=Coding(), source_sha256="", source_nir=b"", calibration="")
    x = (rng.random((12, 3, 5)) < 0.7).astype(np.float32)
    assert assert_equal_to_lava(dep, x) > 20
    traces = run_layers(dep, torch.from_numpy(x), record_state=True)
    assert traces[0].u.abs().max() > 2**22, "this case should drive u near its 24-bit range"


def test_emulator_equals_lava_sim_on_the_trained_model(small_model_files, digits):
    from snn_deploy.coding import encode

    dep = load_target(small_model_files["deployment"]).deployment
    x = encode(digits.x_test[:24], encoding="rate", steps=12, seed=3).numpy()
    assert assert_equal_to_lava(dep, x) > 0
    emu, lava = run_emulator(dep, x), run_lava_sim(dep, x)
    np.testing.assert_array_equal(emu.output, lava.output)
    for a, b in zip(emu.counts, lava.counts):
        np.testing.assert_array_equal(a, b)


def test_threaded_chunks_equal_one_thread_and_leave_the_callers_threads_alone(small_model_files):
    """Chunks on the worker pool give the one-thread result; every worker keeps one intra-op
    thread and the caller keeps its count. A worker that took the caller's count back (torch's
    lazy per-thread initialisation after set_num_threads) oversubscribed the cores and left the
    caller's torch ops 4-5x slower (run/workers.py, _one_intra_op_thread)."""
    from snn_deploy.run import emulator
    from snn_deploy.run.workers import worker_pool

    dep = load_target(small_model_files["deployment"]).deployment
    x = torch.from_numpy(np.random.default_rng(2).random((16, 3 * emulator.CHUNK + 5, 64)) < 0.3)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        alone = emulator.Emulator(dep).run(x)
        torch.set_num_threads(2)
        pooled = emulator.Emulator(dep).run(x)
        assert torch.get_num_threads() == 2
        workers = worker_pool(2)
        assert [workers.submit(torch.get_num_threads).result() for _ in range(4)] == [1] * 4
    finally:
        torch.set_num_threads(threads)
    assert pooled.output.sum() > 0
    np.testing.assert_array_equal(pooled.output, alone.output)
    for a, b in zip(pooled.counts, alone.counts, strict=True):
        np.testing.assert_array_equal(a, b)


def test_emulator_equals_lava_on_a_network_made_by_lava_dl():
    """lava-dl's own trained mnist.net (its dense part), imported through netx."""
    import lava.lib.dl.netx as netx_pkg
    from snn_deploy.quantize.netx_read import read_netx

    site = Path(netx_pkg.__file__).parents[4]  # site-packages
    found = sorted(site.glob("tests/lava/lib/dl/netx/mnist.net"))
    if not found:
        pytest.skip("lava-dl's wheel ships no tests/lava/lib/dl/netx/mnist.net here")
    dep = read_netx(found[0], profile=PROFILE, skip_layers=1, num_layers=3)
    x = (np.random.default_rng(5).random((10, 2, dep.input_size)) < 0.15).astype(np.float32)
    assert assert_equal_to_lava(dep, x) > 100


def test_emulator_equals_lava_when_u_leaves_the_24_bit_range():
    """Lava folds u once, not modulo 2**24: strong graded input drives u far beyond 24 bits and
    the int32 sums for u and v wrap around. Found by hypothesis against the twin."""
    layer = QuantLayer(
        synapse="a", neuron="A", weights=np.array([[-256, 0, 0, 0, -256, 0]], np.int32),
        weight_exp=7, sign_mode="mixed", num_weight_bits=8, num_message_bits=8, du=0, dv=0, vth=0,
        bias_mant=np.zeros(1, np.int32), bias_exp=np.zeros(1, np.int32), scale=1.0, stats=NO_STATS)
    dep = Deployment(profile=PROFILE, layers=(layer,), input_size=6, input_scale=255, dt=1e-3,
                     coding=Coding(), source_sha256="", source_nir=b"", calibration="")
    x = np.random.default_rng(3).random((8, 2, 6)).astype(np.float32)
    assert_equal_to_lava(dep, x)
    traces = run_layers(dep, torch.from_numpy(x), record_state=True)
    assert traces[0].u.abs().max() > 2**30


def _recurrent_deployment(rng) -> Deployment:
    hidden = QuantLayer(
        synapse="a", neuron="A", weights=rng.integers(-100, 250, (6, 4)).astype(np.int32),
        weight_exp=1, sign_mode="mixed", num_weight_bits=8, num_message_bits=0, du=800, dv=600,
        vth=300, bias_mant=np.array([0, 0, 0, 0, 400, 400], np.int32),
        bias_exp=np.full(6, 6, np.int32), scale=1.0, stats=NO_STATS,
        recurrent=RecurrentSynapse(weights=rng.integers(-256, 255, (6, 6)).astype(np.int32),
                                   weight_exp=2, sign_mode="mixed", num_weight_bits=8))
    out = QuantLayer(
        synapse="b", neuron="B", weights=rng.integers(0, 200, (3, 6)).astype(np.int32),
        weight_exp=0, sign_mode="excitatory", num_weight_bits=8, num_message_bits=0, du=400,
        dv=400, vth=200, bias_mant=np.zeros(3, np.int32), bias_exp=np.zeros(3, np.int32),
        scale=1.0, stats=NO_STATS,
        recurrent=RecurrentSynapse(weights=np.full((3, 3), 120, np.int32), weight_exp=1,
                                   sign_mode="excitatory", num_weight_bits=8))
    return Deployment(profile=PROFILE, layers=(hidden, out), input_size=4, input_scale=1, dt=1e-3,
                      coding=Coding(), source_sha256="", source_nir=b"", calibration="")


@pytest.mark.parametrize("steps", [1, 2, 3])
def test_recurrent_layers_start_from_rest_with_short_samples_on_lava(steps):
    """With T <= depth, LIFReset also fires before a layer's first window (found by hypothesis):
    here the last layer's bias alone reaches threshold before its first window, and those spikes
    must not reach sample 0 through the recurrent synapse."""
    def layer(name, n_in, n, *, bias=0, vth=1000, rec=None):
        return QuantLayer(
            synapse=name, neuron=name.upper(), weights=np.zeros((n, n_in), np.int32), weight_exp=0,
            sign_mode="mixed", num_weight_bits=8, num_message_bits=0, du=100, dv=0, vth=vth,
            bias_mant=np.full(n, bias, np.int32), bias_exp=np.full(n, 6, np.int32), scale=1.0,
            stats=NO_STATS, recurrent=rec)
    loop = RecurrentSynapse(weights=np.array([[0, 200], [200, 0]], np.int32), weight_exp=3,
                            sign_mode="excitatory", num_weight_bits=8)
    dep = Deployment(profile=PROFILE, layers=(layer("a", 3, 3), layer("b", 3, 3),
                                              layer("c", 3, 2, bias=100, vth=150, rec=loop)),
                     input_size=3, input_scale=1, dt=1e-3, coding=Coding(), source_sha256="",
                     source_nir=b"", calibration="")
    x = np.zeros((steps, 3, 3), np.float32)
    assert_equal_to_lava(dep, x)


def test_recurrent_samples_start_from_rest_on_lava():
    """Samples whose last step spikes are followed by others: Lava (its recurrent buffers emptied
    between samples) and the emulator agree state for state, and equal one run per sample."""
    rng = np.random.default_rng(11)
    dep = _recurrent_deployment(rng)
    x = (rng.random((5, 6, 4)) < 0.5).astype(np.float32)
    assert assert_equal_to_lava(dep, x) > 10
    traces = run_layers(dep, torch.from_numpy(x))
    assert traces[0].spikes[-1, :-1].any(), "some sample should end on a spike"
    assert traces[0].spikes[:, :, 4:].any(), "the bias should drive the last neurons"
    lava = run_lava_sim(dep, x)
    one_by_one = np.concatenate([run_lava_sim(dep, x[:, b:b + 1]).output for b in range(6)],
                                axis=1)
    np.testing.assert_array_equal(lava.output, one_by_one)
    np.testing.assert_array_equal(traces[-1].spikes.numpy().astype(np.uint8), one_by_one)
    # without the pauses, Lava carries each sample's last spikes into the next one
    with tempfile.TemporaryDirectory() as tmp:
        graph = build_graph(dep, input_to_lava(dep, x), steps=5, record_dir=Path(tmp))
        assert graph.loops and graph.pauses()
        carried = to_recording(dep, execute(dataclasses.replace(graph, loops=())), steps=5,
                               batch=6)
    assert not np.array_equal(carried.output, one_by_one)


def test_graded_levels_round_as_lava_does():
    """Lava's source gets rint(float64(x) * 255); in float32 0.9 * 255 rounds onto 229.5 and
    then to 230 (found by attacks on direct-coded models). The emulator must give 229."""
    layer = QuantLayer(
        synapse="a", neuron="A", weights=np.full((2, 3), 7, np.int32), weight_exp=0,
        sign_mode="mixed", num_weight_bits=8, num_message_bits=8, du=100, dv=100, vth=40,
        bias_mant=np.zeros(2, np.int32), bias_exp=np.zeros(2, np.int32), scale=1.0, stats=NO_STATS)
    dep = Deployment(profile=PROFILE, layers=(layer,), input_size=3, input_scale=255, dt=1e-3,
                     coding=Coding(), source_sha256="", source_nir=b"", calibration="")
    x = np.full((6, 2, 3), 0.9, np.float32)
    np.testing.assert_array_equal(input_levels(dep, torch.from_numpy(x))[0, 0].numpy(),
                                  input_to_lava(dep, x)[:, 0])
    assert input_to_lava(dep, x)[0, 0] == 229
    assert_equal_to_lava(dep, x)
