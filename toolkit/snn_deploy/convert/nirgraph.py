"""NIR files -> a validated layer chain (synapse -> neuron, repeated) that backends and deploy use.

Neuron dynamics, discretised with time step dt exactly as Norse does (norse/torch/functional/lif.py):

    I_t = syn_keep * I_{t-1} + w_in * (W x_t + b)          syn_keep = 1 - dt/tau_syn (CubaLIF), 0 else
    v_t = v_{t-1} + mem_gain * (leak * (v_leak - v_{t-1}) + r * I_t)
                                                            mem_gain = dt/tau_mem (LIF family), 1 (IF)
    z_t = [v_t > v_threshold];   v_t <- v_reset where z_t

A Threshold node is the memoryless case (syn_keep = 0, mem_gain = 1, leak: v_t = I_t).

Writers differ in how a CubaLIF's ``w_in`` is meant (docs/nir-import.md). Norse (and our own
exporter) write ``w_in = 1`` and add the input to the current as above. snnTorch writes
``w_in = tau_syn/dt`` and ``r = tau_mem/dt``, i.e. NIR's ODE ``tau_syn dI/dt = -I + w_in x`` under
forward Euler, ``I_t = syn_keep I_{t-1} + (dt/tau_syn) w_in x_t``: a CubaLIF whose w_in equals
tau_syn/dt (and is not 1) is read that way, and the import notes it; any other w_in is read as
Norse's jump and noted too. (snnTorch's ``r = tau/dt`` needs nothing special: mem_gain * r = 1.)

How the source model reset (reset to v_reset, by subtraction, or Sinabs' several spikes per step)
is not in NIR: ``SOURCE_RESETS`` names the variants the float backend can run for comparison.

Between two neurons any run of linear nodes (Affine, Linear, Scale, Conv1d/2d, SumPool2d,
AvgPool2d, Flatten, Identity) is composed into one weight matrix (``convert.lowering``), except a
single Conv2d, which stays a native conv (``convert.conv``); nested subgraphs are inlined first.
"""

from __future__ import annotations

import dataclasses
import math

import nir
import numpy as np

from snn_deploy.coding import Coding
from snn_deploy.convert.conv import ConvGeometry, ConvMap, synapse_map
from snn_deploy.convert.lowering import (
    LINEAR_TYPES,
    AffineMap,
    float_array,
    inline_subgraphs,
)
from snn_deploy.errors import UnsupportedNode, UserError, brief

SYNAPSE_TYPES = ("Affine", "Linear")  # what a recurrent synapse may be
NEURON_TYPES = ("CubaLIF", "LIF", "IF", "Threshold")
SUPPORTED_TYPES = ("Input", "Output", *LINEAR_TYPES, *NEURON_TYPES, "NIRGraph")
# Types refused with a reason of their own (beyond "not supported").
REFUSED = {
    "LI": "a leaky integrator sends no spikes, and a Loihi 2 layer and our Recordings carry spikes;"
          " end the graph with a spiking layer (LIF/CubaLIF/IF) and decode its spike counts",
    "CubaLI": "a leaky integrator sends no spikes, and a Loihi 2 layer and our Recordings carry"
              " spikes; end the graph with a spiking layer (LIF/CubaLIF/IF) and decode its spikes",
}
# Relative tolerance for recognising snnTorch's w_in = tau_syn/dt (float32 files: ~1e-7).
CONVENTION_RTOL = 1e-3
# How the model a graph came from generated spikes and reset, which NIR cannot say (a NIR neuron
# resets to v_reset, one spike per step on v > v_threshold). The float backend runs each of them,
# so that deploy can measure what Loihi 2's reset to zero changes (docs/nir-import.md).
SOURCE_RESETS = {
    "zero": "v <- v_reset on a spike (NIR's definition; Norse; snnTorch reset_mechanism='zero',"
            " reset_delay=False; a Loihi 2 LIF)",
    "subtract": "v <- v - v_threshold in the step of the spike, as snnTorch's"
                " reset_mechanism='subtract', reset_delay=False does it (while v stays above"
                " v_threshold after a subtraction, the next spike needs v > 2 v_threshold)",
    "sinabs": "Sinabs' neurons as sinabs.nir.from_nir builds them (MultiSpike, MembraneSubtract):"
              " floor(v / v_threshold) spikes when v >= v_threshold, v <- v - spikes * v_threshold,"
              " and an IF's v floored at -v_threshold (min_v_mem)",
}
RESETS = tuple(SOURCE_RESETS)


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
    # The source model's semantics where they are not NIR's (SOURCE_RESETS; for comparisons):
    reset: str = "zero"  # "subtract": v <- v - v_threshold * spikes
    multi_spike: bool = False  # floor(v / v_threshold) spikes per step where v >= v_threshold
    v_min: np.ndarray | None = None  # v floored at v_min after every step


