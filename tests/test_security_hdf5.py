"""Hostile HDF5 files (NIR graphs, Deployments, netx files, the NIR copy inside a Deployment):
each is refused by the CLI with exit status 2 and one line, before its data is read.

First what HDF5 does at our boundary (STYLE.md, habit 12): h5py reads an external-storage
dataset's bytes from whatever local path the file names, and asking an unlimited virtual dataset
for its shape opens its source files, a FIFO included. Then the refusals: data or links in other
files, FIFOs, link loops, nesting without end, an Input fed straight into a million neurons,
parameters that are not numbers, empty layers, a subnormal tau, coding metadata that is not a
number.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import h5py
import nir
import numpy as np
import pytest
from h5py import h5d, h5f, h5p, h5s, h5t
from snn_deploy.cli import main
from snn_deploy.convert.lowering import MAX_NESTING
from snn_deploy.convert.nirfile import read_nir
from snn_deploy.convert.nirgraph import graph_to_network
from snn_deploy.errors import InputFileError, UnsupportedNode, UserError
from snn_deploy.hdf5_limits import check_declared_sizes

needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs (POSIX)")
# A hang shows up as a subprocess timeout; a refusal takes a few seconds (mostly imports).
SUBPROCESS_TIMEOUT_S = 60
# How long a child that is expected to block on a FIFO is given before it counts as blocked.
HANG_S = 5

# ---------------------------------------------------------------- factories


def _graph(n: int = 3, *, tau: float = 0.01, metadata: dict | None = None) -> nir.NIRGraph:
    """Input(2) -> Affine -> LIF(n) -> Output, weights 0.5."""
    return nir.NIRGraph(
        nodes={"input": nir.Input(input_type=np.array([2])),
               "fc": nir.Affine(weight=np.full((n, 2), 0.5), bias=np.zeros(n)),
               "lif": nir.LIF(tau=np.full(n, tau), r=np.ones(n), v_leak=np.zeros(n),
                              v_threshold=np.ones(n)),
               "output": nir.Output(output_type=np.array([n]))},
        edges=[("input", "fc"), ("fc", "lif"), ("lif", "output")],
        metadata={"dt": 1e-3} if metadata is None else metadata)


def _nir_file(path: Path, graph: nir.NIRGraph | None = None) -> Path:
    nir.write(path, _graph() if graph is None else graph)
    return path


def _replace(path: Path, name: str, **create) -> None:
    """Replace dataset ``name`` of an HDF5 file by ``create_dataset(**create)``."""
    with h5py.File(path, "r+") as f:
        parent, key = f[name].parent, name.rsplit("/", 1)[-1]
        del f[name]
        parent.create_dataset(key, **create)


def _to_external(path: Path, name: str, target: Path) -> None:
    """Keep dataset ``name``'s bytes in ``target`` (HDF5 external storage), shape and type kept."""
    with h5py.File(path, "r") as f:
        shape, dtype = f[name].shape, f[name].dtype
    nbytes = int(np.prod(shape)) * dtype.itemsize
    _replace(path, name, shape=shape, dtype=dtype, external=[(str(target), 0, nbytes)])


