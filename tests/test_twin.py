"""The differentiable twin: the emulator's forward, bit for bit, and gradients that point the right way."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from snn_deploy.errors import UserError
from snn_deploy.run.emulator import run_layers
from snn_deploy.run.twin import SURROGATES, EmulatorTwin
from snn_deploy.targets import load_target

from tests.factories import deployments


def _same_forward(dep, x: np.ndarray) -> None:
    traces = run_layers(dep, torch.from_numpy(x))
    twin = EmulatorTwin(dep)(torch.from_numpy(x))
    for k, (trace, spikes) in enumerate(zip(traces, twin.layers)):
        bad = np.argwhere(trace.spikes.numpy() != (spikes.detach().numpy() > 0))
        assert len(bad) == 0, f"layer {k}: {len(bad)} spikes differ, first {bad[:3].tolist()}"


@settings(max_examples=60, deadline=None)
@given(deployments())
def test_twin_forward_equals_the_emulator_on_random_networks(case):
    dep, x = case
    _same_forward(dep, x)


def test_twin_forward_equals_the_emulator_on_the_trained_model(small_model_files, digits):
    from snn_deploy.coding import encode

    dep = load_target(small_model_files["deployment"]).deployment
    x = encode(digits.x_test[:40], encoding="rate", steps=12, seed=2).numpy()
    _same_forward(dep, x)


@pytest.mark.parametrize("surrogate", sorted(SURROGATES))
def test_gradients_reach_input_and_thresholds(small_model_files, digits, surrogate):
    dep = load_target(small_model_files["deployment"]).deployment
    twin = EmulatorTwin(dep, surrogate=surrogate, width=0.5)
    x = digits.x_test[:16].repeat(12, 1, 1).clone().requires_grad_(True)  # direct-style values
    x_spikes = (torch.rand(x.shape, generator=torch.Generator().manual_seed(0)) < x).to(x.dtype)
    x_in = x_spikes + (x - x.detach())  # straight-through rate coding, for the input gradient
    count = twin(x_in).output.sum()
    count.backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(torch.isfinite(t.grad) for t in twin.vth)
    # a higher output threshold means fewer output spikes: d(count)/d(vth) < 0
    assert float(twin.vth[-1].grad) < 0


def test_quantized_parameters_stay_on_the_profile_grid(small_model_files):
    dep = load_target(small_model_files["deployment"]).deployment
    twin = EmulatorTwin(dep)
    with torch.no_grad():
        twin.weights[0].add_(0.7)
        twin.vth[0].fill_(1e9)
    q = twin.quantized()
    assert q[0]["vth"] == dep.profile.vth_max
    assert np.all(q[0]["weights"] % 2 == 0) and q[0]["weights"].max() <= 254
    np.testing.assert_array_equal(q[1]["weights"], dep.layers[1].weights)


def test_bad_surrogate_settings():
    with pytest.raises(UserError, match="unknown surrogate"):
        EmulatorTwin.__init__(EmulatorTwin.__new__(EmulatorTwin), None, surrogate="nope")
