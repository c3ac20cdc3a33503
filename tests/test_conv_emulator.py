"""Native conv and input layers on the emulator: the same integers as the conv lowered to a dense
matrix, on both step loops; Lava's global time (``Pipeline``) against the local time; fan-out
counts; and the layer kinds the other backends do not run yet, refused."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from snn_deploy.coding import Coding
from snn_deploy.convert.conv import ConvGeometry
from snn_deploy.errors import UserError
from snn_deploy.evaluate.counts import fanout
from snn_deploy.quantize.deployment import Deployment, QuantLayer
from snn_deploy.run.emulator import Pipeline, run_layers
from snn_deploy.evaluate.resources import resources

from tests.factories import NO_STATS, PROFILE


def _layer(name: str, weights: np.ndarray, *, kind: str, n: int, shape: tuple[int, ...] = (),
           conv: ConvGeometry | None = None, rng: np.random.Generator, vth: int = 40,
           du: int = 1024, dv: int = 512) -> QuantLayer:
    return QuantLayer(synapse=f"{name}_syn", neuron=name, weights=weights.astype(np.int32),
                      weight_exp=0, sign_mode="mixed", num_weight_bits=8, num_message_bits=0,
                      du=du, dv=dv, vth=vth, bias_mant=rng.integers(-8, 12, n).astype(np.int32),
                      bias_exp=np.full(n, 6, np.int32), scale=1.0, stats=NO_STATS, kind=kind,
                      conv=conv, shape=shape)


def _conv(rng: np.random.Generator, in_shape: tuple[int, int, int], c_out: int, kernel: int,
          stride: tuple[int, int], padding: tuple[int, int], dilation: tuple[int, int],
          groups: int, name: str) -> QuantLayer:
    hw = ConvGeometry.output_hw(in_shape[1:], (kernel, kernel), stride, padding, dilation)
    geometry = ConvGeometry(in_shape=in_shape, out_shape=(c_out, *hw), kernel=(kernel, kernel),
                            stride=stride, padding=padding, dilation=dilation, groups=groups)
    w = rng.integers(-64, 64, (c_out, in_shape[0] // groups, kernel, kernel)) * 2
    return _layer(name, w, kind="conv", n=c_out * hw[0] * hw[1], shape=geometry.out_shape,
                  conv=geometry, rng=rng)


def _lowered(layer: QuantLayer) -> np.ndarray:
    """The conv as the (n_out, n_in) matrix whose column j is the conv of the j-th unit input."""
    g = layer.conv
    n_in = int(np.prod(g.in_shape))
    eye = torch.eye(n_in, dtype=torch.float64).reshape(n_in, *g.in_shape)
    out = torch.nn.functional.conv2d(eye, torch.as_tensor(layer.weights, dtype=torch.float64),
                                     stride=g.stride, padding=g.padding, dilation=g.dilation,
                                     groups=g.groups)
    return out.reshape(n_in, -1).T.numpy().astype(np.int64)


def _deployment(layers: list[QuantLayer], input_size: int) -> Deployment:
    return Deployment(profile=PROFILE, layers=tuple(layers), input_size=input_size, input_scale=1,
                      dt=1e-3, coding=Coding(), source_sha256="", source_nir=b"", calibration="")


def _net(seed: int, in_shape=(2, 9, 8), groups=1, stride=(2, 1), padding=(1, 0),
         dilation=(1, 2)) -> Deployment:
    rng = np.random.default_rng(seed)
    conv0 = _conv(rng, in_shape, 4, 3, stride, padding, dilation, groups, "c0")
    conv1 = _conv(rng, conv0.shape, 4, 2, (1, 1), (1, 1), (1, 1), 2, "c1")
    n = conv1.size
    fc = _layer("fc", rng.integers(-40, 40, (5, n)) * 2, kind="dense", n=5, rng=rng, vth=30)
    return _deployment([conv0, conv1, fc], int(np.prod(in_shape)))


def _spikes(dep: Deployment, steps: int, batch: int, seed: int, rate: float = 0.4) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(steps, batch, dep.input_size, generator=gen) < rate).to(torch.float32)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), groups=st.sampled_from([1, 2]),
       stride=st.tuples(st.integers(1, 2), st.integers(1, 3)),
       padding=st.tuples(st.integers(0, 2), st.integers(0, 1)),
       dilation=st.tuples(st.integers(1, 2), st.integers(1, 2)))
def test_conv_layers_equal_their_dense_lowering_state_for_state(seed, groups, stride, padding,
                                                                dilation):
    dep = _net(seed, groups=groups, stride=stride, padding=padding, dilation=dilation)
    dense = _deployment([dataclasses.replace(layer, weights=_lowered(layer).astype(np.int32),
                                             kind="dense", conv=None, shape=())
                         if layer.kind == "conv" else layer for layer in dep.layers],
                        dep.input_size)
    x = _spikes(dep, 12, 3, seed)
    for kernel in ("numba", "torch"):
        native = run_layers(dep, x, record_state=True, kernel=kernel)
        lowered = run_layers(dense, x, record_state=True, kernel="torch")
        for a, b in zip(native, lowered):
            assert torch.equal(a.spikes, b.spikes) and torch.equal(a.u, b.u)
            assert torch.equal(a.v, b.v)
    assert sum(int(t.spikes.sum()) for t in native[:2]) > 0  # the test sees spikes


def test_fanout_of_a_conv_counts_the_nonzero_synapses_of_its_lowering():
    layer = _net(3, stride=(2, 2), padding=(2, 1), dilation=(2, 1)).layers[0]
    w = layer.weights.copy()
    w[0, 0, 1, 1] = 0  # a zero tap is no synapse
    layer = dataclasses.replace(layer, weights=w)
    assert np.array_equal(fanout(layer), np.count_nonzero(_lowered(layer), axis=0))


def test_pipeline_is_lava_global_time_and_equals_local_time_after_each_reset():
    dep = _net(7)
    x = _spikes(dep, 1, 2, 1).expand(16, -1, -1).contiguous()  # constant input, as a held bias
    local = run_layers(dep, x[:5], record_state=True, kernel="torch")
    period = 5  # layer i's input comes through i + 1 synapses: offset 1 resets it on its arrival
    glob = run_layers(dep, x, record_state=True, pipeline=Pipeline(period, reset_offset=1),
                      kernel="torch")
    for i, (lo, gl) in enumerate(zip(local, glob)):
        assert not torch.equal(gl.u[:i + 1], lo.u[:i + 1]) or i == 0  # before: other dynamics
        for t in range(i + 1, 16):
            k = (t - i - 1) % period
            assert torch.equal(gl.u[t], lo.u[k]) and torch.equal(gl.v[t], lo.v[k]), (i, t)
            assert torch.equal(gl.spikes[t], lo.spikes[k]), (i, t)


def test_input_layer_takes_its_data_as_bias_held_over_the_steps():
    rng = np.random.default_rng(0)
    shape = (2, 5, 4)
    n = int(np.prod(shape))
    inp = _layer("in", np.zeros((n, 0)), kind="input", n=n, shape=shape, rng=rng, du=4095)
    inp = dataclasses.replace(inp, bias_mant=np.zeros(n, np.int32))
    conv = _conv(rng, shape, 3, 3, (1, 1), (1, 1), (1, 1), 1, "c0")
    dep = _deployment([inp, conv], n)
    image = torch.as_tensor(rng.integers(0, 60, (1, n)), dtype=torch.float32)
    traces = run_layers(dep, image.expand(10, -1, -1), record_state=True, input_as="bias")
    v = torch.zeros(n, dtype=torch.float64)
    for t in range(10):  # v = v * (4096 - dv) / 4096 + bias << 6, reset to 0 above vth << 6
        v = torch.trunc(v * (4096 - 512) / 4096) + image[0].double() * 64
        spiked = v > 40 * 64
        assert torch.equal(traces[0].spikes[t, 0], spiked)
        v[spiked] = 0
    with pytest.raises(UserError, match="bias mantissas must lie in"):
        run_layers(dep, torch.full((3, 1, n), 5000.0), input_as="bias")
    with pytest.raises(UserError, match="layer 0 .* is a conv layer"):
        run_layers(_deployment([conv], n), image.expand(3, -1, -1), input_as="bias")


def test_what_runs_dense_layers_only_refuses_conv_clearly():
    with pytest.raises(UserError, match="resources runs dense layers only so far, and"
                                        r" layer 0 \(c0\) is a conv layer"):
        resources(_net(1), PROFILE)