def _secret(tmp_path: Path, nbytes: int) -> tuple[Path, bytes]:
    secret = bytes(range(65, 65 + 26)) * (nbytes // 26 + 1)
    path = tmp_path / "secret"
    path.write_bytes(secret[:nbytes])
    return path, secret[:nbytes]


def _fifo(tmp_path: Path) -> Path:
    path = tmp_path / "fifo0"
    os.mkfifo(path)
    return path


@pytest.fixture()
def deployment_file(tmp_path) -> Path:
    """A Deployment (with its NIR source inside) of the small graph."""
    from snn_deploy import api
    from snn_deploy.quantize.deployment import save_deployment

    path = tmp_path / "m.deploy.h5"
    save_deployment(api.deploy(_nir_file(tmp_path / "src.nir"), profile="loihi2").deployment, path)
    return path


@pytest.fixture()
def netx_file(tmp_path) -> Path:
    from snn_deploy import api
    from snn_deploy.quantize.netx_write import write_netx

    path = tmp_path / "m.net"
    write_netx(api.deploy(_nir_file(tmp_path / "src.nir"), profile="loihi2-netx").deployment, path)
    return path


def _refused(capsys, argv: list, *, out: Path | None = None, match: str = "") -> str:
    """Run the CLI in this process; assert exit 2, one line on stderr, no output file."""
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert rc == 2, err
    assert len(lines) == 1 and lines[0].startswith("snn-deploy: error:"), err
    assert "Traceback" not in err
    assert out is None or not out.exists()
    assert match.lower() in lines[0].lower(), lines[0]
    return lines[0]


def _refused_in_subprocess(argv: list, *, match: str = "") -> str:
    """The same in a child process that is killed if it hangs (a FIFO blocks its reader)."""
    done = subprocess.run([sys.executable, "-m", "snn_deploy.cli", *map(str, argv)],
                          capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert match.lower() in lines[0].lower(), lines[0]
    return lines[0]


def _deploy(path: Path, out: Path) -> list:
    return ["deploy", path, "--profile", "loihi2", "--out", out]


def test_the_small_graph_deploys(tmp_path, capsys):
    """The files below are refused for what was done to them, not for the graph they start from."""
    out = tmp_path / "m.deploy.h5"
    assert main([str(a) for a in _deploy(_nir_file(tmp_path / "m.nir"), out)]) == 0
    assert out.exists()


# ---------------------------------------------------------------- HDF5's behaviour at our boundary


def test_h5py_reads_external_storage_from_any_local_file(tmp_path):
    secret_path, secret = _secret(tmp_path, 48)
    path = tmp_path / "x.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("d", shape=(48,), dtype="u1", external=[(str(secret_path), 0, 48)])
    with h5py.File(path, "r") as f:
        assert bytes(f["d"][()]) == secret  # what a NIR or netx weight pointing at /etc/shadow gets
    with pytest.raises(InputFileError, match="external file"):
        check_declared_sizes(path, origin=str(path))


def test_nir_read_hands_back_another_files_bytes_as_weights(tmp_path):
    secret_path, secret = _secret(tmp_path, 3 * 2 * 8)
    path = _nir_file(tmp_path / "m.nir")
    _to_external(path, "node/nodes/fc/weight", secret_path)
    assert nir.read(path).nodes["fc"].weight.tobytes() == secret


@needs_fifo
def test_an_unlimited_virtual_dataset_opens_its_sources_when_asked_its_shape(tmp_path):
    """Opening it and asking for its layout return at once; asking for its shape opens the
    source file, here a FIFO, and blocks. So the check asks for the layout first."""
    path = tmp_path / "v.h5"
    fid = h5f.create(str(path).encode(), h5f.ACC_TRUNC)
    _add_unlimited_vds(fid, b"v", source=_fifo(tmp_path))
    fid.close()
    code = ("import h5py, sys; "
            "d = h5py.h5o.open(h5py.h5f.open(sys.argv[1].encode(), h5py.h5f.ACC_RDONLY), b'v'); "
            "print(d.get_create_plist().get_layout() == h5py.h5d.VIRTUAL, flush=True); "
            "d.get_space()")
    with pytest.raises(subprocess.TimeoutExpired) as hung:
        subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                       timeout=HANG_S)
    assert (hung.value.stdout or b"").strip() == b"True"


# ---------------------------------------------------------------- data kept in other files


def test_nir_weight_in_an_external_file_is_refused(tmp_path, capsys):
    secret_path, _ = _secret(tmp_path, 3 * 2 * 8)
    path = _nir_file(tmp_path / "m.nir")
    _to_external(path, "node/nodes/fc/weight", secret_path)
    out = tmp_path / "m.deploy.h5"
    _refused(capsys, _deploy(path, out), out=out, match="node/nodes/fc/weight keeps its bytes in"
             " an external file")


def test_deployment_weights_in_an_external_file_are_refused(deployment_file, tmp_path, capsys):
    with h5py.File(deployment_file, "r") as f:
        nbytes = f["layers/0/weights"].size * f["layers/0/weights"].dtype.itemsize
    _to_external(deployment_file, "layers/0/weights", _secret(tmp_path, nbytes)[0])
    _refused(capsys, ["resources", deployment_file], match="external file")


def test_netx_weight_in_an_external_file_is_refused(netx_file, tmp_path, capsys):
    with h5py.File(netx_file, "r") as f:
        nbytes = f["layer/1/weight"].size * f["layer/1/weight"].dtype.itemsize
    _to_external(netx_file, "layer/1/weight", _secret(tmp_path, nbytes)[0])
    out = tmp_path / "imported.deploy.h5"
    _refused(capsys, ["import-netx", netx_file, "--profile", "loihi2-netx", "--out", out],
             out=out, match="external file")


def _embed(deployment: Path, nir_path: Path) -> None:
    """Make ``nir_path``'s bytes the NIR source inside ``deployment``."""
    _replace(deployment, "source_nir", data=np.frombuffer(nir_path.read_bytes(), dtype=np.uint8))


def test_embedded_nir_with_an_external_weight_is_refused(deployment_file, tmp_path, capsys):
    bad = _nir_file(tmp_path / "bad.nir")
    _to_external(bad, "node/nodes/fc/weight", _secret(tmp_path, 48)[0])
    _embed(deployment_file, bad)
    _refused(capsys, ["resources", deployment_file], match="source_nir")


@needs_fifo
def test_external_storage_on_a_fifo_does_not_hang(deployment_file, tmp_path):
    fifo = _fifo(tmp_path)
    bad = _nir_file(tmp_path / "bad.nir")
    _to_external(bad, "node/nodes/fc/weight", fifo)
    _refused_in_subprocess(_deploy(bad, tmp_path / "out.deploy.h5"), match="external file")
    _embed(deployment_file, bad)  # evaluate, run, attack and resources read it through load_target
    _refused_in_subprocess(["resources", deployment_file], match="external file")


@needs_fifo
def test_a_fifo_given_as_the_model_file_is_refused_quickly(tmp_path):
    fifo = _fifo(tmp_path)
    with pytest.raises(InputFileError, match="not a regular file"):
        check_declared_sizes(fifo, origin=str(fifo))
    _refused_in_subprocess(_deploy(fifo, tmp_path / "out.deploy.h5"))
    _refused_in_subprocess(["resources", fifo])
    _refused_in_subprocess(["import-netx", fifo, "--out", tmp_path / "out.deploy.h5"])


# ---------------------------------------------------------------- links out of the file, loops


def _add_unlimited_vds(loc, name: bytes, *, source: Path) -> None:
    """A virtual dataset whose unlimited printf mapping reads the files named like ``source``
    with its final 0 counting up (fifo0, fifo1, ...): HDF5 opens them to learn its shape."""
    pattern = str(source)[:-1] + "%b"
    vspace = h5s.create_simple((0,), (h5s.UNLIMITED,))
    vspace.select_hyperslab((0,), (h5s.UNLIMITED,), stride=(4,), block=(4,))
    dcpl = h5p.create(h5p.DATASET_CREATE)
    dcpl.set_virtual(vspace, pattern.encode(), b"x", h5s.create_simple((4,)))
    h5d.create(loc, name, h5t.NATIVE_DOUBLE, vspace, dcpl=dcpl).close()


def _external_link(path: Path) -> None:
    """node/nodes/fc becomes a link to a 600M-element dataset's group in another file."""
    big = path.parent / "big.h5"
    with h5py.File(big, "w") as f:
        g = f.create_group("fc")
        g.create_dataset("weight", shape=(600_000_000,), dtype="f4", chunks=(1 << 16,))
        g.create_dataset("type", data="Affine", dtype=h5py.string_dtype())
    with h5py.File(path, "r+") as f:
        del f["node/nodes/fc"]
        f["node/nodes/fc"] = h5py.ExternalLink(str(big), "/fc")


def _virtual_weight(path: Path) -> None:
    src = path.parent / "source.h5"
    with h5py.File(src, "w") as f:
        f["w"] = np.ones((3, 2))
    layout = h5py.VirtualLayout(shape=(3, 2), dtype="f8")
    layout[:] = h5py.VirtualSource(str(src), "w", shape=(3, 2))
    with h5py.File(path, "r+") as f:
        del f["node/nodes/fc/weight"]
        f["node/nodes/fc"].create_virtual_dataset("weight", layout)


def _soft_loop(path: Path) -> None:
    with h5py.File(path, "r+") as f:
        f["node/nodes/fc/a"] = h5py.SoftLink("/node/nodes/fc/b")
        f["node/nodes/fc/b"] = h5py.SoftLink("/node/nodes/fc/a")


def _soft_up(path: Path) -> None:
    with h5py.File(path, "r+") as f:
        f["node/nodes/fc/up"] = h5py.SoftLink("/node")


def _soft_dangling(path: Path) -> None:
    with h5py.File(path, "r+") as f:
        f["node/nodes/fc/gone"] = h5py.SoftLink("/nowhere/at/all")


def _hard_loop(path: Path) -> None:
    with h5py.File(path, "r+") as f:
        f["node/nodes/fc/up"] = f["node"]


@pytest.mark.parametrize("damage, match", [
    (_external_link, "link into another file"),
    (_virtual_weight, "virtual dataset"),
    (_soft_loop, "soft links in a row"),
    (_soft_up, "a loop"),
    (_soft_dangling, "not in the file"),
    (_hard_loop, "a loop"),
])
def test_links_out_of_the_file_and_loops_are_refused(tmp_path, capsys, damage, match):
    path = _nir_file(tmp_path / "m.nir")
    damage(path)
    out = tmp_path / "m.deploy.h5"
    _refused(capsys, _deploy(path, out), out=out, match=match)


def test_h5py_follows_an_external_link_by_name(tmp_path):
    """What nir.read (which walks every link by name) would do with the file refused above."""
    path = _nir_file(tmp_path / "m.nir")
    _external_link(path)
    with h5py.File(path, "r") as f:
        assert f["node/nodes/fc/weight"].shape == (600_000_000,)


@needs_fifo
def test_an_unlimited_virtual_dataset_on_a_fifo_is_refused_without_hanging(tmp_path):
    path = _nir_file(tmp_path / "m.nir")
    with h5py.File(path, "r+") as f:
        _add_unlimited_vds(f["node/nodes/fc"].id, b"extra", source=_fifo(tmp_path))
    _refused_in_subprocess(_deploy(path, tmp_path / "out.deploy.h5"), match="virtual dataset")


def test_a_soft_link_within_the_file_still_loads(tmp_path, capsys):
    path = _nir_file(tmp_path / "m.nir")
    with h5py.File(path, "r+") as f:
        del f["node/nodes/lif/v_leak"]
        f["node/nodes/lif/v_leak"] = h5py.SoftLink("/node/nodes/fc/bias")  # both zeros (3,)
    out = tmp_path / "m.deploy.h5"
    assert main([str(a) for a in _deploy(path, out)]) == 0, capsys.readouterr().err


# ---------------------------------------------------------------- nesting and size


def _node(group: h5py.Group, kind: str, **fields) -> None:
    """One NIR node as nir.write stores it."""
    group.create_dataset("type", data=kind, dtype=h5py.string_dtype())
    for key, value in fields.items():
        if key == "edges":
            group.create_dataset(key, data=np.array(value, dtype=object), dtype=h5py.string_dtype())
        else:
            group.create_dataset(key, data=value)


def _write_nested(path: Path, depth: int) -> Path:
    """A NIR file whose Input -> Affine -> LIF -> Output sits ``depth`` subgraphs deep, written
    level by level (nir.write recurses, and Python's recursion limit stops it near depth 500)."""
    n = 2
    with h5py.File(path, "w") as f:
        f.create_dataset("version", data=nir.version, dtype=h5py.string_dtype())
        g = f.create_group("node")
        g.create_group("metadata").create_dataset("dt", data=1e-3)
        for level in range(depth + 1):
            nodes = g.create_group("nodes")
            _node(nodes.create_group("input"), "Input", shape=np.array([n]))
            _node(nodes.create_group("output"), "Output", shape=np.array([n]))
            if level < depth:
                _node(g, "NIRGraph", edges=[["input", "inner"], ["inner", "output"]])
                g = nodes.create_group("inner")
                continue
            _node(nodes.create_group("fc"), "Affine", weight=np.eye(n), bias=np.zeros(n))
            _node(nodes.create_group("lif"), "LIF", tau=np.full(n, 0.01), r=np.ones(n),
                  v_leak=np.zeros(n), v_reset=np.zeros(n), v_threshold=np.ones(n))
            _node(g, "NIRGraph", edges=[["input", "fc"], ["fc", "lif"], ["lif", "output"]])
    return path


def test_a_graph_nested_2000_deep_is_refused_quickly(tmp_path, capsys):
    path = _write_nested(tmp_path / "deep.nir", 2000)
    out = tmp_path / "m.deploy.h5"
    start = time.perf_counter()
    _refused(capsys, _deploy(path, out), out=out, match="nested deeper than")
    assert time.perf_counter() - start < 3.0


def test_nesting_up_to_the_limit_loads_and_one_more_is_refused(tmp_path):
    """The HDF5 depth limit leaves room for MAX_NESTING levels; the NIR limit names the subgraph."""
    net = graph_to_network(read_nir(_write_nested(tmp_path / "ok.nir", MAX_NESTING)))
    assert net.layers[0].neuron == "inner." * MAX_NESTING + "lif"
    with pytest.raises(UnsupportedNode, match=f"nested more than {MAX_NESTING} levels"):
        graph_to_network(read_nir(_write_nested(tmp_path / "deep.nir", MAX_NESTING + 1)))


def test_a_graph_built_2000_deep_in_python_is_refused_without_recursion():
    graph = _graph(2)
    for _ in range(2000):
        graph = nir.NIRGraph(
            nodes={"input": nir.Input(input_type=np.array([2])), "inner": graph,
                   "output": nir.Output(output_type=np.array([2]))},
            edges=[("input", "inner"), ("inner", "output")], metadata={"dt": 1e-3},
            type_check=False)
    with pytest.raises(UnsupportedNode, match="nested more than"):
        graph_to_network(graph)


def test_a_graph_with_too_many_nodes_is_refused():
    from snn_deploy.convert.lowering import MAX_NODES

    nodes = {f"scale{i}": nir.Scale(scale=np.ones(2)) for i in range(MAX_NODES)}
    graph = _graph()
    graph = nir.NIRGraph(nodes={**graph.nodes, **nodes}, edges=graph.edges,
                         metadata=graph.metadata, type_check=False)
    with pytest.raises(UnsupportedNode, match=f"more than {MAX_NODES} nodes"):
        graph_to_network(graph)


def test_an_input_fed_straight_into_a_million_neurons_is_refused_unallocated(tmp_path, capsys):
    """np.eye(10**6) would be 7.28 TiB: refused from the shapes, before anything that large."""
    n = 10**6
    graph = nir.NIRGraph(
        nodes={"input": nir.Input(input_type=np.array([n])),
               "lif": nir.LIF(tau=np.full(n, 0.01), r=np.ones(n), v_leak=np.zeros(n),
                              v_threshold=np.ones(n)),
               "output": nir.Output(output_type=np.array([n]))},
        edges=[("input", "lif"), ("lif", "output")], metadata={"dt": 1e-3})
    path = _nir_file(tmp_path / "direct.nir", graph)
    out = tmp_path / "m.deploy.h5"
    tracemalloc.start()
    try:
        line = _refused(capsys, _deploy(path, out), out=out, match="identity weights")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "'lif'" in line
    assert peak < 1 << 30  # the file's parameters (4 x 8 MB) and their copies, nothing n x n


def test_a_dataset_of_huge_records_is_refused_by_its_bytes(tmp_path, capsys):
    """Few elements, each a 1000 x 1000 float64 array: 8 GB declared in a file of kilobytes."""
    path = _nir_file(tmp_path / "m.nir")
    with h5py.File(path, "r+") as f:
        f["node/nodes/fc"].create_dataset("extra", shape=(1000,), chunks=(1,),
                                          dtype=np.dtype([("a", "f8", (1000, 1000))]))
    out = tmp_path / "m.deploy.h5"
    _refused(capsys, _deploy(path, out), out=out, match="bytes")


# ---------------------------------------------------------------- values that are not numbers


def _string_weight(path: Path) -> None:
    _replace(path, "node/nodes/fc/weight", data=np.array([["a", "b"]] * 3, dtype=object),
             dtype=h5py.string_dtype())


def _bytes_weight(path: Path) -> None:
    _replace(path, "node/nodes/fc/weight", data=np.array([[b"a", b"b"]] * 3, dtype="S4"))


def _compound_weight(path: Path) -> None:
    _replace(path, "node/nodes/fc/weight", data=np.zeros((3, 2), dtype=[("a", "f4"), ("b", "f4")]))


def _reference_tau(path: Path) -> None:
    with h5py.File(path, "r") as f:
        ref = f["node"].ref
    _replace(path, "node/nodes/lif/tau", data=np.array([ref] * 3, dtype=h5py.ref_dtype))


def _scalar_string_tau(path: Path) -> None:
    _replace(path, "node/nodes/lif/tau", data="fast", dtype=h5py.string_dtype())


@pytest.mark.parametrize("damage, node, parameter", [
    (_string_weight, "fc", "weight"),
    (_bytes_weight, "fc", "weight"),
    (_compound_weight, "fc", "weight"),
    (_reference_tau, "lif", "tau"),
    (_scalar_string_tau, "lif", "tau"),
])
def test_parameters_that_are_not_numbers_are_refused_by_name(tmp_path, capsys, damage, node,
                                                            parameter):
    path = _nir_file(tmp_path / "m.nir")
    damage(path)
    out = tmp_path / "m.deploy.h5"
    line = _refused(capsys, _deploy(path, out), out=out, match="not numbers")
    assert f"'{node}'" in line and parameter in line


def test_a_graph_built_in_python_with_text_parameters_is_refused_by_name():
    graph = _graph()
    graph.nodes["lif"].tau = np.array(["fast"] * 3)
    with pytest.raises(UserError, match="node 'lif' \\(LIF\\): parameter tau holds text"):
        graph_to_network(graph)


def test_a_layer_without_neurons_is_refused(tmp_path, capsys):
    path = _nir_file(tmp_path / "m.nir", _graph(0))
    out = tmp_path / "m.deploy.h5"
    line = _refused(capsys, _deploy(path, out), out=out, match="has no neurons")
    assert "'lif'" in line


def test_a_subnormal_tau_is_refused(tmp_path, capsys):
    path = _nir_file(tmp_path / "m.nir", _graph(tau=5e-324))
    out = tmp_path / "m.deploy.h5"
    _refused(capsys, _deploy(path, out), out=out, match="node 'lif' (LIF): dt/tau_mem overflows")


@pytest.mark.parametrize("metadata, match", [
    ({"dt": 1e-3, "snn_deploy": {"steps": "many"}}, "steps must be a whole number"),
    ({"dt": 1e-3, "snn_deploy": {"steps": 2.5}}, "steps must be a whole number"),
    ({"dt": 1e-3, "snn_deploy": {"steps": 0}}, "steps must be a whole number"),
    ({"dt": 1e-3, "snn_deploy": {"steps": 10**12}}, "steps must be a whole number"),
    ({"dt": 1e-3, "snn_deploy": {"decoder_beta": "x"}}, "decoder_beta must be a finite number"),
    ({"dt": 1e-3, "snn_deploy": {"encoding": 3}}, "encoding must be text"),
    ({"dt": "soon"}, "dt in the graph metadata is not a number"),
])
def test_coding_metadata_that_is_not_a_number_is_refused(tmp_path, capsys, metadata, match):
    path = _nir_file(tmp_path / "m.nir", _graph(metadata=metadata))
    out = tmp_path / "m.deploy.h5"
    _refused(capsys, _deploy(path, out), out=out, match=match)


def test_deployment_coding_that_is_not_a_number_is_refused(deployment_file, capsys):
    with h5py.File(deployment_file, "r+") as f:
        f["coding"].attrs["steps"] = "many"
    _refused(capsys, ["resources", deployment_file], match="coding: steps must be a whole number")



@pytest.mark.parametrize("attribute, match", [
    (np.zeros(1 << 17), "131,072 elements"),
    (np.array(["x"] * 100, dtype=h5py.string_dtype()), "100 variable-length values"),
])
def test_an_oversized_attribute_is_refused(deployment_file, capsys, attribute, match):
    """Attributes are read whole: one declaring more than any of ours (scalars, a profile's TOML)
    is refused before it is read (dense attribute storage lets a file hold large ones)."""
    with h5py.File(deployment_file, "a", libver="latest") as f:  # a new group: dense storage
        f.create_group("extra").attrs.create("forged", attribute)
    _refused(capsys, ["resources", deployment_file], match=match)


def test_too_many_attributes_are_refused(deployment_file, capsys):
    with h5py.File(deployment_file, "a", libver="latest") as f:
        extra = f.create_group("extra")
        for i in range(300):
            extra.attrs[f"a{i}"] = i
    _refused(capsys, ["resources", deployment_file], match="attributes")


def test_too_many_variable_length_values_are_refused(tmp_path, capsys):
    """Each variable-length string is read whole from the file's heap: a graph's edges may not
    hold more of them than MAX_VLEN_ELEMENTS."""
    path = _nir_file(tmp_path / "m.nir")
    with h5py.File(path, "a") as f:
        del f["node/edges"]
        f["node/edges"] = np.array([["a", "b"]] * 40_000, dtype=h5py.string_dtype())
    _refused(capsys, ["deploy", path, "--out", tmp_path / "o.h5"], out=tmp_path / "o.h5",
             match="variable-length values")
