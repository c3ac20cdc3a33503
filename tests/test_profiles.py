"""Profiles: the loihi2 numbers are Lava's own, and broken profiles are refused by name."""

from __future__ import annotations

import pytest
from lava.proc.lif.models import PyLifModelBitAcc
from snn_deploy.errors import ProfileError
from snn_deploy.profiles import available_profiles, load_profile, parse_profile


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
    with pytest.raises(ProfileError, match="exp_min 9 > exp_max 7"):
        parse_profile(text.replace("exp_min = -8", "exp_min = 9"))
    with pytest.raises(ProfileError, match="must be an integer"):
        parse_profile(text.replace("state_bits = 24", 'state_bits = "24"'))
    with pytest.raises(ProfileError, match="not valid TOML"):
        parse_profile("name = [")
