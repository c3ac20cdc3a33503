"""Energy per inference: exact counts on a hand-checked network, then priced with each profile.

The tiny network below is built so that every spike can be derived by hand: du = dv = 4095 clear
u and v every step, vth = 1 (threshold 64) and weights of 254 (u = 254 << 6 on input), so a neuron
spikes exactly on the steps on which any of its non-zero synapses delivers a spike, and never
otherwise. The output neuron's self-loop (-2, inhibitory) never cancels a feed-forward 254, and
alone it only pushes v below zero, so it changes no spike but does count as synaptic operations.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from snn_deploy.coding import Coding
from snn_deploy.data import Split
from snn_deploy.evaluate.accuracy import encoded_batches, evaluate_target
from snn_deploy.evaluate.counts import activity
from snn_deploy.evaluate.energy import Energy, price
from snn_deploy.evaluate.report import evaluation_report
from snn_deploy.profiles import load_profile, parse_profile
from snn_deploy.quantize.deployment import (
    Deployment,
    LayerStats,
    QuantLayer,
    RecurrentSynapse,
    save_deployment,
)
from snn_deploy.run.emulator import run_emulator
from snn_deploy.targets import NirGraph, Target, load_target

from tests.factories import random_network

NO_STATS = LayerStats(weights_total=0, weights_saturated=0, threshold_saturated=False,
                      bias_saturated=0, u_peak_share=0.0)
STEPS = 4
# Davies et al. 2018, Table 2, as the loihi1 profile states them (pJ)
SYNOP_PJ, UPDATE_PJ, SPIKE_PJ = 23.6, 81.0, 1.7


def _layer(name: str, weights, recurrent: RecurrentSynapse | None = None) -> QuantLayer:
    w = np.array(weights, np.int32)
    n = w.shape[0]
    return QuantLayer(synapse=f"fc_{name}", neuron=name, weights=w, weight_exp=0,
                      sign_mode="mixed", num_weight_bits=8, num_message_bits=0, du=4095, dv=4095,
                      vth=1, bias_mant=np.zeros(n, np.int32), bias_exp=np.zeros(n, np.int32),
                      scale=1.0, stats=NO_STATS, recurrent=recurrent)


def tiny_deployment(profile: str = "loihi1") -> Deployment:
    """2 inputs -> 2 neurons (a) -> 1 neuron (b) with a self-loop.

    a0 listens to input 0; a1 to inputs 0 and 1; b to a0 only (a1's weight into b is 0).
    """
    loop = RecurrentSynapse(weights=np.array([[-2]], np.int32), weight_exp=0,
                            sign_mode="inhibitory", num_weight_bits=8)
    return Deployment(profile=load_profile(profile),
                      layers=(_layer("a", [[254, 0], [254, 254]]), _layer("b", [[254, 0]], loop)),
                      input_size=2, input_scale=1, dt=1e-3,
                      coding=Coding.of(encoding="rate", steps=STEPS), source_sha256="",
                      source_nir=b"", calibration="none")


def tiny_input() -> np.ndarray:
    """(T=4, B=2, 2) spikes. Sample 0: input 0 on steps 0, 2, 3; input 1 on 1, 2.
    Sample 1: input 0 on step 3; input 1 on 0, 1."""
    x = np.zeros((STEPS, 2, 2), np.float32)
    x[:, 0, 0], x[:, 0, 1] = [1, 0, 1, 1], [0, 1, 1, 0]
    x[:, 1, 0], x[:, 1, 1] = [0, 0, 0, 1], [1, 1, 0, 0]
    return x


# Derived by hand from the docstrings above, per sample (sample 0, sample 1):
#   a0 spikes = events of input 0: 3, 1; a1 spikes = steps with any input: 4, 3; b = a0: 3, 1
#   synops into a = events(in0) x 2 + events(in1) x 1 = 3*2 + 2*1 = 8, 1*2 + 2*1 = 4
#   synops into b = a0 spikes x 1 (+ a1 x 0) + b spikes x 1 (self-loop) = 3 + 3 = 6, 1 + 1 = 2
HAND_COUNTS = ([[3, 4], [1, 3]], [[3], [1]])
HAND_SYNOPS = (6.0, 4.0)  # means over the two samples: (8 + 4) / 2, (6 + 2) / 2
HAND_SPIKES = (5.5, 2.0)  # (7 + 4) / 2, (3 + 1) / 2
HAND_UPDATES = (2.0 * STEPS, 1.0 * STEPS)  # neurons x steps
HAND_NJ = tuple(1e-3 * (s * SYNOP_PJ + u * UPDATE_PJ + k * SPIKE_PJ)
                for s, u, k in zip(HAND_SYNOPS, HAND_UPDATES, HAND_SPIKES))


def hand_activity(x: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-layer (spikes, synops) per sample of ``tiny_deployment`` on (T, B, 2) input spikes, by
    the rule of the module docstring: a neuron spikes on exactly the steps on which one of its
    non-zero synapses delivers a spike."""
    in0, in1 = x[..., 0] != 0, x[..., 1] != 0
    a0, a1 = in0, in0 | in1
    b = a0
    count = lambda s: s.sum(axis=0)  # noqa: E731  (per sample)
    spikes = (float((count(a0) + count(a1)).mean()), float(count(b).mean()))
    synops = (float((2 * count(in0) + count(in1)).mean()), float((count(a0) + count(b)).mean()))
    return spikes, synops


def _tiny_activity(dep: Deployment, recording):
    x = tiny_input()
    events = (x != 0).sum(axis=0).astype(np.int64)
    return activity(recording, events, [layer.weights for layer in dep.layers],
                    [None if layer.recurrent is None else layer.recurrent.weights
                     for layer in dep.layers], steps=STEPS)


def test_counts_on_the_emulator_match_the_hand_derivation():
    dep = tiny_deployment()
    recording = run_emulator(dep, tiny_input())
    for got, want in zip(recording.counts, HAND_COUNTS):
        np.testing.assert_array_equal(got, np.array(want), err_msg="spikes differ from the hand count")
    act = _tiny_activity(dep, recording)
    assert hand_activity(tiny_input()) == (HAND_SPIKES, HAND_SYNOPS)  # the rule, as derived above
    assert act.layer_spikes_per_sample == HAND_SPIKES
    assert act.layer_synops_per_sample == HAND_SYNOPS
    assert act.layer_updates_per_sample == HAND_UPDATES
    assert act.synops_per_sample == sum(HAND_SYNOPS) == sum(act.layer_synops_per_sample)
    assert act.spikes_per_sample == sum(HAND_SPIKES)


@pytest.mark.slow
def test_lava_sim_gives_the_same_counts_for_a_loihi1_deployment():
    """loihi1 uses Lava's fixed-point arithmetic: Lava itself spikes as derived by hand."""
    from snn_deploy.run.lava_sim import run_lava_sim

    recording = run_lava_sim(tiny_deployment(), tiny_input())
    for got, want in zip(recording.counts, HAND_COUNTS):
        np.testing.assert_array_equal(got, np.array(want))


@pytest.mark.parametrize("name, basis", [("loihi1", "simulated"), ("loihi2", "proxy"),
                                         ("loihi2-netx", "proxy")])
def test_price_by_hand(name, basis):
    dep = tiny_deployment()
    act = _tiny_activity(dep, run_emulator(dep, tiny_input()))
    energy = price(act, load_profile(name))
    assert isinstance(energy, Energy)
    assert energy.basis == basis and energy.profile == name
    assert "Davies" in energy.source and "Table 2" in energy.source
    assert energy.layers_nj == pytest.approx(HAND_NJ, rel=1e-12)
    assert energy.per_sample_nj == pytest.approx(sum(HAND_NJ), rel=1e-12)
    as_dict = json.loads(json.dumps(energy.as_dict()))
    assert as_dict == {"energy_per_sample_nj": energy.per_sample_nj, "energy_basis": basis,
                       "energy_profile": name, "energy_source": energy.source,
                       "layers": list(energy.layers_nj)}


def test_a_profile_without_energy_prices_nothing():
    text = load_profile("loihi2").toml_text
    bare = parse_profile(text[:text.index("[energy]")])
    dep = tiny_deployment()
    assert price(_tiny_activity(dep, run_emulator(dep, tiny_input())), bare) is None


def _tiny_split(n: int = 12) -> Split:
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.random((n, 2)).astype(np.float32))
    y = torch.from_numpy(rng.integers(0, 1, n).astype(np.int64))
    return Split(name="tiny", x_train=x, y_train=y, x_test=x, y_test=y, input_shape=(2,),
                 n_classes=1)


