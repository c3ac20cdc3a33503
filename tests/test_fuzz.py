"""Mutation fuzzing of every file reader: a damaged file is refused with a UserError (one line, exit 2
at the CLI), never another exception; what loads must also run.

Mutations of real files (a trained model's NIR graph and Deployment, its netx export, a shipped
profile): truncation, bit flips, overwritten byte runs. Hypothesis draws them; CI replays the same
examples (tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from snn_deploy.errors import UserError
from snn_deploy.profiles import available_profiles, load_profile, parse_profile
from snn_deploy.run.emulator import run_emulator
from snn_deploy.targets import load_target

from tests.factories import EXAMPLES, damaged, mutations


def _loads_or_refuses(path: Path, spikes: torch.Tensor) -> None:
    """Load as the CLI does; what loads must run on the emulator (deployments) too."""
    try:
        target = load_target(path)
        if target.deployment is not None:
            dep = target.deployment
            x = spikes[:, :, :dep.input_size] if spikes.shape[2] >= dep.input_size else \
                torch.zeros(spikes.shape[0], spikes.shape[1], dep.input_size)
            rec = run_emulator(dep, x)
            assert rec.output.shape[:2] == (x.shape[0], x.shape[1])
    except UserError as exc:
        assert "\n" not in str(exc) and str(exc)


@pytest.fixture(scope="module")
def originals(small_model_files, tmp_path_factory):
    from snn_deploy import api
    from snn_deploy.quantize.netx_write import write_netx

    folder = tmp_path_factory.mktemp("fuzz")
    netx = folder / "m.net"
    write_netx(api.deploy(small_model_files["nir"], profile="loihi2-netx").deployment, netx)
    return {"nir": Path(small_model_files["nir"]).read_bytes(),
            "deployment": Path(small_model_files["deployment"]).read_bytes(),
            "netx": netx.read_bytes(), "folder": folder}


SPIKES = (torch.rand(6, 3, 64, generator=torch.Generator().manual_seed(0)) < 0.3).float()


@pytest.mark.parametrize("kind", ["nir", "deployment"])
@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.data_too_large])
@given(data=st.data())
def test_damaged_model_files_are_refused_or_run(originals, kind, data, tmp_path):
    blob = originals[kind]
    path = tmp_path / ("m.nir" if kind == "nir" else "m.deploy.h5")
    path.write_bytes(damaged(blob, data.draw(mutations(len(blob)))))
    _loads_or_refuses(path, SPIKES)


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.data_too_large])
@given(data=st.data())
def test_damaged_netx_files_are_refused_or_load(originals, data, tmp_path):
    from snn_deploy.quantize.netx_read import read_netx

    blob = originals["netx"]
    path = tmp_path / "m.net"
    path.write_bytes(damaged(blob, data.draw(mutations(len(blob)))))
    try:
        dep = read_netx(path, profile=load_profile("loihi2-netx"))
        run_emulator(dep, torch.zeros(4, 2, dep.input_size))
    except UserError as exc:
        assert "\n" not in str(exc) and str(exc)


def _within_lavas_formats(profile) -> None:
    """What parses must lie within the table of limits (snn_deploy/lava_formats.py)."""
    from snn_deploy.profiles import PROFILE_RANGES

    for field, (lo, hi) in PROFILE_RANGES.items():
        assert lo <= getattr(profile, field) <= hi, (field, getattr(profile, field))
    assert profile.weight_exp_min <= profile.weight_exp_max
    assert profile.num_weight_bits <= profile.weight_bits
    assert profile.threshold_bits + profile.threshold_shift < profile.state_bits


@settings(max_examples=EXAMPLES * 2, deadline=None)
@given(data=st.data())
def test_damaged_profiles_are_refused_or_parse_within_lavas_formats(data):
    text = available_profiles()["loihi2"].read_text()
    mutated = damaged(text.encode(), data.draw(mutations(len(text))))
    try:
        profile = parse_profile(mutated.decode("utf-8", errors="replace"), origin="fuzz")
    except UserError as exc:
        assert "\n" not in str(exc) and str(exc)
    else:
        _within_lavas_formats(profile)


# Each key's valid values with the rest of loihi2.toml unchanged: its range in PROFILE_RANGES,
# narrowed by the keys it must fit with (num_weight_bits = 8 needs bits = 8; the 17-bit threshold
# shifted by 6 needs state_bits = 24).
VALID_WITH_LOIHI2 = {"bits": range(8, 9), "num_weight_bits": range(2, 9), "exp_min": range(-8, 8),
                     "state_bits": range(24, 25), "decay_bits": range(1, 13),
                     "threshold_bits": range(1, 18), "activation_shift": range(0, 7),
                     "threshold_shift": range(0, 7), "graded_bits": range(1, 25),
                     "du_offset": range(0, 2), "bias_exp_max": range(0, 8)}
ABSURD = [-1, 0, 1, 2, 7, 8, 24, 25, 10**5, 10**9, 2**40, -5000, 1.5, "8", True, float("nan")]


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return "nan" if value != value else repr(value)


@pytest.mark.parametrize("key", list(VALID_WITH_LOIHI2))
@pytest.mark.parametrize("value", ABSURD, ids=repr)
def test_absurd_profile_values_are_refused_naming_the_key(value, key):
    text = available_profiles()["loihi2"].read_text()
    lines = [f"{key} = {_toml_value(value)}" if line.startswith(f"{key} =") else line
             for line in text.splitlines()]
    valid = type(value) is int and value in VALID_WITH_LOIHI2[key]
    if valid:
        _within_lavas_formats(parse_profile("\n".join(lines), origin="fuzz"))
        return
    with pytest.raises(UserError) as info:
        parse_profile("\n".join(lines), origin="fuzz")
    message = str(info.value)
    assert "\n" not in message and key in message, message


@settings(max_examples=EXAMPLES, deadline=None)
@given(shape=st.lists(st.integers(0, 5), min_size=0, max_size=4),
       dtype=st.sampled_from(["float32", "float64", "int8", "uint8", "bool", "complex64", "<U3"]),
       special=st.sampled_from([None, "nan", "inf", "neg", "big"]))
def test_run_inputs_are_refused_or_run(small_model_files, tmp_path_factory, shape, dtype, special):
    from snn_deploy import api

    arr = np.zeros(shape, dtype=dtype)
    if arr.size and special and arr.dtype.kind == "f":
        arr.flat[0] = {"nan": np.nan, "inf": np.inf, "neg": -1.0, "big": 1e30}[special]
    path = tmp_path_factory.mktemp("npy") / "x.npy"
    np.save(path, arr)
    try:
        api.run(small_model_files["deployment"], input_path=path, backend="emulator")
    except UserError as exc:
        assert "\n" not in str(exc) and str(exc)


# --------------------------------------------------------------------------------------------
# Structured defects: files that are valid HDF5 and valid-looking NIR, but wrong inside.

def _with_edges(edges):
    """A valid graph file whose edge list is then replaced (nir refuses to write bad edges)."""
    def make(path: Path) -> Path:
        import h5py

        _write(_graph(), path)
        with h5py.File(path, "r+") as f:
            del f["node/edges"]
            f["node"].create_dataset("edges", data=np.array(edges, dtype=object),
                                     dtype=h5py.string_dtype())
        return path
    return make


def _graph(w1=None, tau_mem=0.01, extra_edges=(), drop_edges=()):
    import nir

    w1 = np.ones((3, 2)) * 0.5 if w1 is None else w1
    n = w1.shape[0]
    nodes = {
        "input": nir.Input(input_type=np.array([2])),
        "fc": nir.Affine(weight=w1, bias=np.zeros(n)),
        "lif": nir.LIF(tau=np.full(n, tau_mem), r=np.ones(n), v_leak=np.zeros(n),
                       v_threshold=np.ones(n)),
        "output": nir.Output(output_type=np.array([n])),
    }
    edges = [e for e in [("input", "fc"), ("fc", "lif"), ("lif", "output")] if e not in drop_edges]
    return nir.NIRGraph(nodes=nodes, edges=edges + list(extra_edges), metadata={"dt": 1e-3})


def _write(graph, path: Path) -> Path:
    import nir

    nir.write(path, graph)
    return path


@pytest.mark.parametrize("case, graph", [
    ("NaN weight", lambda: _graph(w1=np.array([[np.nan, 0.0], [0.0, 1.0], [1.0, 1.0]]))),
    ("Inf weight", lambda: _graph(w1=np.array([[np.inf, 0.0], [0.0, 1.0], [1.0, 1.0]]))),
    ("zero tau", lambda: _graph(tau_mem=0.0)),
    ("negative tau", lambda: _graph(tau_mem=-0.01)),
    ("dangling edge", _with_edges([["input", "fc"], ["fc", "lif"], ["lif", "output"],
                                   ["lif", "nowhere"]])),
    ("cycle without a neuron", _with_edges([["input", "fc"], ["fc", "fc"], ["fc", "lif"],
                                            ["lif", "output"]])),
    ("disconnected output", lambda: _graph(drop_edges=[("lif", "output")])),
    ("no edges", _with_edges(np.zeros((0, 2), dtype=object))),
])
def test_defective_nir_graphs_are_refused(tmp_path, case, graph):
    made = graph() if graph.__name__ == "<lambda>" else graph
    path = tmp_path / "bad.nir"
    path = made(path) if callable(made) else _write(made, path)
    with pytest.raises(UserError) as info:
        load_target(path)
    assert "\n" not in str(info.value), case


def test_a_layer_claiming_a_billion_neurons_is_refused_unread(tmp_path):
    """Chunked storage lets a tiny file declare a (10**9, 64) weight matrix; reading it would
    allocate 256 GB. The size check refuses it from the declared shape alone."""
    import h5py

    path = _write(_graph(), tmp_path / "huge.nir")
    with h5py.File(path, "r+") as f:
        del f["node/nodes/fc/weight"]
        f["node/nodes/fc"].create_dataset("weight", shape=(10**9, 64), dtype="f4", chunks=(1, 64))
    assert path.stat().st_size < 100_000
    with pytest.raises(UserError, match="claims shape"):
        load_target(path)


@pytest.mark.parametrize("kind", ["deployment", "netx"])
def test_deployment_and_netx_files_claiming_huge_arrays_are_refused_unread(originals, tmp_path, kind):
    import h5py
    from snn_deploy.quantize.netx_read import read_netx

    path = tmp_path / ("m.deploy.h5" if kind == "deployment" else "m.net")
    path.write_bytes(originals[kind])
    with h5py.File(path, "r+") as f:
        f.create_dataset("extra", shape=(10**9, 64), dtype="f4", chunks=(1, 64))
    with pytest.raises(UserError, match="claims shape"):
        load_target(path) if kind == "deployment" else read_netx(path, profile=load_profile("loihi2-netx"))
