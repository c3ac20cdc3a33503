"""A NIR Conv2d between two neurons stays a native conv: read from the file (``convert.conv``), run
in float with torch's conv2d, quantized to a Lava Conv layer (kind "conv", exponent 0), and
deployed, against the same graph with every conv lowered to a dense matrix (``native_convs=False``,
the lowering used before): the same float spikes, and, where the dense lowering's scale gives
exponent 0, bit for bit the same Deployment integers and emulator spikes."""

from __future__ import annotations

import warnings
from pathlib import Path
from unittest import mock

import nir
import numpy as np
import pytest
import torch
from snn_deploy import api
from snn_deploy.cli import main
from snn_deploy.convert.conv import ConvGeometry, lowered
from snn_deploy.convert.nirgraph import graph_to_network, with_reset
from snn_deploy.quantize.deployment import load_deployment
from snn_deploy.run.emulator import run_emulator
from snn_deploy.run.float_backend import run_float

SINABS = Path(__file__).resolve().parents[2] / "shared" / "peer" / "cnn_sinabs.nir"


def _cuba(shape, threshold: float) -> nir.CubaLIF:
    ones = np.ones(shape)
    return nir.CubaLIF(tau_syn=ones * 1e-2, tau_mem=ones * 1e-2, r=ones, v_leak=0 * ones,
                       v_threshold=ones * threshold, w_in=ones)


def _graph() -> nir.NIRGraph:
    """Input 2x9x8 -> Conv2d(+bias) -> CubaLIF -> Conv2d (stride 2) -> CubaLIF -> Flatten ->
    Affine -> CubaLIF, at dt = 1 ms. The thresholds put the worst-case scale of both convs where
    the dense lowering takes weight exponent 0 (threshold / peak current vs the largest weight),
    so that the native and the lowered deployment must agree bit for bit."""
    rng = np.random.default_rng(7)
    w1 = (1.0 + 0.3 * np.abs(rng.normal(size=(4, 2, 3, 3)))).astype(np.float32)
    w2 = (1.0 + 0.3 * rng.normal(size=(3, 4, 3, 3))).astype(np.float32)
    fc = (0.3 * rng.normal(size=(5, 36)) + 0.05).astype(np.float32)
    nodes = {
        "input": nir.Input(input_type={"input": np.array([2, 9, 8])}),
        "c1": nir.Conv2d(input_shape=(9, 8), weight=w1, stride=1, padding=1, dilation=1,
                         groups=1, bias=(0.05 * rng.normal(size=4)).astype(np.float32)),
        "n1": _cuba((4, 9, 8), 2.7 * float(w1.max())),
        "c2": nir.Conv2d(input_shape=(9, 8), weight=w2, stride=2, padding=0, dilation=1,
                         groups=1, bias=np.zeros(3, np.float32)),
        "n2": _cuba((3, 4, 3), 2.0 * float(w2.max())),
        "f": nir.Flatten(input_type={"input": np.array([3, 4, 3])}, start_dim=0, end_dim=-1),
        "fc": nir.Affine(weight=fc, bias=np.zeros(5, np.float32)),
        "n3": _cuba(5, 0.5),
        "output": nir.Output(output_type={"output": np.array([5])}),
    }
    order = list(nodes)
    return nir.NIRGraph(nodes=nodes, edges=list(zip(order[:-1], order[1:])),
                        metadata={"dt": 1e-3}, type_check=False)


@pytest.fixture(scope="module")
def nir_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("nirconv") / "conv.nir"
    nir.write(path, _graph())
    return path


def _spikes(steps: int, batch: int, shape, seed: int, rate: float) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand((steps, batch, *shape), generator=gen) < rate).float()


def _deploy(path: Path, *, native: bool, **kwargs) -> api.DeployResult:
    """``api.deploy``, with the convs lowered to dense matrices unless ``native``."""
    def read(graph, **kw):
        return graph_to_network(graph, native_convs=native, **kw)

    with warnings.catch_warnings(), mock.patch("snn_deploy.api.deployment.graph_to_network", read):
        warnings.simplefilter("ignore")
        return api.deploy(path, profile="loihi2", **kwargs)