@dataclasses.dataclass(frozen=True)
class FloatLayer:
    """One synapse node followed by one neuron node, optionally with a recurrent synapse
    (a NIR cycle neuron -> Affine|Linear -> the same neuron) whose input is the previous step's
    spikes: ``I_t = ... + w_in * (R z_{t-1} + b_rec)``. A native conv layer (``conv`` set) holds
    its kernel (C_out, C_in / groups, kH, kW) as ``weight`` and its neurons' (C, H, W) ``shape``."""

    synapse: str
    neuron: str
    weight: np.ndarray  # (n_out, n_in) float64; a conv's kernel
    bias: np.ndarray  # (n_out,) float64
    spec: NeuronSpec
    recurrent: np.ndarray | None = None  # (n, n) float64
    recurrent_bias: np.ndarray | None = None  # (n,) float64
    recurrent_synapse: str | None = None
    conv: ConvGeometry | None = None
    shape: tuple[int, ...] = ()  # the neurons' (C, H, W) for a conv; () for a flat (n,) layer

    @property
    def size(self) -> int:
        return int(self.bias.shape[0])


@dataclasses.dataclass(frozen=True)
class FloatNetwork:
    """A NIR graph as a chain of layers, with its dt (s) and the coding recorded by its writer."""

    dt: float
    input_size: int
    layers: tuple[FloatLayer, ...]
    coding: Coding
    input_shape: tuple[int, ...] = ()  # NIR's (channel-first) input shape; () means (input_size,)
    notes: tuple[str, ...] = ()  # how the import read the writer's conventions

    @property
    def output_size(self) -> int:
        return self.layers[-1].size

    @property
    def shape(self) -> tuple[int, ...]:
        """The input shape (C-major flattening gives the input vector)."""
        return self.input_shape or (self.input_size,)


def _source_spec(spec: NeuronSpec, reset: str) -> NeuronSpec:
    if reset == "sinabs":  # sinabs.nir.from_nir: IAFSqueeze(min_v_mem=-v_threshold, ...)
        floor = -spec.v_threshold if spec.kind == "IF" else None
        return dataclasses.replace(spec, reset="subtract", multi_spike=True, v_min=floor)
    return dataclasses.replace(spec, reset=reset, multi_spike=False, v_min=None)


def with_reset(net: FloatNetwork, reset: str) -> FloatNetwork:
    """The same network with every neuron run as the source model ran it (``SOURCE_RESETS``):
    reset to ``v_reset`` ("zero", NIR's own definition), by subtraction, or as Sinabs does."""
    if reset not in SOURCE_RESETS:
        raise UserError(f"unknown reset {reset!r}: choose from {', '.join(RESETS)}")
    layers = tuple(dataclasses.replace(layer, spec=_source_spec(layer.spec, reset))
                   for layer in net.layers)
    return dataclasses.replace(net, layers=layers)


