"""Resources: cores and chips a Deployment needs under a profile's [limits], counted by hand."""

from __future__ import annotations

import dataclasses
import json
import warnings

import numpy as np
import pytest
from snn_deploy.coding import Coding
from snn_deploy.errors import ProfileError
from snn_deploy.evaluate.resources import format_resources, resources
from snn_deploy.profiles import LIMIT_KEYS, available_profiles, load_profile, parse_profile
from snn_deploy.quantize.deployment import Deployment, LayerStats, QuantLayer, RecurrentSynapse
from snn_deploy.quantize.fixed_point import quantize_network
from snn_deploy.targets import load_target

from tests.factories import assert_bad_input, assert_ok, random_network, run_cli

NO_STATS = LayerStats(weights_total=0, weights_saturated=0, threshold_saturated=False,
                      bias_saturated=0, u_peak_share=0.0)
BASE = load_profile("loihi2").toml_text


def profile_with(limits: str):
    """The loihi2 profile with its [limits] (and [energy]) replaced by ``limits`` TOML lines."""
    return parse_profile(BASE[:BASE.index("[limits]")] + "[limits]\n" + limits + "\n",
                         origin="test")


def layer(weights, *, name: str, bits: int = 8, recurrent: RecurrentSynapse | None = None
          ) -> QuantLayer:
    weights = np.asarray(weights, dtype=np.int32)
    n = weights.shape[0]
    return QuantLayer(synapse=f"fc_{name}", neuron=name, weights=weights, weight_exp=0,
                      sign_mode="mixed", num_weight_bits=bits, num_message_bits=0, du=0, dv=0,
                      vth=10, bias_mant=np.zeros(n, np.int32), bias_exp=np.zeros(n, np.int32),
                      scale=1.0, stats=NO_STATS, recurrent=recurrent)


def deployment(*layers: QuantLayer) -> Deployment:
    return Deployment(profile=load_profile("loihi2"), layers=layers,
                      input_size=layers[0].weights.shape[1], input_scale=1, dt=1e-3, coding=Coding(),
                      source_sha256="", source_nir=b"", calibration="none")


def four_of_six(n: int) -> np.ndarray:
    """(n, 6): every neuron has exactly 4 non-zero weights (8 bits each: 32 bits a neuron)."""
    w = np.zeros((n, 6), dtype=np.int32)
    for i in range(n):
        w[i, [(i + k) % 6 for k in range(4)]] = [3, -2, 1, 5]
    return w


# --------------------------------------------------------------------------------------------
# Per layer, by hand


def test_counts_of_a_layer_with_recurrent_synapses():
    ff = np.array([[1, 0, 2, 0], [0, 0, 0, 0], [4, 4, 4, 4]])
    rec = RecurrentSynapse(weights=np.array([[0, 0, 0], [0, 7, 0], [0, 1, 0]], np.int32),
                           weight_exp=0, sign_mode="mixed", num_weight_bits=6)
    r = resources(deployment(layer(ff, name="a", recurrent=rec)), profile_with("")).layers[0]
    assert (r.neurons, r.synapses) == (3, 6 + 2)
    assert r.fan_in == 4 + 1  # neuron 2: four feed-forward inputs and one from neuron 1
    assert r.inputs == 4 + 1  # input channels 0..3, and neuron 1 (the only recurrent source)
    assert r.weight_bits == 6 * 8 + 2 * 6


def test_synaptic_memory_packs_three_neurons_a_core():
    """32 bits a neuron, 100 bits a core: 3 neurons (96 bits) a core, 10 neurons -> 4 cores."""
    dep = deployment(layer(four_of_six(10), name="a"))
    r = resources(dep, profile_with("neurons_per_core = 5\nsynaptic_memory_bits_per_core = 100"))
    assert (r.layers[0].cores, r.layers[0].core_limit) == (4, "synaptic_memory_bits_per_core")
    assert r.layers[0].weight_bits == 320


def test_neurons_per_core_binds_when_memory_is_ample():
    dep = deployment(layer(four_of_six(10), name="a"))
    r = resources(dep, profile_with("neurons_per_core = 2\nsynaptic_memory_bits_per_core = 4096"))
    assert (r.layers[0].cores, r.layers[0].core_limit) == (5, "neurons_per_core")


