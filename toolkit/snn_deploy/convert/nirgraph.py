"""NIR files -> a validated layer chain (synapse -> neuron, repeated) that backends and deploy use.

Neuron dynamics, discretised with time step dt exactly as Norse does (norse/torch/functional/lif.py):

    I_t = syn_keep * I_{t-1} + w_in * (W x_t + b)          syn_keep = 1 - dt/tau_syn (CubaLIF), 0 else
    v_t = v_{t-1} + mem_gain * (leak * (v_leak - v_{t-1}) + r * I_t)
                                                            mem_gain = dt/tau_mem (LIF family), 1 (IF)
    z_t = [v_t > v_threshold];   v_t <- v_reset where z_t
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import nir
import numpy as np

from snn_deploy.errors import InputFileError, UnsupportedNode, UserError
from snn_deploy.hdf5_limits import check_declared_sizes

SYNAPSE_TYPES = ("Affine", "Linear")
NEURON_TYPES = ("CubaLIF", "LIF", "IF")
SUPPORTED_TYPES = ("Input", "Output", *SYNAPSE_TYPES, *NEURON_TYPES)


@dataclasses.dataclass(frozen=True)
class NeuronSpec:
    """Per-neuron float parameters (float64 arrays of shape (n,)) in the discretised form above."""

    kind: str
    syn_keep: np.ndarray
    mem_gain: np.ndarray
    leak: bool
    r: np.ndarray
    w_in: np.ndarray
    v_leak: np.ndarray
    v_threshold: np.ndarray
    v_reset: np.ndarray


@dataclasses.dataclass(frozen=True)
class FloatLayer:
    """One synapse node followed by one neuron node, optionally with a recurrent synapse
    (a NIR cycle neuron -> Affine|Linear -> the same neuron) whose input is the previous step's
    spikes: ``I_t = ... + w_in * (R z_{t-1} + b_rec)``."""

    synapse: str
    neuron: str
    weight: np.ndarray  # (n_out, n_in) float64
    bias: np.ndarray  # (n_out,) float64
    spec: NeuronSpec
    recurrent: np.ndarray | None = None  # (n, n) float64
    recurrent_bias: np.ndarray | None = None  # (n,) float64
    recurrent_synapse: str | None = None

    @property
    def size(self) -> int:
        return int(self.weight.shape[0])


@dataclasses.dataclass(frozen=True)
class FloatNetwork:
    """A NIR graph as a chain of layers, with its dt (s) and the coding recorded by its writer."""

    dt: float
    input_size: int
    layers: tuple[FloatLayer, ...]
    coding: dict

    @property
    def output_size(self) -> int:
        return self.layers[-1].size


def read_nir(path: str | Path) -> nir.NIRGraph:
    """``nir.read`` with one clear error for a missing, unreadable or non-NIR file."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"NIR file not found: {path}")
    return _read(path, origin=str(path))


def read_nir_bytes(data: bytes, *, origin: str) -> nir.NIRGraph:
    """Read a NIR graph from the bytes of a NIR file (e.g. the copy inside a Deployment)."""
    return _read(io.BytesIO(data), origin=origin)


def _read(source: Path | io.BytesIO, *, origin: str) -> nir.NIRGraph:
    check_declared_sizes(source, origin=origin)
    if isinstance(source, io.BytesIO):
        source.seek(0)
    try:
        graph = nir.read(source)
    except Exception as exc:  # h5py/nir raise OSError, KeyError, ValueError... on foreign files
        raise InputFileError(
            f"{origin} is not a readable NIR file ({type(exc).__name__}: {str(exc)[:120]})"
        ) from None
    if not isinstance(graph, nir.NIRGraph):
        raise InputFileError(f"{origin} holds a single NIR node, not a graph")
    return graph


