"""NIR import of other writers' graphs: linear nodes composed into one matrix (checked against
torch's own ops), nested subgraphs, writer conventions, Threshold, and conv graphs end to end."""

from __future__ import annotations

import warnings

import nir
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from snn_deploy import api
from snn_deploy.convert.lowering import compose
from snn_deploy.convert.nirfile import read_nir
from snn_deploy.convert.nirgraph import graph_to_network, with_reset
from snn_deploy.errors import UnsupportedNode, UserError
from snn_deploy.quantize.deployment import save_deployment
from snn_deploy.run.emulator import run_emulator
from snn_deploy.run.float_backend import run_float

RNG = np.random.default_rng(0)


def _w(*shape: int) -> np.ndarray:
    return RNG.normal(size=shape).astype(np.float32)


def _conv2d(c_in, c_out, k, hw, *, stride=1, padding=1, dilation=1, groups=1) -> nir.Conv2d:
    return nir.Conv2d(input_shape=hw, weight=_w(c_out, c_in // groups, k, k), stride=stride,
                      padding=padding, dilation=dilation, groups=groups, bias=_w(c_out))


def _torch(node: nir.NIRNode, x: torch.Tensor) -> torch.Tensor:
    """The reference: each NIR node as torch's own op, on a (N, *shape) float64 batch."""
    t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float64)  # noqa: E731
    if isinstance(node, nir.Conv2d):
        return F.conv2d(x, t(node.weight), t(node.bias), stride=tuple(np.broadcast_to(
            node.stride, 2)), padding=node.padding if isinstance(node.padding, str)
            else tuple(np.broadcast_to(node.padding, 2)), dilation=tuple(np.broadcast_to(
                node.dilation, 2)), groups=int(node.groups))
    if isinstance(node, nir.Conv1d):
        return F.conv1d(x, t(node.weight), t(node.bias), stride=int(node.stride),
                        padding=node.padding, dilation=int(node.dilation), groups=int(node.groups))
    if isinstance(node, nir.SumPool2d):
        k = tuple(int(s) for s in node.kernel_size)
        return F.avg_pool2d(x, k, tuple(int(s) for s in node.stride),
                            tuple(int(s) for s in node.padding)) * (k[0] * k[1])
    if isinstance(node, nir.AvgPool2d):
        return F.avg_pool2d(x, tuple(int(s) for s in node.kernel_size),
                            tuple(int(s) for s in node.stride), tuple(int(s) for s in node.padding))
    if isinstance(node, nir.Flatten):
        return torch.flatten(x, int(node.start_dim) + 1)
    if isinstance(node, nir.Scale):
        return x * t(node.scale)
    if isinstance(node, nir.Affine):
        return x @ t(node.weight).T + t(node.bias)
    if isinstance(node, nir.Linear):
        return x @ t(node.weight).T
    raise AssertionError(type(node).__name__)


def _check(nodes: list[nir.NIRNode], in_shape: tuple[int, ...]) -> None:
    amap = compose([(str(i), n) for i, n in enumerate(nodes)], in_shape)
    x = torch.as_tensor(RNG.normal(size=(5, *in_shape)))
    want = x
    for node in nodes:
        want = _torch(node, want)
    assert amap.out_shape == tuple(want.shape[1:])
    got = x.reshape(5, -1).numpy() @ amap.weight.T + amap.bias
    np.testing.assert_allclose(got, want.reshape(5, -1).numpy(), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("nodes, shape", [
    ([_conv2d(2, 4, 5, (9, 9), stride=2, padding=1)], (2, 9, 9)),
    ([_conv2d(4, 6, 3, (7, 6), padding=2, dilation=2, groups=2)], (4, 7, 6)),
    ([_conv2d(3, 3, 3, (6, 6), padding="same")], (3, 6, 6)),
    ([nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]),
                    padding=np.array([0, 0]))], (3, 6, 6)),
    ([nir.AvgPool2d(kernel_size=np.array([3, 3]), stride=np.array([2, 2]),
                    padding=np.array([1, 1]))], (2, 7, 7)),
    ([nir.Conv1d(input_shape=10, weight=_w(3, 2, 3), stride=2, padding=1, dilation=1, groups=1,
                 bias=_w(3))], (2, 10)),
    ([nir.Scale(scale=_w(3, 1, 1))], (3, 4, 4)),
    # a Sinabs-like tail: pool, flatten (C-major), Affine; and a conv after a pool
    ([nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]),
                    padding=np.array([0, 0])),
      nir.Flatten(input_type={"input": np.array([4, 4, 4])}, start_dim=0, end_dim=-1),
      nir.Affine(weight=_w(5, 16), bias=_w(5))], (4, 4, 4)),
    ([nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]),
                    padding=np.array([0, 0])), _conv2d(4, 3, 3, (4, 4))], (4, 8, 8)),
    ([nir.Affine(weight=_w(6, 4), bias=_w(6)), nir.Linear(weight=_w(3, 6))], (4,)),
])
def test_linear_nodes_compose_into_the_map_torch_computes(nodes, shape):
    _check(nodes, shape)