def _check_layers_add_up(report: dict) -> None:
    layers = report["layers"]
    assert sum(layer["spikes_per_sample"] for layer in layers) == pytest.approx(
        report["spikes_per_sample"])
    assert sum(layer["synops_per_sample"] for layer in layers) == pytest.approx(
        report["synops_per_sample"])
    for layer in layers:
        assert layer["neuron_updates_per_sample"] == layer["neurons"] * report["steps"]
    if report["energy_per_sample_nj"] is None:
        assert all(layer["energy_nj"] is None for layer in layers)
        return
    assert sum(layer["energy_nj"] for layer in layers) == pytest.approx(
        report["energy_per_sample_nj"])
    for layer in layers:
        pj = (layer["synops_per_sample"] * SYNOP_PJ + layer["neuron_updates_per_sample"] * UPDATE_PJ
              + layer["spikes_per_sample"] * SPIKE_PJ)
        assert layer["energy_nj"] == pytest.approx(pj * 1e-3)


def test_evaluate_reports_energy_with_the_deployments_profile_or_the_given_one(tmp_path: Path):
    path = tmp_path / "tiny.deploy.h5"
    save_deployment(tiny_deployment("loihi1"), path)
    target = load_target(path)
    split = _tiny_split()
    ev = evaluate_target(target, split, backend="emulator", seed=3)
    spikes = torch.cat(list(encoded_batches(split.x_test, encoding="rate", steps=STEPS, seed=3)),
                       dim=1).numpy()
    hand_spikes, hand_synops = hand_activity(spikes)
    assert sum(hand_synops) > 0, "the rate-coded input should cause some activity"
    assert ev.activity.layer_spikes_per_sample == pytest.approx(hand_spikes, rel=1e-12)
    assert ev.activity.layer_synops_per_sample == pytest.approx(hand_synops, rel=1e-12)

    own = json.loads(json.dumps(evaluation_report(ev, target=target, dataset="tiny")))
    assert own["energy_basis"] == "simulated" and own["energy_profile"] == "loihi1"
    assert "Davies" in own["energy_source"]
    assert own["profile"] == "loihi1"
    assert np.isfinite(own["energy_per_sample_nj"]) and own["energy_per_sample_nj"] > 0
    _check_layers_add_up(own)

    proxy = evaluation_report(ev, target=target, dataset="tiny",
                              energy_profile=load_profile("loihi2"))
    assert proxy["energy_basis"] == "proxy" and proxy["energy_profile"] == "loihi2"
    assert proxy["profile"] == "loihi1", "the override prices the counts; the deployment stays"
    # the loihi2 proxy uses the Loihi 1 constants: the same numbers, labelled differently
    assert proxy["energy_per_sample_nj"] == pytest.approx(own["energy_per_sample_nj"])
    _check_layers_add_up(proxy)