def test_fan_in_per_core_counts_distinct_inputs_of_a_core():
    """Neuron i reads input i only: a core of 3 neurons receives 3 inputs; 8 neurons -> 3 cores."""
    dep = deployment(layer(np.eye(8, dtype=np.int32) * 5, name="a"))
    r = resources(dep, profile_with("fan_in_per_core = 3")).layers[0]
    assert (r.fan_in, r.inputs) == (1, 8)
    assert (r.cores, r.core_limit) == (3, "fan_in_per_core")


def test_layers_take_their_own_cores_and_add_up():
    dep = deployment(layer(four_of_six(10), name="a"),
                     layer(np.ones((4, 10), np.int32), name="b"))  # 80 bits a neuron
    r = resources(dep, profile_with("synaptic_memory_bits_per_core = 100\ncores_per_chip = 128"))
    assert [x.cores for x in r.layers] == [4, 4]
    assert (r.cores, r.chips, r.fits, r.binding) == (8, 1, True, "cores_per_chip")
    assert (r.neurons, r.synapses) == (14, 40 + 40)


# --------------------------------------------------------------------------------------------
# Chips, fit and the binding limit


def test_too_many_cores_for_one_chip_names_cores_per_chip():
    dep = deployment(layer(four_of_six(10), name="a"))  # 10 cores of one neuron each
    r = resources(dep, profile_with("neurons_per_core = 1\ncores_per_chip = 4\n"
                                    "neurons_per_chip = 1000\nsynapses_per_chip = 1000"))
    assert (r.cores, r.chips, r.fits, r.binding) == (10, 3, False, "cores_per_chip")
    assert "needs 3 chips" in r.detail and "cores_per_chip" in r.detail and "10 of 4" in r.detail


def test_tiny_neurons_per_chip_binds():
    dep = deployment(layer(four_of_six(10), name="a"))
    r = resources(dep, profile_with("neurons_per_core = 1024\ncores_per_chip = 128\n"
                                    "neurons_per_chip = 4\nsynapses_per_chip = 1000"))
    assert (r.chips, r.fits, r.binding) == (3, False, "neurons_per_chip")


def test_a_neuron_beyond_one_cores_fan_in_cannot_be_mapped():
    dep = deployment(layer(four_of_six(10), name="a"), layer(np.ones((2, 10)), name="b"))
    r = resources(dep, profile_with("fan_in_per_core = 6\ncores_per_chip = 128"))
    assert (r.fits, r.binding, r.chips, r.cores) == (False, "fan_in_per_core", None, None)
    blocked = r.layers[1]
    assert (blocked.blocked_by, blocked.cores) == ("fan_in_per_core", None)
    assert "layer b" in r.detail and "10 inputs" in r.detail and "fan_in_per_core = 6" in r.detail
    assert "no fit" in format_resources(r)


def test_a_neuron_beyond_one_cores_memory_cannot_be_mapped():
    dep = deployment(layer(four_of_six(3), name="a"))
    r = resources(dep, profile_with("synaptic_memory_bits_per_core = 31"))
    assert (r.fits, r.binding) == (False, "synaptic_memory_bits_per_core")
    assert "32 bits of weights" in r.detail


# --------------------------------------------------------------------------------------------
# Limits a profile does not give


def test_without_limits_everything_is_unchecked_and_said_so():
    dep = deployment(layer(four_of_six(10), name="a"))
    r = resources(dep, profile_with(""))
    assert (r.cores, r.chips, r.fits, r.binding) == (None, None, None, None)
    assert r.unchecked == LIMIT_KEYS
    text = format_resources(r)
    assert "cannot tell" in text and "unchecked" in text and "fan_in_per_core" in text


def test_chip_limits_alone_still_answer_for_neurons_and_synapses():
    dep = deployment(layer(four_of_six(10), name="a"))
    r = resources(dep, profile_with("neurons_per_chip = 100\nsynapses_per_chip = 50"))
    assert r.cores is None
    assert (r.chips, r.fits, r.binding) == (1, True, "synapses_per_chip")  # 40 of 50
    assert set(r.unchecked) == {"cores_per_chip", *(k for k in LIMIT_KEYS if k.endswith("core"))}