def test_single_conv_chains_stay_native(nir_path):
    net = graph_to_network(nir.read(nir_path))
    c1, c2, fc = net.layers
    assert [layer.synapse for layer in net.layers] == ["c1", "c2", "f+fc"]
    assert c1.conv == ConvGeometry(in_shape=(2, 9, 8), out_shape=(4, 9, 8), kernel=(3, 3),
                                stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1)
    assert c2.conv.out_shape == (3, 4, 3) and c2.conv.stride == (2, 2)
    assert (c1.weight.shape, c1.shape, c1.size) == ((4, 2, 3, 3), (4, 9, 8), 288)
    assert (c2.weight.shape, c2.size) == ((3, 4, 3, 3), 36)
    assert fc.conv is None and fc.weight.shape == (5, 36) and fc.shape == ()
    graph = nir.read(nir_path)
    np.testing.assert_array_equal(c1.bias, np.repeat(graph.nodes["c1"].bias, 72))
    dense = graph_to_network(graph, native_convs=False)
    assert all(layer.conv is None for layer in dense.layers)
    for native, low in zip(net.layers[:2], dense.layers[:2]):
        np.testing.assert_allclose(lowered(native.weight, native.conv), low.weight, rtol=1e-12)
        np.testing.assert_array_equal(native.bias, low.bias)


def test_pooling_and_asymmetric_padding_stay_dense():
    """A conv followed by a pool, and 'same' padding of an even kernel (more at the end), are
    lowered as before; a single Conv2d before them stays native."""
    rng = np.random.default_rng(1)
    nodes = {
        "input": nir.Input(input_type={"input": np.array([1, 6, 6])}),
        "c1": nir.Conv2d(input_shape=(6, 6), weight=rng.normal(size=(2, 1, 3, 3)), stride=1,
                         padding=1, dilation=1, groups=1, bias=np.zeros(2)),
        "n1": nir.IF(r=np.ones((2, 6, 6)), v_threshold=np.ones((2, 6, 6))),
        "c2": nir.Conv2d(input_shape=(6, 6), weight=rng.normal(size=(2, 2, 2, 2)), stride=1,
                         padding="same", dilation=1, groups=1, bias=np.zeros(2)),
        "n2": nir.IF(r=np.ones((2, 6, 6)), v_threshold=np.ones((2, 6, 6))),
        "c3": nir.Conv2d(input_shape=(6, 6), weight=rng.normal(size=(2, 2, 3, 3)), stride=1,
                         padding=1, dilation=1, groups=1, bias=np.zeros(2)),
        "p3": nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]),
                            padding=np.array([0, 0])),
        "n3": nir.IF(r=np.ones((2, 3, 3)), v_threshold=np.ones((2, 3, 3))),
        "output": nir.Output(output_type={"output": np.array([2, 3, 3])}),
    }
    order = list(nodes)
    net = graph_to_network(nir.NIRGraph(nodes=nodes, edges=list(zip(order[:-1], order[1:])),
                                        type_check=False))
    assert [layer.conv is not None for layer in net.layers] == [True, False, False]
    assert [layer.weight.shape for layer in net.layers] == [(2, 1, 3, 3), (72, 72), (18, 72)]


def test_float_backend_runs_native_convs_as_the_dense_lowering(nir_path):
    graph = nir.read(nir_path)
    native, dense = graph_to_network(graph), graph_to_network(graph, native_convs=False)
    for reset in ("zero", "sinabs"):
        x = _spikes(60, 4, (2, 9, 8), seed=1, rate=0.5)
        a = run_float(with_reset(native, reset), x)
        b = run_float(with_reset(dense, reset), x)
        assert all(int(c.sum()) > 100 for c in a.recording.counts), reset  # every layer spikes
        np.testing.assert_array_equal(a.recording.output, b.recording.output)
        for ca, cb in zip(a.recording.counts, b.recording.counts):
            np.testing.assert_array_equal(ca, cb)
        np.testing.assert_allclose(a.u_peaks, b.u_peaks, rtol=1e-5)


