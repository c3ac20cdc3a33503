"""The differentiable twin on native conv layers and on dense layers with synaptic delays: the
emulator's forward, bit for bit, and gradients that reach the input through the conv."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from snn_deploy.attack.sources import make_source
from snn_deploy.errors import UserError
from snn_deploy.run.emulator import run_layers
from snn_deploy.run.twin import EmulatorTwin
from snn_deploy.targets import DeploymentFile, Target

from tests.factories import conv_geometry, deployments, layer_deployment, native_layer


def _conv_net(seed: int, *, scale: int = 2):
    """conv (groups 2, stride (2, 1), padding (1, 0), dilation (1, 2)) -> conv -> dense."""
    rng = np.random.default_rng(seed)
    g0 = conv_geometry((2, 9, 8), 4, (3, 3), stride=(2, 1), padding=(1, 0), dilation=(1, 2),
                       groups=2)
    g1 = conv_geometry(g0.out_shape, 4, (2, 2), padding=(1, 1), groups=2)
    n0, n1 = int(np.prod(g0.out_shape)), int(np.prod(g1.out_shape))
    c0 = native_layer("c0", rng.integers(-64, 64, (4, 1, 3, 3)) * scale, conv=g0,
                      bias_mant=rng.integers(-8, 12, n0))
    c1 = native_layer("c1", rng.integers(-64, 64, (4, 2, 2, 2)) * scale, conv=g1,
                      bias_mant=rng.integers(-8, 12, n1))
    fc = native_layer("fc", rng.integers(-40, 40, (5, n1)) * 2, bias_mant=rng.integers(-2, 6, 5),
                      vth=30)
    return layer_deployment([c0, c1, fc], int(np.prod(g0.in_shape)))


def _spikes(dep, steps: int, batch: int, seed: int, rate: float = 0.4) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(steps, batch, dep.input_size, generator=gen) < rate).to(torch.float32)


def _same_forward(dep, x: torch.Tensor) -> None:
    traces = run_layers(dep, x)
    twin = EmulatorTwin(dep)(x)
    for k, (trace, spikes) in enumerate(zip(traces, twin.layers)):
        bad = np.argwhere(trace.spikes.numpy() != (spikes.detach().numpy() > 0))
        assert len(bad) == 0, f"layer {k}: {len(bad)} spikes differ, first {bad[:3].tolist()}"
    assert all(int(t.spikes.sum()) > 0 for t in traces)  # every layer spikes: a real comparison


@pytest.mark.parametrize("seed", range(5))
def test_twin_forward_equals_the_emulator_on_conv_networks(seed):
    dep = _conv_net(seed)
    _same_forward(dep, _spikes(dep, 12, 6, seed))


def test_twin_forward_equals_the_emulator_through_the_24_bit_wrap():
    """Weights at the clip range and graded input levels up to 2**16: the conv sums pass 2**23
    and wrap, in the twin as in the emulator."""
    dep = dataclasses.replace(_conv_net(7), input_scale=1 << 16)
    gen = torch.Generator().manual_seed(7)
    x = torch.rand(8, 4, dep.input_size, generator=gen)
    traces = run_layers(dep, x)
    twin = EmulatorTwin(dep)(x)
    for trace, spikes in zip(traces, twin.layers):
        assert torch.equal(trace.spikes, spikes.detach() > 0)


def test_conv_gradients_reach_the_input_and_an_attack_step_moves_it():
    dep = _conv_net(3)
    twin = EmulatorTwin(dep).requires_grad_(False)
    x = _spikes(dep, 12, 4, 3).requires_grad_(True)
    twin(x).output.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    # one PGD step (L_inf, eps 0.3) on the output spike count, through the twin
    x_adv = torch.clamp(x.detach() + 0.3 * x.grad.sign(), 0.0, 1.0)
    assert not torch.equal(x_adv, x.detach())


@pytest.mark.parametrize("kind", ["twin", "bptr"])
def test_gradient_sources_attack_conv_deployments(kind):
    """A PGD step with the twin (or backpropagation-through-rates) source on the deployed
    decoder's logits: the exact logits forward, a gradient that moves the input."""
    dep = _conv_net(2)
    source = make_source(kind, Target(Path("conv.deploy.h5"), "", DeploymentFile(dep, None)))
    x = _spikes(dep, 12, 4, 2)
    exact = run_layers(dep, x)[-1].spikes.sum(dim=0).to(torch.float32)  # spike_count decoder
    xg = x.clone().requires_grad_(True)
    z = source.spike_logits(xg)
    torch.testing.assert_close(z.detach(), exact, rtol=0, atol=1e-5)
    y = z.detach().argmax(dim=1)
    (g,) = torch.autograd.grad(torch.nn.functional.cross_entropy(z, y), xg)
    assert torch.isfinite(g).all() and float(g.abs().sum()) > 0
    x_adv = torch.clamp(x + 0.3 * g.sign(), 0.0, 1.0)
    assert not torch.equal(x_adv, x)