def test_profile_without_limits_section_loads():
    text = BASE[:BASE.index("[limits]")]
    assert all(getattr(parse_profile(text).limits, key) is None for key in LIMIT_KEYS)


@pytest.mark.parametrize("value", ["0", "-3", "1.5", '"many"', "true"])
def test_bad_limit_is_refused_naming_the_key(value):
    with pytest.raises(ProfileError) as info:
        profile_with(f"neurons_per_core = {value}")
    assert "[limits] neurons_per_core" in str(info.value) and "\n" not in str(info.value)


def test_unknown_limit_key_is_ignored_with_a_warning():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        p = profile_with("compartments_per_core = 1024\nneurons_per_core = 1024")
    assert p.limits.neurons_per_core == 1024
    assert any("compartments_per_core" in str(w.message) for w in caught)


# --------------------------------------------------------------------------------------------
# Every shipped profile


@pytest.mark.parametrize("name", sorted(available_profiles()))
def test_every_shipped_profile_answers_for_a_digits_sized_deployment(name):
    profile = load_profile(name)
    dep = quantize_network(random_network([64, 128, 10], seed=0), profile, graded_input=False,
                           u_peaks=None, source_sha256="", source_nir=b"", calibration="none")
    r = resources(dep, profile)
    assert (r.cores, r.chips, r.fits) == (2, 1, True)
    assert r.binding == "cores_per_chip"
    assert r.neurons == 138
    assert r.synapses == sum(int(np.count_nonzero(x.weights)) for x in dep.layers)
    for key in ("cores_per_chip", "neurons_per_chip", "synapses_per_chip", "neurons_per_core",
                "synaptic_memory_bits_per_core"):
        assert getattr(profile.limits, key) is not None, f"{name} lacks [limits] {key}"
    text = format_resources(r)
    assert name in text and "fits on one chip" in text
    assert json.loads(json.dumps(r.as_dict()))["cores"] == 2


def test_limits_in_shipped_profiles_cite_a_source():
    """Every [limits] key sits in a block of keys that a comment (its source) opens."""
    for name, path in available_profiles().items():
        lines = path.read_text().split("[limits]", 1)[1].split("[energy]", 1)[0].splitlines()
        for i, line in enumerate(lines):
            if " = " in line and not line.startswith("#"):
                j = i - 1
                while j > 0 and " = " in lines[j] and not lines[j].startswith("#"):
                    j -= 1
                assert lines[j].startswith("#"), f"{name}: [limits] {line!r} cites no source"


def test_loihi_per_core_figures():
    p1, p2 = load_profile("loihi1").limits, load_profile("loihi2").limits
    assert (p1.neurons_per_core, p1.synaptic_memory_bits_per_core, p1.fan_in_per_core) == \
        (1024, 128 * 1024 * 8, 4096)
    assert (p2.neurons_per_core, p2.synaptic_memory_bits_per_core, p2.fan_in_per_core) == \
        (8192, 128 * 1024 * 8, None)
    assert p2.neurons_per_core * p2.cores_per_chip == p2.neurons_per_chip  # the derived check
    assert dataclasses.asdict(load_profile("loihi2-netx").limits) == dataclasses.asdict(p2)


@pytest.mark.parametrize("profile", ["loihi1", "loihi2", "loihi2-netx"])
def test_cli_resources_answers_for_every_profile(small_model_files, tmp_path, profile):
    proc = run_cli("resources", small_model_files["deployment"], "--profile", profile,
                   "--json", tmp_path / "r.json", cwd=tmp_path)
    assert_ok(proc)
    assert "fits on one chip" in proc.stdout
    # the JSON is the named profile's count of this Deployment, not the Deployment's own profile's
    expected = resources(load_target(small_model_files["deployment"]).require_deployment(),
                         load_profile(profile))
    assert json.loads((tmp_path / "r.json").read_text()) == json.loads(json.dumps(expected.as_dict()))
    assert expected.profile == profile and expected.fits is True
    assert_bad_input(run_cli("resources", small_model_files["deployment"], "--profile", "loihi9",
                             cwd=tmp_path), "loihi9")