def test_a_single_affine_keeps_its_weights_bit_for_bit():
    node = nir.Affine(weight=_w(7, 5), bias=_w(7))
    amap = compose([("fc", node)], (5,))
    np.testing.assert_array_equal(amap.weight, node.weight.astype(np.float64))
    np.testing.assert_array_equal(amap.bias, node.bias.astype(np.float64))


def _conv_graph(*, with_threshold: bool = False) -> nir.NIRGraph:
    """Input 2x8x8 -> Conv2d -> IF -> SumPool2d -> Conv2d -> IF -> Flatten -> Affine -> IF|Threshold."""
    rng = np.random.default_rng(5)  # the same graph on every call
    _w = lambda *shape: rng.normal(size=shape).astype(np.float32)  # noqa: E731
    nodes = {
        "input": nir.Input(input_type={"input": np.array([2, 8, 8])}),
        "c1": nir.Conv2d(input_shape=(8, 8), weight=np.abs(_w(4, 2, 3, 3)), stride=1, padding=1,
                         dilation=1, groups=1, bias=np.zeros(4, np.float32)),
        "n1": nir.IF(r=np.ones((4, 8, 8)), v_threshold=np.full((4, 8, 8), 1.5)),
        "p1": nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]),
                            padding=np.array([0, 0])),
        "c2": nir.Conv2d(input_shape=(4, 4), weight=_w(3, 4, 3, 3) + 0.3, stride=1, padding=1,
                         dilation=1, groups=1, bias=np.zeros(3, np.float32)),
        "n2": nir.IF(r=np.ones((3, 4, 4)), v_threshold=np.full((3, 4, 4), 2.0)),
        "f": nir.Flatten(input_type={"input": np.array([3, 4, 4])}, start_dim=0, end_dim=-1),
        "fc": nir.Affine(weight=_w(5, 48) * 0.2 + 0.02, bias=np.zeros(5, np.float32)),
        "n3": nir.Threshold(threshold=np.full(5, 1.0)) if with_threshold
        else nir.IF(r=np.ones(5), v_threshold=np.full(5, 1.0)),
        "output": nir.Output(output_type={"output": np.array([5])}),
    }
    order = list(nodes)
    return nir.NIRGraph(nodes=nodes, edges=list(zip(order[:-1], order[1:])), type_check=False)


def _reference(graph: nir.NIRGraph, x: torch.Tensor) -> torch.Tensor:
    """(T, B, 2, 8, 8) -> (T, B, 5) output spikes of the conv graph, node by node in torch."""
    order = [n for n in graph.nodes if n not in ("input", "output")]
    v: dict[str, torch.Tensor] = {}
    out = []
    for t in range(x.shape[0]):
        h = x[t].to(torch.float64)
        for name in order:
            node = graph.nodes[name]
            if isinstance(node, nir.IF):
                v[name] = v.get(name, torch.zeros_like(h)) + h
                z = v[name] > torch.as_tensor(node.v_threshold.reshape(h.shape[1:]))
                v[name] = torch.where(z, 0.0, v[name])
                h = z.to(torch.float64)
            elif isinstance(node, nir.Threshold):
                h = (h > torch.as_tensor(node.threshold)).to(torch.float64)
            else:
                h = _torch(node, h)
        out.append(h)
    return torch.stack(out)


