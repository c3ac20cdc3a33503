"""Quantization maths: analytic values, the Lava weight grid, half-LSB round trips, file round trip."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from lava.utils.weightutils import SignMode, clip_weights, truncate_weights
from snn_deploy.convert.nirgraph import FloatLayer, NeuronSpec
from snn_deploy.errors import InputFileError, QuantizationError
from snn_deploy.profiles import load_profile
from snn_deploy.quantize.dense_grid import sign_mode_of, weight_grid
from snn_deploy.quantize.deployment import load_deployment, save_deployment
from snn_deploy.quantize.fixed_point import bias_transient, quantize_layer

PROFILE = load_profile("loihi2")
DT = 1e-3


def _layer(weight: np.ndarray, *, tau_syn=5e-3, tau_mem=1e-2, theta=1.0, bias=None,
           leak=True) -> FloatLayer:
    n = weight.shape[0]
    full = lambda v: np.full(n, float(v))  # noqa: E731
    spec = NeuronSpec(
        kind="CubaLIF", syn_keep=full(1 - DT / tau_syn) if tau_syn else full(0),
        mem_gain=full(DT / tau_mem) if leak else full(1), leak=leak, r=full(1), w_in=full(1),
        v_leak=full(0), v_threshold=full(theta), v_reset=full(0),
    )
    return FloatLayer(synapse="syn", neuron="lif", weight=weight,
                      bias=np.zeros(n) if bias is None else bias, spec=spec)


def _quantize(layer, u_peak=2.0):
    return quantize_layer(layer, PROFILE, u_peak=u_peak, input_scale=1, num_message_bits=0)


def test_decays_match_lava_semantics():
    q = _quantize(_layer(np.random.default_rng(0).normal(size=(5, 7))))
    # u keeps (4096 - (du + 1)) / 4096 = 1 - dt/tau_syn = 0.8; v keeps (4096 - dv) / 4096 = 0.9
    assert q.du == round(4096 * 0.2) - 1 == 818
    assert q.dv == round(4096 * 0.1) == 410
    q_if = _quantize(_layer(np.ones((2, 3)), tau_syn=None, leak=False))
    assert (q_if.du, q_if.dv) == (4095, 0)  # no current memory, no leak


@pytest.mark.parametrize("mode,sign", [("mixed", 0), ("excitatory", 1), ("inhibitory", -1)])
def test_weights_lie_on_the_grid_lava_dense_uses(mode, sign):
    rng = np.random.default_rng(1)
    w = rng.normal(size=(20, 30))
    if sign:
        w = sign * np.abs(w)
    q = _quantize(_layer(w))
    assert q.sign_mode == mode == sign_mode_of(w)
    lava_mode = getattr(SignMode, mode.upper())
    lava = truncate_weights(clip_weights(q.weights.copy(), lava_mode, num_bits=8), lava_mode,
                            q.num_weight_bits)
    np.testing.assert_array_equal(lava, q.weights)
    grid = weight_grid(PROFILE, mode)
    assert np.all(q.weights % grid.step == 0)
    assert q.weights.max() <= grid.high and q.weights.min() >= grid.low
    # the scale uses the whole mantissa range on the larger side
    assert max(q.weights.max() / max(grid.high, 1), q.weights.min() / min(grid.low, -1)) > 0.9


def test_dequantized_values_are_within_half_an_lsb():
    w = np.random.default_rng(2).normal(size=(16, 10))
    layer = _layer(w, theta=1.3)
    q = _quantize(layer)
    unit = 2.0 ** (q.weight_exp + PROFILE.activation_shift) / q.scale
    w_eff = layer.spec.mem_gain[:, None] * w
    step = weight_grid(PROFILE, q.sign_mode).step
    assert np.abs(q.weights * unit - w_eff).max() <= step * unit / 2 + 1e-12
    theta_back = q.vth * 2.0 ** PROFILE.threshold_shift / q.scale
    assert abs(theta_back - 1.3) <= 2.0 ** PROFILE.threshold_shift / q.scale / 2
    assert q.stats.weights_saturated == 0 and not q.stats.threshold_saturated
    assert q.stats.saturated_share == 0.0


def test_scale_respects_threshold_and_state_ranges():
    w = np.random.default_rng(3).normal(size=(8, 8))
    q = _quantize(_layer(w), u_peak=50.0)
    assert q.stats.u_peak_share <= 0.5  # headroom for u, which wraps on overflow
    assert 0 < q.vth <= PROFILE.vth_max
    assert PROFILE.weight_exp_min <= q.weight_exp <= PROFILE.weight_exp_max


def test_bias_goes_to_mantissa_and_exponent():
    w = np.random.default_rng(4).normal(size=(3, 4))
    bias = np.array([0.0, 0.5, -2.0])
    layer = _layer(w, tau_syn=None, bias=bias)
    q = _quantize(layer)
    back = q.bias_mant * 2.0 ** q.bias_exp / q.scale
    np.testing.assert_allclose(back, layer.spec.mem_gain * bias, rtol=2e-3, atol=1e-9)
    assert np.all(np.abs(q.bias_mant) < 2 ** 12) and np.all((0 <= q.bias_exp) & (q.bias_exp <= 7))


def test_what_a_loihi_lif_cannot_do_is_refused_with_values():
    layer = _layer(np.ones((2, 2)))
    uneven = dataclasses.replace(layer, spec=dataclasses.replace(
        layer.spec, syn_keep=np.array([0.8, 0.5])))
    with pytest.raises(QuantizationError, match="synaptic time constant differs.*0.5..0.8"):
        _quantize(uneven)
    reset = dataclasses.replace(layer, spec=dataclasses.replace(
        layer.spec, v_reset=np.array([-0.25, -0.25])))
    with pytest.warns(UserWarning), \
            pytest.raises(QuantizationError, match="v_threshold - v_reset = -1.25 must be > 0"):
        _quantize(dataclasses.replace(reset, spec=dataclasses.replace(
            reset.spec, v_threshold=np.array([-1.5, -1.5]))))
    with pytest.raises(QuantizationError, match="v_reset differs"):
        _quantize(dataclasses.replace(reset, spec=dataclasses.replace(
            reset.spec, v_reset=np.array([0.0, 0.5]))))


def test_a_nonzero_reset_runs_shifted_with_a_warning():
    """v' = v - v_reset resets to 0 as Loihi does: the threshold moves to theta - v_reset and the
    leak target to v_leak - v_reset, which enters as a bias mem_gain * (v_leak - v_reset)."""
    layer = _layer(np.ones((2, 2)))
    plain = _quantize(layer)
    reset = dataclasses.replace(layer, spec=dataclasses.replace(
        layer.spec, v_reset=np.array([-0.25, -0.25])))
    with pytest.warns(UserWarning, match="v_reset = -0.25.*threshold 1 -> 1.25"):
        q = _quantize(reset)
    assert q.vth * 64 == pytest.approx(1.25 * q.scale, rel=1e-3)
    assert plain.vth * 64 == pytest.approx(1.0 * plain.scale, rel=1e-3)
    bias = q.bias_mant.astype(np.int64) << q.bias_exp
    np.testing.assert_allclose(bias / q.scale, 0.1 * 0.25, rtol=1e-2)  # mem_gain = dt/tau = 0.1


def test_deployment_file_round_trip(small_model_files, tmp_path):
    dep = load_deployment(small_model_files["deployment"])
    copy = tmp_path / "copy.deploy.h5"
    save_deployment(dep, copy)
    again = load_deployment(copy)
    assert again.profile == dep.profile and again.coding == dep.coding
    assert again.source_sha256 == dep.source_sha256 and again.source_nir == dep.source_nir
    for a, b in zip(dep.layers, again.layers):
        for field in dataclasses.fields(a):
            va, vb = getattr(a, field.name), getattr(b, field.name)
            if isinstance(va, np.ndarray):
                np.testing.assert_array_equal(va, vb)
            else:
                assert va == vb, field.name
    import hashlib

    assert dep.source_sha256 == hashlib.sha256(small_model_files["nir"].read_bytes()).hexdigest()
    assert dep.profile.name == "loihi2"


def test_a_nir_file_is_not_a_deployment(small_model_files):
    with pytest.raises(InputFileError, match="not an snn-deploy deployment"):
        load_deployment(small_model_files["nir"])


@pytest.mark.parametrize("syn_keep, v_keep", [(0.55, 0.9), (0.5, 1.0), (0.8, 0.45)])
def test_bias_transient_is_the_largest_gap_to_nirs_ramp(syn_keep, v_keep):
    """NIR: I_t = k I + b, v_t = v_keep v + g I; Loihi: v_t = v_keep v + g b / (1 - k)."""
    drive = np.array([0.7, -2.0])  # g * b per neuron
    peak, step = bias_transient(drive, syn_keep=syn_keep, v_keep=v_keep)
    current, v_nir, v_loihi, gaps = np.zeros(2), np.zeros(2), np.zeros(2), []
    for _ in range(400):
        current = syn_keep * current + drive
        v_nir = v_keep * v_nir + current
        v_loihi = v_keep * v_loihi + drive / (1 - syn_keep)
        gaps.append(np.abs(v_loihi - v_nir).max())
    assert peak == pytest.approx(max(gaps), rel=1e-6)
    assert gaps[step - 1] == pytest.approx(peak, rel=1e-6)
    if v_keep == 1.0:  # an IF keeps the whole gap: g b k / (1 - k)^2
        assert peak == pytest.approx(2.0 * syn_keep / (1 - syn_keep) ** 2, rel=1e-6)


def test_a_bias_into_a_persistent_current_warns_with_its_size():
    layer = _layer(np.ones((2, 2)), bias=np.array([0.5, -1.0]))
    with pytest.warns(UserWarning, match=r"steady state.*moves v by up to [0-9.]+ threshold\(s\)"):
        _quantize(layer)