def _param(node: nir.NIRNode, name: str, n: int, default: float | None = None) -> np.ndarray:
    value = getattr(node, name, None)
    if value is None:
        if default is None:
            raise UserError(f"NIR node {type(node).__name__} has no parameter {name}")
        value = default
    arr = np.asarray(value, dtype=np.float64)
    try:
        arr = np.broadcast_to(arr.reshape(-1) if arr.size == n else arr, (n,)).copy()
    except ValueError:
        raise UserError(
            f"parameter {name} of a {type(node).__name__} has shape {np.shape(value)},"
            f" expected ({n},) or a scalar"
        ) from None
    if not np.all(np.isfinite(arr)):
        raise UserError(f"parameter {name} of a {type(node).__name__} holds NaN or Inf")
    return arr


def neuron_spec(node: nir.NIRNode, n: int, dt: float, name: str) -> NeuronSpec:
    """Discretise a NIR neuron node (CubaLIF, LIF, IF) with time step dt."""
    kind = type(node).__name__
    ones = np.ones(n)
    if kind in ("CubaLIF", "LIF"):
        tau_mem = _param(node, "tau_mem" if kind == "CubaLIF" else "tau", n)
        bad = [("tau_mem", tau_mem)]
        if kind == "CubaLIF":
            tau_syn = _param(node, "tau_syn", n)
            bad.append(("tau_syn", tau_syn))
        for pname, tau in bad:
            if np.any(tau <= 0):
                raise UserError(f"node {name!r} ({kind}): {pname} must be > 0, min is {tau.min()}")
        syn_keep = 1.0 - dt / tau_syn if kind == "CubaLIF" else np.zeros(n)
        return NeuronSpec(
            kind=kind, syn_keep=syn_keep, mem_gain=dt / tau_mem, leak=True,
            r=_param(node, "r", n, 1.0),
            w_in=_param(node, "w_in", n, 1.0) if kind == "CubaLIF" else ones,
            v_leak=_param(node, "v_leak", n, 0.0),
            v_threshold=_param(node, "v_threshold", n),
            v_reset=_param(node, "v_reset", n, 0.0),
        )
    if kind == "IF":
        return NeuronSpec(
            kind=kind, syn_keep=np.zeros(n), mem_gain=ones, leak=False,
            r=_param(node, "r", n, 1.0), w_in=ones, v_leak=np.zeros(n),
            v_threshold=_param(node, "v_threshold", n),
            v_reset=_param(node, "v_reset", n, 0.0),
        )
    raise UnsupportedNode(f"node {name!r} has unsupported neuron type {kind}")


def _graph_dt(graph: nir.NIRGraph, dt: float | None) -> float:
    raw = dt if dt is not None else (graph.metadata or {}).get("dt")
    if raw is None:
        raise UserError("the NIR graph has no dt in its metadata: pass --dt (seconds)")
    try:
        value = float(np.asarray(raw))
    except (TypeError, ValueError):
        raise UserError(f"dt in the graph metadata is not a number: {raw!r}") from None
    if not np.isfinite(value) or value <= 0:
        raise UserError(f"dt must be a positive number of seconds, got {value}")
    return value