@pytest.mark.parametrize("threshold", [False, True])
def test_conv_graph_on_the_float_backend_equals_torch_ops(threshold):
    graph = _conv_graph(with_threshold=threshold)
    net = graph_to_network(graph)
    assert [layer.synapse for layer in net.layers] == ["c1", "p1+c2", "f+fc"]
    assert net.shape == (2, 8, 8) and net.input_size == 128
    x = (torch.rand(30, 3, 2, 8, 8, generator=torch.Generator().manual_seed(1)) < 0.3).float()
    want = _reference(graph, x)
    got = run_float(net, x).recording.output
    assert want.sum() > 20  # the graph is active
    np.testing.assert_array_equal(got, want.numpy())


def _recurrent_graph(*, w_in_rule: str, nested: bool) -> nir.NIRGraph:
    """fc -> CubaLIF with a recurrent Linear -> fc2 -> LIF; the recurrent block as a subgraph."""
    rng = np.random.default_rng(7)  # the same weights on every call
    dt, tau_syn, tau_mem, n = 1e-4, np.full(6, 4e-4), np.full(6, 8e-4), 6
    w_in = tau_syn / dt if w_in_rule == "snntorch" else np.ones(n)
    r = tau_mem / dt if w_in_rule == "snntorch" else np.ones(n)
    lif = nir.CubaLIF(tau_syn=tau_syn, tau_mem=tau_mem, r=r, v_leak=np.zeros(n),
                      v_threshold=np.ones(n), w_in=w_in)
    rec = nir.Linear(weight=rng.normal(size=(n, n)).astype(np.float32) * 0.3)
    nodes = {"input": nir.Input(input_type={"input": np.array([4])}),
             "fc": nir.Affine(weight=np.abs(rng.normal(size=(n, 4))).astype(np.float32),
                              bias=np.zeros(n, np.float32)),
             "fc2": nir.Linear(weight=rng.normal(size=(3, n)).astype(np.float32)),
             "out": nir.LIF(tau=np.full(3, 5e-4), r=np.full(3, 5.0), v_leak=np.zeros(3),
                            v_threshold=np.full(3, 0.5)),
             "output": nir.Output(output_type={"output": np.array([3])})}
    edges = [("input", "fc"), ("fc2", "out"), ("out", "output")]
    if nested:
        nodes["block"] = nir.NIRGraph(
            nodes={"input": nir.Input(input_type={"input": np.array([n])}), "lif": lif,
                   "w_rec": rec, "output": nir.Output(output_type={"output": np.array([n])})},
            edges=[("input", "lif"), ("lif", "w_rec"), ("w_rec", "lif"), ("lif", "output")],
            type_check=False)
        edges += [("fc", "block"), ("block", "fc2")]
    else:
        nodes["block.lif"], nodes["block.w_rec"] = lif, rec
        edges += [("fc", "block.lif"), ("block.lif", "block.w_rec"), ("block.w_rec", "block.lif"),
                  ("block.lif", "fc2")]
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={"dt": dt}, type_check=False)


def test_nested_subgraphs_are_inlined(tmp_path):
    flat = graph_to_network(_recurrent_graph(w_in_rule="norse", nested=False))
    path = tmp_path / "nested.nir"
    nir.write(path, _recurrent_graph(w_in_rule="norse", nested=True))
    nested = graph_to_network(read_nir(path))
    assert isinstance(read_nir(path).nodes["block"], nir.NIRGraph)  # nir keeps it nested
    in_memory = graph_to_network(_recurrent_graph(w_in_rule="norse", nested=True))
    assert [layer.neuron for layer in in_memory.layers] == ["block.lif", "out"]
    assert [(layer.synapse, layer.neuron, layer.recurrent_synapse) for layer in nested.layers] == \
        [("fc", "block.lif", "block.w_rec"), ("fc2", "out", None)]
    for a, b in zip(flat.layers, nested.layers):
        np.testing.assert_allclose(a.recurrent if a.recurrent is not None else 0,
                                   b.recurrent if b.recurrent is not None else 0, rtol=1e-7)
        np.testing.assert_allclose(a.weight, b.weight, rtol=1e-7)


