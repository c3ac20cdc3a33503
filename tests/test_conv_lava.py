"""Native conv layers on lava-sim (Lava's fixed-point ``Conv`` in (W, H, C) order behind virtual
ports, run/lava_layers.py) against the emulator's ``ConvSynapses``: spikes, u and v of every
layer at every step of every sample; the 24-bit wrap of a Conv's output, reached with graded
input and with binary spikes; and input layers, still refused on the Lava backends."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from snn_deploy.errors import UserError
from snn_deploy.run.emulator import run_emulator
from snn_deploy.run.lava_sim import run_lava_sim

from tests.factories import (
    assert_states_equal_lava,
    conv_geometry,
    layer_deployment,
    native_layer,
)

pytestmark = pytest.mark.slow

WRAP = 1 << 23  # Lava's fixed-point Conv wraps its output into [-2**23, 2**23)


def _conv(rng, name, in_shape, c_out, kernel, **geometry):
    g = conv_geometry(in_shape, c_out, kernel, **geometry)
    w = rng.integers(-64, 64, (c_out, in_shape[0] // g.groups, *kernel)) * 2
    return native_layer(name, w, conv=g,
                        bias_mant=rng.integers(-8, 12, int(np.prod(g.out_shape))))


def _dense(rng, n, n_in, name="fc"):
    return native_layer(name, rng.integers(-40, 40, (n, n_in)) * 2,
                        bias_mant=rng.integers(-8, 12, n), vth=30)


def _conv_conv_dense(rng):
    """Asymmetric kernels on a non-square input, so that an H/W mix-up shows."""
    c0 = _conv(rng, "c0", (2, 9, 8), 4, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2),
               groups=2)
    c1 = _conv(rng, "c1", c0.shape, 4, (2, 3), padding=(1, 1), groups=1)
    return layer_deployment([c0, c1, _dense(rng, 5, c1.size)], 2 * 9 * 8)


def _dense_conv_dense(rng):
    """A dense layer's flat output read as (C, H, W) by the conv after it."""
    d0 = _dense(rng, 3 * 5 * 6, 20, name="fc0")
    c1 = _conv(rng, "c1", (3, 5, 6), 6, (2, 3), stride=(1, 2), padding=(0, 1), dilation=(2, 1),
               groups=3)
    return layer_deployment([d0, c1, _dense(rng, 4, c1.size)], 20)


def _spikes(dep, steps, batch, seed, rate=0.4) -> np.ndarray:
    return (np.random.default_rng(seed).random((steps, batch, dep.input_size)) < rate
            ).astype(np.float32)


@pytest.mark.parametrize("make", [_conv_conv_dense, _dense_conv_dense])
def test_conv_networks_equal_the_emulator_state_for_state(make):
    dep = make(np.random.default_rng(3))
    x = _spikes(dep, 8, 3, seed=1)
    traces = assert_states_equal_lava(dep, x)
    assert all(int(t.spikes.sum()) > 0 for t in traces), "every layer must spike"
    lava, emulated = run_lava_sim(dep, x), run_emulator(dep, x)
    np.testing.assert_array_equal(lava.output, emulated.output)
    for a, b in zip(lava.counts, emulated.counts, strict=True):
        np.testing.assert_array_equal(a, b)


def _raw_sums(dep, x: np.ndarray) -> np.ndarray:
    """The first conv's unwrapped sums of the input levels, (T * B, C_out, H', W')."""
    g = dep.layers[0].conv
    levels = np.rint(x.astype(np.float64) * dep.input_scale).reshape(-1, *g.in_shape)
    return torch.nn.functional.conv2d(
        torch.from_numpy(levels), torch.from_numpy(dep.layers[0].weights.astype(np.float64)),
        stride=g.stride, padding=g.padding, dilation=g.dilation, groups=g.groups).numpy()


def test_graded_input_wraps_a_conv_output_into_24_bits_as_lava_does():
    """|w| = 255 or 256 on 180 taps (120 at the padded edges) and levels around 200 give sums
    beyond 2**23 in the middle row only."""
    rng = np.random.default_rng(0)
    g = conv_geometry((20, 3, 3), 2, (3, 3), padding=(1, 0))
    w = np.stack([np.full((20, 3, 3), 255), np.full((20, 3, 3), -256)])
    conv = native_layer("c0", w, conv=g, bias_mant=rng.integers(-8, 12, 6), num_message_bits=8)
    dep = layer_deployment([conv, _dense(rng, 3, 6)], 20 * 9, input_scale=255)
    x = rng.uniform(0.55, 1.0, (8, 2, dep.input_size)).astype(np.float32)
    sums = _raw_sums(dep, x)
    assert (sums >= WRAP).any() and (sums < -WRAP).any() and (np.abs(sums) < WRAP).any()
    traces = assert_states_equal_lava(dep, x)
    assert int(traces[0].spikes.sum()) > 0
    first_u = traces[0].u[0].reshape(sums[:2].shape)  # step 0: u = (wrapped a) << 6, folded
    assert (first_u[sums[:2] >= WRAP] < 0).all() and (first_u[sums[:2] < -WRAP] > 0).all()


def test_binary_spikes_wrap_a_conv_output_when_it_has_enough_taps():
    """With 0/1 spikes and 9-bit mantissas (|w| <= 256) a sum leaves 24 bits only beyond 32768
    taps: 136 channels x 16 x 16 = 34816, all -256, nearly all input neurons spiking."""
    rng = np.random.default_rng(1)
    g = conv_geometry((136, 16, 16), 2, (16, 16))
    w = np.stack([np.full((136, 16, 16), -256), rng.integers(-8, 8, (136, 16, 16))])
    conv = native_layer("c0", w, conv=g, bias_mant=np.zeros(2, np.int32), vth=1000)
    dep = layer_deployment([conv], g.in_shape[0] * 16 * 16)
    x = _spikes(dep, 6, 2, seed=2, rate=0.97)
    sums = _raw_sums(dep, x)
    assert (sums[:, 0] < -WRAP).all(), "channel 0 must wrap (to a large positive input)"
    traces = assert_states_equal_lava(dep, x)
    assert (traces[0].u[0, :, 0] > 0).all() and traces[0].spikes[:, :, 0].all()


def test_input_layers_are_refused_on_the_lava_backends():
    rng = np.random.default_rng(0)
    shape = (2, 4, 4)
    n = int(np.prod(shape))
    inp = native_layer("in", np.zeros((n, 0)), bias_mant=np.zeros(n, np.int32))
    inp = dataclasses.replace(inp, kind="input", shape=shape)
    dep = layer_deployment([inp, _conv(rng, "c1", shape, 3, (3, 3))], n)
    with pytest.raises(UserError, match=r"^the Lava backends run dense and conv layers only so far,"
                                        r" and layer 0 \(in\) is an input layer: run it on the"
                                        r" emulator$"):
        run_lava_sim(dep, _spikes(dep, 3, 1, seed=0))