def test_float_backend_has_no_energy_unless_a_profile_is_given():
    net = random_network([2, 3, 2], seed=0, steps=STEPS)
    target = Target(path=Path("net.nir"), sha256="", model=NirGraph(net))
    ev = evaluate_target(target, _tiny_split(), backend="float", seed=0)
    plain = evaluation_report(ev, target=target, dataset="tiny")
    assert plain["energy_per_sample_nj"] is None and plain["energy_basis"] is None
    assert plain["energy_profile"] is None and plain["energy_source"] is None
    _check_layers_add_up(plain)
    priced = evaluation_report(ev, target=target, dataset="tiny",
                               energy_profile=load_profile("loihi1"))
    assert priced["energy_basis"] == "simulated" and priced["energy_per_sample_nj"] > 0
    # every neuron is updated on every step, so energy is positive even without a spike
    assert priced["energy_per_sample_nj"] >= 1e-3 * UPDATE_PJ * (3 + 2) * STEPS
    _check_layers_add_up(priced)


def test_activity_refuses_a_step_count_below_one():
    dep = tiny_deployment()
    recording = run_emulator(dep, tiny_input())
    with pytest.raises(ValueError, match="steps must be >= 1, got 0"):
        activity(recording, np.zeros((2, 2), np.int64), [layer.weights for layer in dep.layers],
                 steps=0)