def test_snntorch_w_in_convention_matches_snntorch_dynamics():
    """snnTorch's Synaptic: syn = alpha syn + x, mem = beta mem + syn, reset to zero; it writes
    w_in = tau_syn/dt and r = tau_mem/dt (NIR's forward-Euler form)."""
    graph = _recurrent_graph(w_in_rule="snntorch", nested=False)
    net = graph_to_network(graph)
    assert any("snnTorch" in note for note in net.notes)
    norse = graph_to_network(_recurrent_graph(w_in_rule="norse", nested=False))
    assert not norse.notes
    layer = net.layers[0]
    x = (torch.rand(40, 2, 4, generator=torch.Generator().manual_seed(2)) < 0.5).double()
    alpha, beta = 1 - 1e-4 / 4e-4, 1 - 1e-4 / 8e-4
    w = torch.as_tensor(layer.weight)
    rec = torch.as_tensor(layer.recurrent)
    syn = mem = z = torch.zeros(2, 6, dtype=torch.float64)
    want = []
    for t in range(40):
        syn = alpha * syn + x[t] @ w.T + z @ rec.T
        mem = beta * mem + syn
        z = (mem > 1.0).double()
        mem = torch.where(z > 0, 0.0, mem)
        want.append(z)
    got = run_float(net, x.float()).recording
    hidden = got.counts[0]
    assert np.array_equal(hidden, torch.stack(want).sum(0).numpy().astype(np.int64))
    assert hidden.sum() > 10


def test_what_cannot_be_imported_is_named_with_a_reason():
    graph = _recurrent_graph(w_in_rule="norse", nested=False)
    graph.nodes["out"] = nir.LI(tau=np.full(3, 5e-4), r=np.ones(3), v_leak=np.zeros(3))
    with pytest.raises(UnsupportedNode, match=r"'out' \(LI: a leaky integrator sends no spikes"):
        graph_to_network(graph)
    tail = _conv_graph()
    tail.nodes["extra"] = nir.Linear(weight=_w(2, 5))
    tail.edges[-1] = ("n3", "extra")
    tail.edges.append(("extra", "output"))
    with pytest.raises(UnsupportedNode, match=r"'extra' \(Linear\) after the last neuron"):
        graph_to_network(tail)
    lif_no_dt = _recurrent_graph(w_in_rule="norse", nested=False)
    lif_no_dt.metadata = {}
    with pytest.raises(UserError, match="pass --dt"):
        graph_to_network(lif_no_dt)
    if_only = graph_to_network(_conv_graph())  # IF needs no dt: noted, not refused
    assert if_only.dt == 1.0 and "need none" in if_only.notes[0]


def test_run_and_calibrate_with_shaped_input(tmp_path):
    path = tmp_path / "conv.nir"
    nir.write(path, _conv_graph())
    x = (np.random.default_rng(3).random((20, 3, 2, 8, 8)) < 0.3).astype(np.float32)
    np.save(tmp_path / "batch.npy", x)
    np.save(tmp_path / "one.npy", x[:, 1])
    np.save(tmp_path / "flat.npy", x.reshape(20, 3, 128))
    batch = api.run(path, input_path=tmp_path / "batch.npy", backend="float").output
    assert batch.shape == (20, 3, 5)
    one = api.run(path, input_path=tmp_path / "one.npy", backend="float").output
    np.testing.assert_array_equal(one, batch[:, 1])
    flat = api.run(path, input_path=tmp_path / "flat.npy", backend="float").output
    np.testing.assert_array_equal(flat, batch)
    np.save(tmp_path / "bad.npy", x[:, :, :, :4])
    with pytest.raises(UserError, match=r"does not fit 128 input channels.*\(2, 8, 8\)"):
        api.run(path, input_path=tmp_path / "bad.npy", backend="float")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bound = api.deploy(path, profile="loihi2").deployment
        calibrated = api.deploy(path, profile="loihi2", calibration=str(tmp_path / "batch.npy"))
    assert "weights only" in bound.calibration
    assert "batch.npy: 3 samples x 20 steps" in calibrated.deployment.calibration
    assert len(calibrated.fidelity) == 3
    # calibrated scales use more of the range than the worst-case bound
    assert all(c.scale >= b.scale for c, b in zip(calibrated.deployment.layers, bound.layers))