def _param(node: nir.NIRNode, pname: str, n: int, default: float | None = None, *,
           name: str) -> np.ndarray:
    """Parameter ``pname`` of node ``name`` as n finite float64 values (a scalar is repeated)."""
    where = f"node {name!r} ({type(node).__name__})"
    value = getattr(node, pname, None)
    if value is None:
        if default is None:
            raise UserError(f"{where} has no parameter {pname}")
        value = default
    try:
        arr = float_array(value, f"{where}: parameter {pname}")
        arr = np.broadcast_to(arr.reshape(-1) if arr.size == n else arr, (n,)).copy()
    except ValueError:
        raise UserError(f"{where}: parameter {pname} has shape {np.shape(value)}, expected ({n},)"
                        " or a scalar") from None
    if not np.all(np.isfinite(arr)):
        raise UserError(f"{where}: parameter {pname} holds NaN or Inf")
    return arr


def _snntorch_w_in(w_in: np.ndarray, tau_syn: np.ndarray, dt: float) -> bool:
    """w_in written as tau_syn/dt (snnTorch), not as a plain input gain of 1 (Norse)."""
    with np.errstate(over="ignore"):  # a huge tau_syn is simply not snnTorch's w_in
        return bool(not np.allclose(w_in, 1.0)
                    and np.allclose(w_in, tau_syn / dt, rtol=CONVENTION_RTOL))


def _rates(taus: dict[str, np.ndarray], dt: float, *, where: str) -> dict[str, np.ndarray]:
    """dt/tau (per step) for each time constant; refuses a tau <= 0, and one so small that
    dt/tau overflows (tau = 5e-324 s gives inf)."""
    rates = {}
    for pname, tau in taus.items():
        if np.any(tau <= 0):
            raise UserError(f"{where}: {pname} must be > 0, min is {tau.min()}")
        with np.errstate(over="ignore"):
            rates[pname] = dt / tau
        if not np.all(np.isfinite(rates[pname])):
            raise UserError(f"{where}: dt/{pname} overflows ({pname} min is {tau.min():g} s at"
                            f" dt = {dt:g} s)")
    return rates


def neuron_spec(node: nir.NIRNode, n: int, dt: float, name: str,
                notes: list[str] | None = None) -> NeuronSpec:
    """Discretise a NIR neuron node (CubaLIF, LIF, IF, Threshold) with time step dt; what the
    reading assumed about the writer's conventions is appended to ``notes``."""
    kind = type(node).__name__
    ones = np.ones(n)
    if kind in ("CubaLIF", "LIF"):
        taus = {"tau_mem": _param(node, "tau_mem" if kind == "CubaLIF" else "tau", n, name=name)}
        if kind == "CubaLIF":
            tau_syn = taus["tau_syn"] = _param(node, "tau_syn", n, name=name)
        rates = _rates(taus, dt, where=f"node {name!r} ({kind})")
        syn_keep = 1.0 - rates["tau_syn"] if kind == "CubaLIF" else np.zeros(n)
        w_in = ones
        if kind == "CubaLIF":
            w_in = _param(node, "w_in", n, 1.0, name=name)
            if _snntorch_w_in(w_in, tau_syn, dt):
                if notes is not None:
                    notes.append(f"node {name!r} (CubaLIF): w_in = tau_syn/dt"
                                 f" ({float(np.median(w_in)):.4g} at dt = {dt:g} s), read as NIR's"
                                 " Euler form (snnTorch): I = syn_keep I + (dt/tau_syn) w_in x")
                with np.errstate(over="ignore"):
                    w_in = w_in * dt / tau_syn
                if not np.all(np.isfinite(w_in)):
                    raise UserError(f"node {name!r} (CubaLIF): w_in * dt/tau_syn overflows")
            elif not np.allclose(w_in, 1.0) and notes is not None:
                notes.append(f"node {name!r} (CubaLIF): w_in = {float(np.median(w_in)):.4g} is"
                             f" neither 1 (Norse) nor tau_syn/dt ({float(np.median(tau_syn)) / dt:.4g},"
                             " snnTorch): read as Norse's jump I = syn_keep I + w_in x")
        return NeuronSpec(
            kind=kind, syn_keep=syn_keep, mem_gain=rates["tau_mem"], leak=True,
            r=_param(node, "r", n, 1.0, name=name), w_in=w_in,
            v_leak=_param(node, "v_leak", n, 0.0, name=name),
            v_threshold=_param(node, "v_threshold", n, name=name),
            v_reset=_param(node, "v_reset", n, 0.0, name=name),
        )
    if kind == "IF":
        return NeuronSpec(
            kind=kind, syn_keep=np.zeros(n), mem_gain=ones, leak=False,
            r=_param(node, "r", n, 1.0, name=name), w_in=ones, v_leak=np.zeros(n),
            v_threshold=_param(node, "v_threshold", n, name=name),
            v_reset=_param(node, "v_reset", n, 0.0, name=name),
        )
    if kind == "Threshold":  # z = [x > theta]: v_t = I_t, nothing kept from step to step
        return NeuronSpec(
            kind=kind, syn_keep=np.zeros(n), mem_gain=ones, leak=True, r=ones, w_in=ones,
            v_leak=np.zeros(n), v_threshold=_param(node, "threshold", n, name=name),
            v_reset=np.zeros(n),
        )
    raise UnsupportedNode(f"node {name!r} has unsupported neuron type {kind}")