def test_deploy_gives_conv_layers_bit_identical_to_the_dense_lowering(nir_path, tmp_path):
    out = tmp_path / "conv.deploy.h5"
    assert main(["deploy", str(nir_path), "--out", str(out)]) == 0
    dep = load_deployment(out)
    assert [layer.kind for layer in dep.layers] == ["conv", "conv", "dense"]
    assert dep.layers[0].conv.out_shape == (4, 9, 8) and dep.layers[1].shape == (3, 4, 3)
    assert all(layer.weight_exp == 0 for layer in dep.layers[:2])
    dense = _deploy(nir_path, native=False).deployment
    assert [layer.weight_exp for layer in dense.layers[:2]] == [0, 0]  # the graph is made so
    for conv, low in zip(dep.layers, dense.layers):
        assert conv.scale == low.scale and conv.vth == low.vth
        np.testing.assert_array_equal(conv.bias_mant, low.bias_mant)
        weights = lowered(conv.weights, conv.conv) if conv.conv else conv.weights
        np.testing.assert_array_equal(weights, low.weights)
    x = _spikes(60, 4, (2, 9, 8), seed=2, rate=0.5).numpy()
    a, b = run_emulator(dep, x), run_emulator(dense, x)
    assert all(int(c.sum()) > 50 for c in a.counts), [int(c.sum()) for c in a.counts]
    np.testing.assert_array_equal(a.output, b.output)
    for ca, cb in zip(a.counts, b.counts):
        np.testing.assert_array_equal(ca, cb)


def test_calibrated_deploy_keeps_conv_layers_as_faithful_as_dense(nir_path, tmp_path):
    x = _spikes(30, 3, (2, 9, 8), seed=3, rate=0.5).numpy()
    np.save(tmp_path / "cal.npy", x)
    result = _deploy(nir_path, native=True, calibration=str(tmp_path / "cal.npy"))
    dense = _deploy(nir_path, native=False, calibration=str(tmp_path / "cal.npy"))
    assert [layer.kind for layer in result.deployment.layers] == ["conv", "conv", "dense"]
    # calibrated, the dense lowering of c1 takes exponent 1 (a 2x larger scale than the conv's):
    # the deployed rates still follow the float graph's as closely
    assert dense.deployment.layers[0].weight_exp == 1
    for a, b in zip(result.fidelity, dense.fidelity):
        assert a.rate_corr > b.rate_corr - 0.02 and abs(a.rate_fixed - b.rate_fixed) < 0.01, (a, b)


@pytest.mark.slow
def test_sinabs_cnn_deploys_with_native_convs_and_the_same_spikes(tmp_path):
    """The NIR paper's Sinabs N-MNIST CNN: its two single-Conv2d chains become Lava Conv layers
    (the conv + pool chain and the Flatten + Affine ones stay dense). The dense lowering takes
    weight exponents 5 and 3 there, the native conv 0 at a 32x and 8x smaller scale; the
    mantissas are the same, and on these IF neurons (no leak, no bias) only the threshold's
    rounding could differ, which here it does not: the emulator spikes are equal on every layer."""
    if not SINABS.is_file():
        pytest.skip(f"peer graph {SINABS} not found (it ships in the workspace's shared/peer)")
    native = _deploy(SINABS, native=True, source_reset="sinabs").deployment
    dense = _deploy(SINABS, native=False, source_reset="sinabs").deployment
    assert [layer.kind for layer in native.layers] == ["conv", "conv", "dense", "dense", "dense"]
    assert [layer.synapse for layer in native.layers] == [layer.synapse for layer in dense.layers]
    n_native = sum(layer.weights.size for layer in native.layers)
    n_dense = sum(layer.weights.size for layer in dense.layers)
    assert n_dense > 28_000_000 and n_native < 2_300_000
    api.write_deployment(native, tmp_path / "native.h5")
    api.write_deployment(dense, tmp_path / "dense.h5")
    assert (tmp_path / "native.h5").stat().st_size < 0.5 * (tmp_path / "dense.h5").stat().st_size
    x = _spikes(100, 2, (native.input_size,), seed=0, rate=0.1).numpy()
    a, b = run_emulator(native, x), run_emulator(dense, x)
    assert int(a.counts[-1].sum()) > 20
    np.testing.assert_array_equal(a.output, b.output)
    for ca, cb in zip(a.counts, b.counts):
        np.testing.assert_array_equal(ca, cb)