def graph_to_network(graph: nir.NIRGraph, *, dt: float | None = None) -> FloatNetwork:
    """Validate a NIR graph and turn it into a layer chain.

    Raises:
        UnsupportedNode: naming every node of an unsupported type (id and type) at once, or the
            place where the graph is not a chain Input -> (synapse -> neuron)+ -> Output.
    """
    unsupported = [f"{name!r} ({type(node).__name__})" for name, node in graph.nodes.items()
                   if type(node).__name__ not in SUPPORTED_TYPES]
    if unsupported:
        raise UnsupportedNode(
            "unsupported NIR node(s): " + ", ".join(sorted(unsupported))
            + f"; supported types are {', '.join(SUPPORTED_TYPES)}"
        )
    step = _graph_dt(graph, dt)
    succ: dict[str, list[str]] = {n: [] for n in graph.nodes}
    for src, dst in graph.edges:
        if src not in graph.nodes or dst not in graph.nodes:
            raise UnsupportedNode(f"edge {src!r} -> {dst!r} names a node that is not in the graph")
        succ[src].append(dst)
    inputs = [n for n, node in graph.nodes.items() if isinstance(node, nir.Input)]
    if len(inputs) != 1:
        raise UnsupportedNode(f"the graph must have exactly one Input node, found {len(inputs)}")
    input_type = graph.nodes[inputs[0]].input_type
    width = int(np.prod(next(iter(input_type.values())))) if input_type else 0
    input_size = width
    chain: list[str] = []
    current, seen = inputs[0], {inputs[0]}
    loops: dict[str, str] = {}  # neuron -> its recurrent synapse
    while not isinstance(graph.nodes[current], nir.Output):
        nxt = succ[current]
        back = [n for n in nxt if succ[n] == [current]
                and type(graph.nodes[n]).__name__ in SYNAPSE_TYPES
                and type(graph.nodes[current]).__name__ in NEURON_TYPES]
        if len(back) == 1 and len(nxt) == 2:  # neuron -> synapse -> the same neuron
            loops[current] = back[0]
            seen.add(back[0])
            nxt = [n for n in nxt if n != back[0]]
        if len(nxt) != 1:
            raise UnsupportedNode(
                f"node {current!r} has {len(nxt)} successors: only chains"
                " Input -> (Affine|Linear -> neuron [with a recurrent Affine|Linear])+ -> Output"
                " are supported yet"
            )
        current = nxt[0]
        if current in seen:
            raise UnsupportedNode(f"the graph has a cycle through {current!r}: not supported yet")
        seen.add(current)
        chain.append(current)
    body = chain[:-1]
    layers: list[FloatLayer] = []
    for i in range(0, len(body), 2):
        syn_name = body[i]
        neu_name = body[i + 1] if i + 1 < len(body) else None
        syn = graph.nodes[syn_name]
        if type(syn).__name__ not in SYNAPSE_TYPES or neu_name is None or \
                type(graph.nodes[neu_name]).__name__ not in NEURON_TYPES:
            got = " -> ".join(f"{n!r} ({type(graph.nodes[n]).__name__})"
                              for n in body[i:i + 2])
            raise UnsupportedNode(f"expected a synapse followed by a neuron, got {got}")
        weight = np.asarray(syn.weight, dtype=np.float64)
        if weight.ndim != 2 or weight.shape[1] != width:
            raise UnsupportedNode(
                f"node {syn_name!r}: weight shape {weight.shape} does not take {width} inputs"
            )
        if not np.all(np.isfinite(weight)):
            raise UserError(f"node {syn_name!r}: weight holds NaN or Inf")
        n = weight.shape[0]
        bias = _param(syn, "bias", n) if isinstance(syn, nir.Affine) else np.zeros(n)
        rec_name = loops.get(neu_name)
        rec = rec_bias = None
        if rec_name is not None:
            rec_node = graph.nodes[rec_name]
            rec = np.asarray(rec_node.weight, dtype=np.float64)
            if rec.shape != (n, n) or not np.all(np.isfinite(rec)):
                raise UnsupportedNode(f"node {rec_name!r}: recurrent weight of shape {rec.shape}"
                                      f" (finite values, ({n}, {n}) expected)")
            rec_bias = _param(rec_node, "bias", n) if isinstance(rec_node, nir.Affine) else np.zeros(n)
        layers.append(FloatLayer(synapse=syn_name, neuron=neu_name, weight=weight, bias=bias,
                                 spec=neuron_spec(graph.nodes[neu_name], n, step, neu_name),
                                 recurrent=rec, recurrent_bias=rec_bias, recurrent_synapse=rec_name))
        width = n
    if not layers:
        raise UnsupportedNode("the graph has no synapse -> neuron layer")
    coding = dict((graph.metadata or {}).get("snn_deploy", {}))
    return FloatNetwork(dt=step, input_size=input_size, layers=tuple(layers), coding=coding)