def test_conv_weights_are_parameters_with_gradients_and_quantize_in_the_clip_range():
    dep = _conv_net(4)
    twin = EmulatorTwin(dep)
    twin(_spikes(dep, 12, 4, 4)).output.sum().backward()
    assert twin.weights[0].shape == (4, 1, 3, 3) and twin.weights[1].shape == (4, 2, 2, 2)
    assert all(torch.isfinite(w.grad).all() and w.grad.abs().sum() > 0 for w in twin.weights)
    with torch.no_grad():
        twin.weights[0].add_(0.4)
        twin.weights[1].mul_(10.0)
    q = twin.quantized()
    np.testing.assert_array_equal(q[0]["weights"], dep.layers[0].weights)  # rounded back
    assert q[1]["weights"].shape == (4, 2, 2, 2)
    assert q[1]["weights"].max() == 255 and q[1]["weights"].min() == -256  # the mixed clip range
    assert q[1]["weights"].dtype == np.int32


def test_twin_forward_equals_the_emulator_with_delays():
    rng = np.random.default_rng(5)
    sizes, layers = (5, 6, 4), []
    for i, (n_in, n) in enumerate(zip(sizes[:-1], sizes[1:])):
        layer = native_layer(f"lif{i}", rng.integers(-120, 128, (n, n_in)) * 2,
                             bias_mant=rng.integers(-2, 6, n), vth=30 + 10 * i)
        layers.append(dataclasses.replace(layer, delays=rng.integers(0, 12, n).astype(np.int32)))
    dep = layer_deployment(layers, sizes[0])
    x = torch.from_numpy((np.random.default_rng(6).random((16, 3, 5)) < 0.5).astype(np.float32))
    _same_forward(dep, x)
    # and after a conv: the delays of a dense layer behind one
    conv = _conv_net(1)
    fc = conv.layers[-1]
    delays = np.random.default_rng(8).integers(0, 5, fc.size).astype(np.int32)
    conv = dataclasses.replace(conv, layers=(*conv.layers[:-1], dataclasses.replace(fc, delays=delays)))
    _same_forward(conv, _spikes(conv, 14, 4, 1))


@settings(max_examples=30, deadline=None)
@given(deployments(), st.integers(0, 2**32 - 1))
def test_twin_forward_equals_the_emulator_with_delays_on_random_networks(case, seed):
    """Random dense networks (recurrent synapses, graded input, exponents, sign modes) with
    random delays on every layer."""
    dep, x = case
    rng = np.random.default_rng(seed)
    layers = tuple(dataclasses.replace(layer, delays=rng.integers(0, 4, layer.size).astype(np.int32))
                   for layer in dep.layers)
    dep = dataclasses.replace(dep, layers=layers)
    traces = run_layers(dep, torch.from_numpy(x))
    twin = EmulatorTwin(dep)(torch.from_numpy(x))
    for trace, spikes in zip(traces, twin.layers):
        assert torch.equal(trace.spikes, spikes.detach() > 0)


def test_input_layers_are_refused_in_one_line():
    n = 6
    layer = dataclasses.replace(native_layer("in", np.zeros((n, 0)), bias_mant=np.zeros(n)),
                                kind="input")
    dep = layer_deployment([layer], n)
    with pytest.raises(UserError, match=r"^the differentiable twin runs dense and conv layers, and"
                                        r" layer 0 \(in\) is an input layer: run it on the"
                                        r" emulator$"):
        EmulatorTwin(dep)
