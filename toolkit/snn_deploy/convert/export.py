"""Norse model -> NIR graph, repairing two bugs of Norse 1.1.0's ``to_nir`` at our boundary.

1. ``norse.torch.utils.export_nir`` writes ``tau = dt / tau_inv`` (seconds scaled by dt) instead of
   ``tau = 1 / tau_inv``: we divide the exported time constants by dt.
2. Neuron parameters come out as 0-d tensors, which ``nir.write`` rejects ("Scalar datasets don't
   support chunk/filter options"): we broadcast them to one value per neuron, as numpy arrays.

tests/test_export.py shows both bugs on Norse itself, so the repair can go once Norse fixes them.
The graph's metadata records dt (NIR stores none), the model's input coding and its output decoder.

A recurrent hidden layer (``LIFNetwork.recurrent``), which Norse's ``to_nir`` does not see, becomes
a cycle neuron -> ``nir.Linear`` (R) -> the same neuron; ``convert.nirgraph`` reads it as
``I_t = ... + R z_{t-1}``, the timing of ``train.model.lif_step``.
"""

from __future__ import annotations

import copy
from pathlib import Path

import nir
import norse.torch as norse
import numpy as np
import torch

from snn_deploy.fileio import atomic_path
from snn_deploy.train.model import LIFNetwork

_TAU_FIELDS = {"CubaLIF": ("tau_syn", "tau_mem"), "LIF": ("tau",), "LI": ("tau",)}


def _as_array(value: object) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.float32)


def _repair_node(node: nir.NIRNode, *, dt: float, width: int) -> nir.NIRNode:
    """Undo the dt scaling of time constants and broadcast scalar parameters to (width,)."""
    kind = type(node).__name__
    if kind in ("Affine", "Linear"):
        fields = {"weight": _as_array(node.weight)}
        if kind == "Affine":
            fields["bias"] = _as_array(node.bias)
        return type(node)(**fields)
    if kind not in _TAU_FIELDS:
        return node
    params = {}
    for name in ("tau_syn", "tau_mem", "tau", "r", "v_leak", "v_threshold", "v_reset", "w_in"):
        if hasattr(node, name):
            arr = _as_array(getattr(node, name))
            if name in _TAU_FIELDS[kind]:
                arr = arr / np.float32(dt)
            params[name] = np.broadcast_to(arr, (width,)).astype(np.float32).copy()
    return type(node)(**params)


def model_to_nir(model: LIFNetwork) -> nir.NIRGraph:
    """Export a trained ``LIFNetwork`` to a NIR graph with dt and coding in its metadata."""
    cfg = model.config
    raw = norse.to_nir(model.net, torch.zeros(1, cfg.input_size), dt=cfg.dt)
    nodes: dict[str, nir.NIRNode] = {}
    width = cfg.input_size
    for name in _topological(raw):
        node = raw.nodes[name]
        kind = type(node).__name__
        if kind in ("Affine", "Linear"):
            width = int(np.asarray(node.weight).shape[0])
        if kind == "Input":
            node = nir.Input(input_type=np.array([cfg.input_size]))
        elif kind == "Output":
            node = nir.Output(output_type=np.array([cfg.output_size]))
        else:
            node = _repair_node(node, dt=cfg.dt, width=width)
        nodes[name] = node
    edges = list(raw.edges)
    for k, rec in enumerate(model.recurrent):
        neuron = str(2 * k + 1)  # to_nir names the modules of model.net by their index
        if type(nodes.get(neuron)).__name__ not in _TAU_FIELDS:
            raise RuntimeError(f"norse.to_nir named layer {k}'s neuron differently: {sorted(nodes)}")
        loop = f"{neuron}_rec"
        nodes[loop] = nir.Linear(weight=_as_array(rec.weight))
        edges += [(neuron, loop), (loop, neuron)]
    metadata = {
        "dt": cfg.dt,
        "snn_deploy": {**cfg.coding.to_dict(),
                       "writer": "snn-deploy (norse 1.1.0 to_nir, repaired)"},
    }
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata)


def _topological(graph: nir.NIRGraph) -> list[str]:
    """Node names in an order where every edge goes forward (graph must be acyclic)."""
    indeg = {n: 0 for n in graph.nodes}
    for _, dst in graph.edges:
        indeg[dst] += 1
    ready = [n for n, d in indeg.items() if d == 0]
    order = []
    while ready:
        n = ready.pop()
        order.append(n)
        for src, dst in graph.edges:
            if src == n:
                indeg[dst] -= 1
                if indeg[dst] == 0:
                    ready.append(dst)
    return order


def write_nir(graph: nir.NIRGraph, path: str | Path) -> None:
    """``nir.write`` to a temporary file, renamed onto ``path`` when complete. The edges are
    written sorted: nirtorch lists them in set order, which changes with Python's string hashing
    from one process to the next, so the same model gave files (and report hashes) that differed."""
    graph = copy.copy(graph)
    graph.edges = sorted(graph.edges)
    with atomic_path(path) as tmp:
        nir.write(str(tmp), graph)
