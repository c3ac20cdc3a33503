"""Profiles: the loihi2 numbers are Lava's own, energy constants carry their basis, and broken
profiles are refused by name."""

from __future__ import annotations

import numpy as np
import pytest
import tomli
from lava.proc.dense.models import PyDenseModelBitAcc
from lava.proc.lif.models import PyLifModelBitAcc
from lava.utils.weightutils import SignMode, clip_weights
from snn_deploy import lava_formats as lava
from snn_deploy.errors import ProfileError
from snn_deploy.profiles import PROFILE_RANGES, available_profiles, load_profile, parse_profile


def test_loihi2_matches_lava_fixed_point_lif():
    p = load_profile("loihi2")
    lif = PyLifModelBitAcc({"shape": (1,)})
    assert p.du_offset == lif.ds_offset
    assert p.dv_offset == lif.dm_offset
    assert p.threshold_shift == lif.vth_shift
    assert p.activation_shift == lif.act_shift
    assert p.state_bits == lif.uv_bitwidth
    assert p.decay_unity == lif.decay_unity == 1 << lif.decay_shift
    assert p.threshold_bits == PyLifModelBitAcc.vth.precision
    assert p.decay_bits == PyLifModelBitAcc.du.precision
    assert p.bias_mant_bits == PyLifModelBitAcc.bias_mant.precision
    assert p.bias_exp_max == (1 << PyLifModelBitAcc.bias_exp.precision) - 1


def test_the_table_of_limits_is_lavas():
    lif = PyLifModelBitAcc({"shape": (1,)})
    assert lava.STATE_BITS == lif.uv_bitwidth == PyLifModelBitAcc.u.precision
    assert lava.DECAY_BITS == lif.decay_shift == PyLifModelBitAcc.du.precision
    assert (lava.DU_OFFSET, lava.DV_OFFSET) == (lif.ds_offset, lif.dm_offset)
    assert lava.DECAY_OFFSET_MAX >= max(lif.ds_offset, lif.dm_offset)
    assert lava.THRESHOLD_BITS == PyLifModelBitAcc.vth.precision
    assert (lava.THRESHOLD_SHIFT, lava.ACTIVATION_SHIFT) == (lif.vth_shift, lif.act_shift)
    assert lava.BIAS_MANT_BITS == PyLifModelBitAcc.bias_mant.precision
    assert lava.BIAS_EXP_BITS == PyLifModelBitAcc.bias_exp.precision
    assert lava.MESSAGE_BITS == PyLifModelBitAcc.s_out.precision
    assert lava.WEIGHT_BITS == PyDenseModelBitAcc.weights.precision
    assert np.dtype(PyLifModelBitAcc.u.d_type).itemsize * 8 == lava.INT_BITS
    w = np.arange(-400, 400)
    for mode in lava.SIGN_MODES:
        clipped = clip_weights(w, getattr(SignMode, mode.upper()), num_bits=lava.WEIGHT_BITS)
        assert lava.weight_clip_range(mode) == (clipped.min(), clipped.max()), mode


def test_every_shipped_profile_lies_within_lavas_formats():
    for name in available_profiles():
        p = load_profile(name)
        for field, (lo, hi) in PROFILE_RANGES.items():
            assert lo <= getattr(p, field) <= hi, (name, field)


@pytest.mark.parametrize("field", list(PROFILE_RANGES))
def test_each_key_is_refused_just_outside_its_range_with_the_range(field):
    text = load_profile("loihi2").toml_text
    key = {"weight_bits": "bits", "weight_exp_min": "exp_min", "weight_exp_max": "exp_max",
           "input_graded_bits": "graded_bits"}.get(field, field)
    value = getattr(load_profile("loihi2"), field)
    lo, hi = PROFILE_RANGES[field]
    for bad in (lo - 1, hi + 1):
        edited = text.replace(f"\n{key} = {value}\n", f"\n{key} = {bad}\n")
        assert edited != text
        with pytest.raises(ProfileError, match=rf"{key} = {bad} is outside {lo}\.\.{hi}") as info:
            parse_profile(edited)
        assert "\n" not in str(info.value)


def test_a_threshold_wider_than_the_state_is_refused():
    text = load_profile("loihi2").toml_text
    with pytest.raises(ProfileError, match=r"threshold_bits \+ threshold_shift = 17 \+ 6 = 23 >"
                                           r" state_bits - 1 = 19"):
        parse_profile(text.replace("state_bits = 24", "state_bits = 20"))
    narrower = parse_profile(text.replace("state_bits = 24", "state_bits = 20")
                             .replace("threshold_bits = 17", "threshold_bits = 13"))
    assert (narrower.state_max, narrower.vth_max) == (1 << 19, (1 << 13) - 1)


def test_profiles_are_found_by_name_and_path():
    assert "loihi2" in available_profiles()
    by_name = load_profile("loihi2")
    by_path = load_profile(available_profiles()["loihi2"])
    assert by_name == by_path
    assert len(by_name.sha256) == 64


def test_unknown_profile_names_the_known_ones():
    with pytest.raises(ProfileError, match="unknown profile 'nosuch'.*loihi2"):
        load_profile("nosuch")