# Neuron types whose discretisation does not depend on dt.
DT_FREE = ("IF", "Threshold")


def _graph_dt(graph: nir.NIRGraph, dt: float | None, notes: list[str]) -> float:
    raw = dt if dt is not None else (graph.metadata or {}).get("dt")
    if raw is None:
        kinds = {type(node).__name__ for node in graph.nodes.values()} & set(NEURON_TYPES)
        if kinds <= set(DT_FREE):
            notes.append("the graph has no dt, and its neurons (IF, Threshold) need none: dt = 1 s")
            return 1.0
        raise UserError("the NIR graph has no dt in its metadata: pass --dt (seconds)")
    try:
        value = float(np.asarray(raw))
    except (TypeError, ValueError):
        raise UserError(f"dt in the graph metadata is not a number: {brief(raw)}") from None
    if not np.isfinite(value) or value <= 0:
        raise UserError(f"dt must be a positive number of seconds, got {value}")
    return value


def _check_types(graph: nir.NIRGraph) -> None:
    refused = [f"{name!r} ({type(node).__name__}: {REFUSED[type(node).__name__]})"
               for name, node in graph.nodes.items() if type(node).__name__ in REFUSED]
    unsupported = [f"{name!r} ({type(node).__name__})" for name, node in graph.nodes.items()
                   if type(node).__name__ not in SUPPORTED_TYPES]
    if refused or unsupported:
        what = "unsupported NIR node(s): " + ", ".join(sorted(unsupported + refused))
        raise UnsupportedNode(what + f"; supported types are {', '.join(SUPPORTED_TYPES)}")


def _chain(graph: nir.NIRGraph) -> tuple[str, list[str], dict[str, str]]:
    """(input node, the nodes after it up to and including the Output, neuron -> recurrent
    synapse) of a chain with optional self-loops neuron -> Affine|Linear -> the same neuron."""
    succ: dict[str, list[str]] = {n: [] for n in graph.nodes}
    for src, dst in graph.edges:
        if src not in graph.nodes or dst not in graph.nodes:
            raise UnsupportedNode(f"edge {src!r} -> {dst!r} names a node that is not in the graph")
        succ[src].append(dst)
    inputs = [n for n, node in graph.nodes.items() if isinstance(node, nir.Input)]
    if len(inputs) != 1:
        raise UnsupportedNode(f"the graph must have exactly one Input node, found {len(inputs)}")
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
                f"node {current!r} has {len(nxt)} successors: only chains Input -> (linear"
                " nodes -> neuron [with a recurrent Affine|Linear])+ -> Output are supported yet"
            )
        current = nxt[0]
        if current in seen:
            raise UnsupportedNode(f"the graph has a cycle through {current!r}: only a neuron's"
                                  " own recurrent Affine|Linear is supported")
        seen.add(current)
        chain.append(current)
    return inputs[0], chain, loops


