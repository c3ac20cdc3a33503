"""Hostile values, round two: every Deployment and profile field outside what Lava's fixed-point
LIF and Dense can represent (snn_deploy/lava_formats.py) is refused in one line with exit status 2,
never run and never a traceback; a valid but odd deployment (a threshold that rounds to 0) runs
with a warning and honest saturation figures.

Deployment cases edit a real saved Deployment with h5py, as an attacker would, then run
``snn-deploy evaluate`` on it; profile cases write a TOML file and run ``snn-deploy deploy``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
from pathlib import Path
from typing import Callable

import h5py
import nir
import numpy as np
import pytest
from snn_deploy.cli import main
from snn_deploy.errors import QuantizationError
from snn_deploy.profiles import available_profiles, load_profile
from snn_deploy.quantize.deployment import load_deployment, save_deployment
from snn_deploy.quantize.fixed_point import quantize_layer, quantize_network, u_peak_bound
from snn_deploy.run.emulator import run_emulator

from tests.factories import random_network

pytestmark = pytest.mark.usefixtures("one_thread")

STEPS = 8


def _refused(argv: list[str], capsys, *names: str) -> str:
    """Exit status 2, exactly one non-empty stderr line naming every string in ``names``."""
    capsys.readouterr()
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, f"rc={rc}, stderr:\n{err}"
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("snn-deploy: error: "), err
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]


# ------------------------------------------------------------------------------ deployments


@pytest.fixture(scope="module")
def good_deployment(tmp_path_factory) -> Path:
    """A 64-16-10 deployment of a random network for loihi2 (no training), with a recurrent
    synapse on the hidden layer so that its fields are checked too."""
    net = random_network([64, 16, 10], seed=0, steps=STEPS)
    rng = np.random.default_rng(1)
    hidden = dataclasses.replace(net.layers[0], recurrent=rng.normal(0, 0.2, (16, 16)),
                                 recurrent_bias=np.zeros(16))
    net = dataclasses.replace(net, layers=(hidden, net.layers[1]))
    dep = quantize_network(net, load_profile("loihi2"), graded_input=False, u_peaks=None,
                           source_sha256="", source_nir=b"", calibration="weights only")
    path = tmp_path_factory.mktemp("ranges") / "good.deploy.h5"
    save_deployment(dep, path)
    return path


def _set_attr(where: str, key: str, value) -> Callable[[h5py.File], None]:
    def edit(f: h5py.File) -> None:
        f[where].attrs[key] = value
    return edit


def _set_data(where: str, make: Callable[[np.ndarray], np.ndarray]) -> Callable[[h5py.File], None]:
    def edit(f: h5py.File) -> None:
        data = make(np.asarray(f[where]))
        del f[where]
        f.create_dataset(where, data=data)
    return edit


def _poke(where: str, value, dtype=None) -> Callable[[h5py.File], None]:
    """Set element [0] (or [0, 0]) of a dataset, rewritten as ``dtype`` if given."""
    def change(a: np.ndarray) -> np.ndarray:
        a = a.astype(dtype) if dtype is not None else a.copy()
        a[(0,) * a.ndim] = value
        return a
    return _set_data(where, change)


def _no_layers(f: h5py.File) -> None:
    for name in list(f["layers"]):
        del f[f"layers/{name}"]


def _empty_last_layer(f: h5py.File) -> None:
    for name, shape in (("weights", (0, 16)), ("bias_mant", (0,)), ("bias_exp", (0,))):
        del f[f"layers/1/{name}"]
        f.create_dataset(f"layers/1/{name}", data=np.zeros(shape, np.int32))


def _embedded_profile(old: str, new: str) -> Callable[[h5py.File], None]:
    """Edit the embedded profile and its hash together, as an attacker can."""
    def edit(f: h5py.File) -> None:
        text = f.attrs["profile_toml"]
        text = (text.decode() if isinstance(text, bytes) else str(text)).replace(old, new)
        f.attrs["profile_toml"] = text
        f.attrs["profile_sha256"] = hashlib.sha256(text.encode()).hexdigest()
    return edit


NAN = float("nan")
DEPLOYMENT_CASES = {
    # name: (edit, words the one-line error must contain)
    "weight_exp 40": (_set_attr("layers/0", "weight_exp", 40), ["weight_exp 40", "-8..7"]),
    "weight_exp 5000": (_set_attr("layers/0", "weight_exp", 5000), ["weight_exp 5000"]),
    "weight_exp -5000": (_set_attr("layers/1", "weight_exp", -5000), ["weight_exp -5000"]),
    "weight_exp 1e300": (_set_attr("layers/0", "weight_exp", 1e300), ["weight_exp", "integer"]),
    "weight_exp 2.5": (_set_attr("layers/0", "weight_exp", 2.5), ["weight_exp", "integer"]),
    "weight_exp NaN": (_set_attr("layers/0", "weight_exp", NAN), ["weight_exp", "integer"]),
    "recurrent weight_exp 40": (_set_attr("layers/0/recurrent", "weight_exp", 40),
                                ["recurrent", "weight_exp 40"]),
    "input_scale 0": (_set_attr("/", "input_scale", 0), ["input_scale 0"]),
    "input_scale -3": (_set_attr("/", "input_scale", -3), ["input_scale -3"]),
    "input_scale 2 for spikes": (_set_attr("/", "input_scale", 2), ["input_scale 2"]),
    "input_size inf": (_set_attr("/", "input_size", float("inf")), ["input_size", "integer"]),
    "bias_exp 2**31-1": (_poke("layers/0/bias_exp", 2**31 - 1), ["bias_exp", "0..7"]),
    "bias_exp -1": (_poke("layers/0/bias_exp", -1), ["bias_exp", "0..7"]),
    "bias_mant 2**31-1": (_poke("layers/1/bias_mant", 2**31 - 1), ["bias_mant", "-4096..4095"]),
    "bias_mant beyond int32": (_poke("layers/1/bias_mant", 2**40, np.int64),
                               ["bias_mant", "int32"]),
    "weight 300": (_poke("layers/0/weights", 300), ["weights", "-256..255"]),
    "weight -1000": (_poke("layers/1/weights", -1000), ["weights", "-256..255"]),
    "recurrent weight 999": (_poke("layers/0/recurrent/weights", 999), ["recurrent", "weights"]),
    "NaN float weight": (_poke("layers/0/weights", NAN, np.float64), ["weights", "integers"]),
    "fractional float weight": (_poke("layers/0/weights", 0.5, np.float64), ["weights", "integers"]),
    "num_weight_bits 0": (_set_attr("layers/0", "num_weight_bits", 0), ["num_weight_bits 0", "1..9"]),
    "num_weight_bits -3": (_set_attr("layers/0", "num_weight_bits", -3), ["num_weight_bits -3"]),
    "num_weight_bits 100": (_set_attr("layers/1", "num_weight_bits", 100), ["num_weight_bits 100"]),
    "num_message_bits 10**9": (_set_attr("layers/0", "num_message_bits", 10**9),
                               ["num_message_bits 1000000000", "0..24"]),
    "num_message_bits -1 in layer 1": (_set_attr("layers/1", "num_message_bits", -1),
                                       ["num_message_bits -1"]),
    "dt NaN": (_set_attr("/", "dt", NAN), ["dt = nan"]),
    "dt 0": (_set_attr("/", "dt", 0.0), ["dt = 0"]),
    "dt -1e-3": (_set_attr("/", "dt", -1e-3), ["dt = -0.001"]),
    "dt inf": (_set_attr("/", "dt", float("inf")), ["dt = inf"]),
    "no layers": (_no_layers, ["no layers"]),
    "zero-size layer": (_empty_last_layer, ["layer 1", "at least one neuron"]),
    "scale NaN": (_set_attr("layers/0", "scale", NAN), ["scale nan"]),
    "scale 0": (_set_attr("layers/1", "scale", 0.0), ["scale 0"]),
    "scale -1": (_set_attr("layers/1", "scale", -1.0), ["scale -1"]),
    "stats u_peak_share NaN": (_set_attr("layers/0/stats", "u_peak_share", NAN), ["stats"]),
    "stats weights_saturated NaN": (_set_attr("layers/0/stats", "weights_saturated", NAN),
                                    ["weights_saturated", "integer"]),
    "stats weights_total -1": (_set_attr("layers/0/stats", "weights_total", -1), ["stats"]),
    "stats threshold_saturated text": (_set_attr("layers/0/stats", "threshold_saturated", "yes"),
                                       ["threshold_saturated"]),
    "du 5000": (_set_attr("layers/0", "du", 5000), ["du=5000", "0..4095"]),
    "dv -1": (_set_attr("layers/1", "dv", -1), ["dv=-1"]),
    "vth 2**17": (_set_attr("layers/0", "vth", 2**17), ["vth=131072", "0..131071"]),
    "vth NaN": (_set_attr("layers/0", "vth", NAN), ["vth", "integer"]),
    "sign mode bogus": (_set_attr("layers/0", "sign_mode", "bogus"), ["sign mode 'bogus'"]),
    "version NaN": (_set_attr("/", "version", NAN), ["version"]),
    "embedded profile state_bits 1": (_embedded_profile("state_bits = 24", "state_bits = 1"),
                                      ["state_bits = 1", "2..24"]),
    "embedded profile exp_min -5000": (_embedded_profile("exp_min = -8", "exp_min = -5000"),
                                       ["exp_min = -5000", "-8..7"]),
}


def test_the_unedited_deployment_loads_and_runs(good_deployment):
    # Not through main(): its progress bar (tqdm) fixes multiprocessing's start method, after
    # which importing Lava in this process fails ("context has already been set").
    dep = load_deployment(good_deployment)
    rec = run_emulator(dep, np.ones((STEPS, 2, dep.input_size), np.float32))
    assert rec.output.shape == (STEPS, 2, 10)


@pytest.mark.parametrize("case", list(DEPLOYMENT_CASES))
def test_deployment_fields_outside_lavas_formats_are_refused(good_deployment, tmp_path, capsys,
                                                             case):
    edit, names = DEPLOYMENT_CASES[case]
    path = tmp_path / "evil.deploy.h5"
    shutil.copyfile(good_deployment, path)
    with h5py.File(path, "r+") as f:
        edit(f)
    _refused(["evaluate", str(path), "--backend", "emulator", "--limit", "5"], capsys, *names)


# ---------------------------------------------------------------------------------- profiles


@pytest.fixture(scope="module")
def nir_path(tmp_path_factory) -> Path:
    """A valid one-layer graph Input(64) -> Affine -> LIF(10) -> Output."""
    rng = np.random.default_rng(0)
    n_in, n = 64, 10
    nodes = {"input": nir.Input(input_type=np.array([n_in])),
             "fc": nir.Affine(weight=rng.normal(0, 0.5, (n, n_in)).astype(np.float32),
                              bias=np.zeros(n, np.float32)),
             "lif": nir.LIF(tau=np.full(n, 1e-2, np.float32), r=np.ones(n, np.float32),
                            v_leak=np.zeros(n, np.float32), v_threshold=np.ones(n, np.float32)),
             "output": nir.Output(output_type=np.array([n]))}
    path = tmp_path_factory.mktemp("nir") / "chain.nir"
    nir.write(str(path), nir.NIRGraph(nodes=nodes, edges=[("input", "fc"), ("fc", "lif"),
                                                          ("lif", "output")],
                                      metadata={"dt": 1e-3}))
    return path


LOIHI2 = available_profiles()["loihi2"].read_text()
PROFILE_CASES = {
    # (line in loihi2.toml, replacement): words the one-line error must contain
    ("activation_shift = 6", "activation_shift = -1"): ["activation_shift = -1", "0..6"],
    ("activation_shift = 6", f"activation_shift = {2**40}"): [f"activation_shift = {2**40}"],
    ("activation_shift = 6", f"activation_shift = {10**5}"): ["activation_shift = 100000"],
    ("threshold_shift = 6", f"threshold_shift = {10**5}"): ["threshold_shift = 100000", "0..6"],
    ("threshold_shift = 6", "threshold_shift = -1"): ["threshold_shift = -1"],
    ("bits = 8", "bits = 1"): ["[weights] bits = 1", "2..8"],
    ("num_weight_bits = 8", "num_weight_bits = 1"): ["num_weight_bits = 1", "2..8"],
    ("state_bits = 24", "state_bits = 1"): ["state_bits = 1", "2..24"],
    ("state_bits = 24", "state_bits = 16"): ["threshold_bits + threshold_shift", "state_bits - 1"],
    ("state_bits = 24", "state_bits = 64"): ["state_bits = 64"],
    ("du_offset = 1", "du_offset = -1"): ["du_offset = -1", "0..1"],
    ("dv_offset = 0", "dv_offset = 7"): ["dv_offset = 7", "0..1"],
    ("exp_min = -8", "exp_min = -5000"): ["exp_min = -5000", "-8..7"],
    ("exp_max = 7", "exp_max = 5000"): ["exp_max = 5000", "-8..7"],
    ("decay_bits = 12", "decay_bits = 0"): ["decay_bits = 0", "1..12"],
    ("decay_bits = 12", "decay_bits = 40"): ["decay_bits = 40"],
    ("threshold_bits = 17", "threshold_bits = 40"): ["threshold_bits = 40", "1..17"],
    ("bias_mant_bits = 13", "bias_mant_bits = 1"): ["bias_mant_bits = 1", "2..13"],
    ("bias_exp_max = 7", "bias_exp_max = 8"): ["bias_exp_max = 8", "0..7"],
    ("bias_exp_max = 7", "bias_exp_max = -1"): ["bias_exp_max = -1"],
    ("graded_bits = 8", "graded_bits = 0"): ["graded_bits = 0", "1..24"],
    ("graded_bits = 8", "graded_bits = 64"): ["graded_bits = 64"],
}


def test_every_profile_case_edits_a_line_of_loihi2():
    for old, _ in PROFILE_CASES:
        assert f"\n{old}\n" in LOIHI2, old


@pytest.mark.parametrize("case", list(PROFILE_CASES), ids=[new for _, new in PROFILE_CASES])
def test_profiles_outside_lavas_formats_are_refused_before_deploying(nir_path, tmp_path, capsys,
                                                                    case):
    old, new = case
    toml = tmp_path / "evil.toml"
    toml.write_text(LOIHI2.replace(f"\n{old}\n", f"\n{new}\n"))
    out = tmp_path / "out.deploy.h5"
    _refused(["deploy", str(nir_path), "--profile", str(toml), "--out", str(out)], capsys,
             *PROFILE_CASES[case])
    assert not out.exists()


def test_a_shipped_profile_copied_to_a_file_deploys(nir_path, tmp_path, capsys):
    toml = tmp_path / "mine.toml"
    toml.write_text(LOIHI2)
    out = tmp_path / "out.deploy.h5"
    assert main(["deploy", str(nir_path), "--profile", str(toml), "--out", str(out)]) == 0
    assert out.is_file()


@pytest.mark.parametrize("kind", ["/dev/zero", "fifo", "folder", "huge"])
def test_profiles_that_are_not_small_regular_files_are_refused_unread(nir_path, tmp_path, capsys,
                                                                      kind):
    toml = tmp_path / "evil.toml"
    if kind == "/dev/zero":
        toml.symlink_to("/dev/zero")
    elif kind == "fifo":
        os.mkfifo(toml)  # reading it would block forever
    elif kind == "folder":
        toml.mkdir()
    else:
        toml.write_text(LOIHI2 + "#" * (2 << 20))
    out = tmp_path / "out.deploy.h5"
    _refused(["deploy", str(nir_path), "--profile", str(toml), "--out", str(out)], capsys,
             "evil.toml")
    assert not out.exists()


# -------------------------------------------------------- honest stats for valid but odd values


def test_a_threshold_that_rounds_to_zero_is_warned_about_and_counted(tmp_path, capsys):
    """Weights of 1e6 against a threshold of 1: the 24-bit state forces a scale at which vth
    rounds to 0. The deployment is valid (Lava runs it), so it is written, but a warning names the
    layer and the table does not say "saturated 0.00%"."""
    n_in, n = 64, 10
    nodes = {"input": nir.Input(input_type=np.array([n_in])),
             "fc": nir.Affine(weight=np.full((n, n_in), 1e6, np.float32),
                              bias=np.zeros(n, np.float32)),
             "lif": nir.LIF(tau=np.full(n, 1e-2, np.float32), r=np.ones(n, np.float32),
                            v_leak=np.zeros(n, np.float32), v_threshold=np.ones(n, np.float32)),
             "output": nir.Output(output_type=np.array([n]))}
    src = tmp_path / "loud.nir"
    nir.write(str(src), nir.NIRGraph(nodes=nodes, edges=[("input", "fc"), ("fc", "lif"),
                                                         ("lif", "output")],
                                     metadata={"dt": 1e-3}))
    out = tmp_path / "loud.deploy.h5"
    capsys.readouterr()
    assert main(["deploy", str(src), "--profile", "loihi2", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert any(line.startswith("warning: layer 'lif'") and "vth = 0" in line
               for line in captured.err.splitlines()), captured.err
    assert "0.00%" not in captured.out, captured.out
    layer = load_deployment(out).layers[0]
    assert layer.vth == 0 and layer.stats.threshold_saturated
    assert layer.stats.saturated_share > 0


@pytest.mark.parametrize("case", ["NaN weight", "inf threshold", "1e300 weights", "no neurons"])
def test_float_values_no_scale_can_represent_are_refused_by_name(case):
    layer = random_network([4, 3], seed=0).layers[0]
    if case == "NaN weight":
        weight = layer.weight.copy()
        weight[0, 0] = np.nan
        layer = dataclasses.replace(layer, weight=weight)
    elif case == "inf threshold":
        layer = dataclasses.replace(layer, spec=dataclasses.replace(
            layer.spec, v_threshold=np.full(3, np.inf)))
    elif case == "1e300 weights":
        layer = dataclasses.replace(layer, weight=np.full((3, 4), 1e300),
                                    spec=dataclasses.replace(layer.spec, r=np.full(3, 1e300)))
        assert u_peak_bound(layer) == np.inf  # without a warning: quantize_layer refuses it
    else:
        layer = dataclasses.replace(layer, weight=np.zeros((0, 4)), bias=np.zeros(0))
    with pytest.raises(QuantizationError, match="layer 'lif0'") as info:
        quantize_layer(layer, load_profile("loihi2"), u_peak=1.0, input_scale=1,
                       num_message_bits=0)
    assert "\n" not in str(info.value)