def test_missing_keys_are_all_named():
    text = load_profile("loihi2").toml_text
    text = text.replace("num_weight_bits = 8", "").replace("decay_bits = 12", "")
    expected = r"missing \[weights\] num_weight_bits; missing \[neuron\] decay_bits"
    with pytest.raises(ProfileError, match=expected):
        parse_profile(text)


def test_impossible_and_malformed_profiles():
    text = load_profile("loihi2").toml_text
    with pytest.raises(ProfileError, match="exp_min = 9 is outside -8..7; .*exp_min 9 > exp_max 7"):
        parse_profile(text.replace("exp_min = -8", "exp_min = 9"))
    with pytest.raises(ProfileError, match="exp_min 3 > exp_max 2"):
        parse_profile(text.replace("exp_min = -8", "exp_min = 3").replace("exp_max = 7", "exp_max = 2"))
    with pytest.raises(ProfileError, match="must be an integer"):
        parse_profile(text.replace("state_bits = 24", 'state_bits = "24"'))
    with pytest.raises(ProfileError, match="not valid TOML"):
        parse_profile("name = [")


def test_a_profile_that_is_not_a_small_regular_file_is_refused_unread(tmp_path):
    link = tmp_path / "zero.toml"
    link.symlink_to("/dev/zero")
    with pytest.raises(ProfileError, match="zero.toml"):
        load_profile(link)
    big = tmp_path / "big.toml"
    big.write_text(load_profile("loihi2").toml_text + "#" * (2 << 20))
    with pytest.raises(ProfileError, match="big.toml is larger than"):
        load_profile(big)
    with pytest.raises(ProfileError, match="profile not found"):
        load_profile(tmp_path / "missing.toml")


# --------------------------------------------------------------------------------------------
# [energy]: optional, validated, with its basis


def test_energy_sections_state_their_constants_and_basis():
    loihi1 = load_profile("loihi1").energy
    assert loihi1 is not None and loihi1.basis == "simulated"
    # Davies et al., IEEE Micro 38(1) 2018, Table 2
    assert (loihi1.synop_pj, loihi1.neuron_update_pj, loihi1.spike_pj) == (23.6, 81.0, 1.7)
    assert "Davies" in loihi1.source and "Table 2" in loihi1.source
    for name in ("loihi2", "loihi2-netx"):
        proxy = load_profile(name).energy
        assert proxy is not None and proxy.basis == "proxy", name
        assert (proxy.synop_pj, proxy.neuron_update_pj, proxy.spike_pj) == (23.6, 81.0, 1.7)
        assert "proxy" in proxy.source


def test_loihi1_uses_lavas_fixed_point_formats_and_the_papers_chip_figures():
    p1, p2 = load_profile("loihi1"), load_profile("loihi2")
    formats = ("weight_bits", "num_weight_bits", "weight_exp_min", "weight_exp_max", "state_bits",
               "decay_bits", "du_offset", "dv_offset", "threshold_bits", "threshold_shift",
               "activation_shift", "bias_mant_bits", "bias_exp_max", "input_graded_bits")
    assert {f: getattr(p1, f) for f in formats} == {f: getattr(p2, f) for f in formats}
    limits = tomli.loads(p1.toml_text)["limits"]
    assert limits["cores_per_chip"] * limits["neurons_per_core"] == limits["neurons_per_chip"]
    assert (limits["cores_per_chip"], limits["synapses_per_chip"]) == (128, 130_000_000)


def _without_energy(text: str) -> str:
    return text[:text.index("[energy]")]


def test_a_profile_without_energy_has_none():
    assert parse_profile(_without_energy(load_profile("loihi2").toml_text)).energy is None


@pytest.mark.parametrize("key", ["synop_pj", "neuron_update_pj", "spike_pj"])
def test_negative_energy_is_refused_in_one_line_naming_the_key(key):
    text = load_profile("loihi1").toml_text
    start = text.index(f"\n{key} = ") + 1
    line = text[start:text.index("\n", start)]
    with pytest.raises(ProfileError) as info:
        parse_profile(text.replace(line, f"{key} = -1.5"))
    message = str(info.value)
    assert "\n" not in message
    assert f"[energy] {key} must be a finite number >= 0, got -1.5" in message


@pytest.mark.parametrize("value", ["nan", "inf", '"23.6"', "true"])
def test_non_finite_or_non_numeric_energy_is_refused(value):
    text = load_profile("loihi1").toml_text.replace("synop_pj = 23.6", f"synop_pj = {value}")
    with pytest.raises(ProfileError, match=r"\[energy\] synop_pj must be a finite number >= 0"):
        parse_profile(text)


def test_bad_basis_and_missing_energy_keys_are_named():
    text = load_profile("loihi1").toml_text
    with pytest.raises(ProfileError,
                       match=r"\[energy\] basis must be one of simulated, proxy, measured, got 'guessed'"):
        parse_profile(text.replace('basis = "simulated"', 'basis = "guessed"'))
    with pytest.raises(ProfileError, match=r"missing \[energy\] spike_pj.*\[energy\] source"):
        parse_profile(_without_energy(text) + '[energy]\nbasis = "measured"\nsynop_pj = 1\n'
                      'neuron_update_pj = 2\n')
    with pytest.raises(ProfileError, match=r"unknown \[energy\] keys hop_pj"):
        parse_profile(text.replace("spike_pj = 1.7", "spike_pj = 1.7\nhop_pj = 3.0"))