@pytest.mark.slow
@pytest.mark.parametrize("threshold", [False, True])
def test_conv_graph_emulator_equals_lava_sim(tmp_path, threshold):
    from snn_deploy.run.lava_sim import run_lava_sim

    path = tmp_path / "conv.nir"
    nir.write(path, _conv_graph(with_threshold=threshold))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dep = api.deploy(path, profile="loihi2").deployment
    save_deployment(dep, tmp_path / "conv.deploy.h5")
    x = (np.random.default_rng(4).random((25, 3, 2, 8, 8)) < 0.3).astype(np.float32)
    emu = run_emulator(dep, x)
    lava = run_lava_sim(dep, x)
    assert all(int(c.sum()) > 0 for c in emu.counts), [int(c.sum()) for c in emu.counts]
    np.testing.assert_array_equal(emu.output, lava.output)
    for a, b in zip(emu.counts, lava.counts):
        np.testing.assert_array_equal(a, b)
    flt = run_float(graph_to_network(nir.read(path)), torch.from_numpy(x)).recording
    # float vs deployed: every layer's spike counts per (sample, neuron) correlate (measured
    # >= 0.99 here); quantization may move single spikes, not the pattern
    for a, b in zip(flt.counts, emu.counts):
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.95


def _one_if(theta: float = 1.0) -> nir.NIRGraph:
    nodes = {"input": nir.Input(input_type={"input": np.array([1])}),
             "w": nir.Linear(weight=np.ones((1, 1), np.float32)),
             "n": nir.IF(r=np.ones(1), v_threshold=np.full(1, theta)),
             "output": nir.Output(output_type={"output": np.array([1])})}
    return nir.NIRGraph(nodes=nodes, edges=[("input", "w"), ("w", "n"), ("n", "output")],
                        type_check=False)


@pytest.mark.parametrize("reset, spikes", [
    ("zero", [1, 0, 0, 1, 0]),  # NIR: v 2.5 -> 0, 0, 0.2, 1.2 -> 0, 0.9
    # snnTorch: 2.5 -> 1.5, which stays above 1, so the next spike needs v > 2: 1.5, 1.7,
    # 2.7 -> 1.7, 2.6 -> 1.6 (plain subtraction would give 1, 1, 0, 1, 1)
    ("subtract", [1, 0, 0, 1, 1]),
    ("sinabs", [2, 0, 0, 1, 1]),  # floor(2.5) = 2 spikes -> 0.5, 0.5, 0.7, 1.7 -> 0.7, 1.6 -> 0.6
])
def test_source_resets_follow_their_frameworks_rules(reset, spikes):
    """One IF (theta 1) on graded input 2.5, 0, 0.2, 1.0, 0.9: NIR's reset, snnTorch's
    subtraction with its double-reset guard, Sinabs' MultiSpike with MembraneSubtract."""
    net = with_reset(graph_to_network(_one_if()), reset)
    x = torch.tensor([2.5, 0.0, 0.2, 1.0, 0.9]).reshape(5, 1, 1)
    got = run_float(net, x).recording.output[:, 0, 0].tolist()
    assert got == spikes


def test_sinabs_floor_and_plain_subtraction_differ_from_nir():
    """Sinabs floors an IF's v at -theta (min_v_mem): after strong inhibition it recovers at once;
    NIR's IF (and Loihi's) integrates the whole deficit first."""
    net = graph_to_network(_one_if())
    x = torch.tensor([-5.0, 1.5, 1.5]).reshape(3, 1, 1)
    assert run_float(net, x).recording.output[:, 0, 0].tolist() == [0, 0, 0]  # v -5, -3.5, -2
    sinabs = with_reset(net, "sinabs")
    assert run_float(sinabs, x).recording.output[:, 0, 0].tolist() == [0, 0, 2]  # -1, 0.5, 2


def test_an_unknown_w_in_is_read_as_norses_jump_and_noted():
    graph = _recurrent_graph(w_in_rule="norse", nested=False)
    lif = graph.nodes["block.lif"]
    lif.w_in = np.full_like(lif.w_in, 0.5)
    net = graph_to_network(graph)
    assert any("neither 1 (Norse) nor tau_syn/dt" in note for note in net.notes)
    np.testing.assert_allclose(net.layers[0].spec.w_in, 0.5)