def _input_shape(name: str, node: nir.Input) -> tuple[int, ...]:
    types = node.input_type or {}
    if not types:
        raise UnsupportedNode(f"Input node {name!r} declares no shape")
    dims = float_array(next(iter(types.values())), f"Input node {name!r}: shape").reshape(-1)
    if not np.all(np.isfinite(dims)) or np.any(dims < 1) or np.any(dims != np.round(dims)):
        raise UnsupportedNode(f"Input node {name!r} has shape {brief(dims.tolist())}: dimensions"
                              " must be positive integers")
    return tuple(int(d) for d in dims)


def _layer(graph: nir.NIRGraph, name: str, amap: AffineMap | ConvMap, *, synapses: list[str],
           recurrent: str | None, dt: float, notes: list[str]) -> FloatLayer:
    """Neuron node ``name`` fed through ``amap`` (composed from the ``synapses`` nodes), with its
    recurrent Affine|Linear node if it has one."""
    node = graph.nodes[name]
    n = math.prod(amap.out_shape)
    if n < 1:
        raise UnsupportedNode(f"node {name!r} ({type(node).__name__}) has no neurons (its input"
                              f" has shape {amap.out_shape})")
    rec = rec_bias = None
    if recurrent is not None:
        rec_node = graph.nodes[recurrent]
        rec = float_array(rec_node.weight, f"node {recurrent!r}: recurrent weight")
        if rec.shape != (n, n) or not np.all(np.isfinite(rec)):
            raise UnsupportedNode(f"node {recurrent!r}: recurrent weight of shape {rec.shape}"
                                  f" (finite values, ({n}, {n}) expected)")
        rec_bias = (_param(rec_node, "bias", n, name=recurrent)
                    if isinstance(rec_node, nir.Affine) else np.zeros(n))
    return FloatLayer(synapse="+".join(synapses) or f"identity:{name}", neuron=name,
                      weight=amap.weight, bias=amap.bias,
                      spec=neuron_spec(node, n, dt, name, notes),
                      recurrent=rec, recurrent_bias=rec_bias, recurrent_synapse=recurrent,
                      conv=getattr(amap, "conv", None), shape=getattr(amap, "conv", None)
                      and amap.out_shape or ())


def graph_to_network(graph: nir.NIRGraph, *, dt: float | None = None,
                     native_convs: bool = True) -> FloatNetwork:
    """Validate a NIR graph and turn it into a layer chain; with ``native_convs`` a single Conv2d
    between two neurons stays a native conv layer (``convert.conv``), else it is lowered to dense.

    Raises:
        UnsupportedNode: naming every node of an unsupported type (id and type) at once, or the
            place where the graph is not a chain Input -> (linear nodes -> neuron)+ -> Output.
    """
    graph = inline_subgraphs(graph)
    _check_types(graph)
    notes: list[str] = []
    step = _graph_dt(graph, dt, notes)
    coding = Coding.read((graph.metadata or {}).get("snn_deploy", {}),
                          where="the NIR graph's metadata snn_deploy")
    first, chain, loops = _chain(graph)
    in_shape = _input_shape(first, graph.nodes[first])
    shape = in_shape
    layers: list[FloatLayer] = []
    pending: list[str] = []
    for name in chain[:-1]:
        if type(graph.nodes[name]).__name__ in LINEAR_TYPES:
            pending.append(name)
            continue
        amap = synapse_map([(n, graph.nodes[n]) for n in pending], shape, neuron=name,
                           native=native_convs and name not in loops)
        layers.append(_layer(graph, name, amap, synapses=pending, recurrent=loops.get(name),
                             dt=step, notes=notes))
        shape, pending = amap.out_shape, []
    if pending:
        got = ", ".join(f"{n!r} ({type(graph.nodes[n]).__name__})" for n in pending)
        raise UnsupportedNode(f"linear node(s) {got} after the last neuron: the graph's output must"
                              " be a neuron layer's spikes")
    if not layers:
        raise UnsupportedNode("the graph has no synapse -> neuron layer")
    return FloatNetwork(dt=step, input_size=math.prod(in_shape), layers=tuple(layers),
                        coding=coding,
                        input_shape=in_shape if len(in_shape) > 1 else (), notes=tuple(notes))
