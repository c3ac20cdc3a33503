"""NIR read stage: nested subgraphs inlined, and runs of linear nodes composed into one matrix.

Between two neuron nodes (or the Input and the first neuron) a NIR graph may hold any chain of
linear maps: Affine ``W x + b``, Linear ``W x``, Scale ``s * x``, Conv1d/Conv2d (torch's
cross-correlation, channel-first (C, L) / (C, H, W) without the batch dimension), SumPool2d and
AvgPool2d (zero padding, padding counted in the average, as torch's default), Flatten (C-major,
``start_dim``/``end_dim`` counted without the batch dimension) and Identity. Their composition is
one affine map ``A x + c`` on the C-major flattened input, which is what a Loihi ``Dense`` holds:

    c = f(0),    A[:, i] = f(e_i) - c

computed in float64 by applying the nodes themselves (torch ops) to the basis vectors, in chunks.
"""

from __future__ import annotations

import dataclasses
import math

import nir
import numpy as np
import scipy.sparse as sp

from snn_deploy.errors import UnsupportedNode, UserError

LINEAR_TYPES = ("Affine", "Linear", "Scale", "Conv1d", "Conv2d", "SumPool2d", "AvgPool2d",
                "Flatten", "Identity")
# Largest composed matrix (elements) we build densely: a Lava Dense of this size needs ~0.5 GiB
# as int32 and is the practical limit of Lava's CPU simulator on a workstation.
MAX_DENSE_ELEMENTS = 1 << 27


# Subgraphs inside subgraphs: writers nest one level per module (snnTorch, Norse and Sinabs write
# 0 or 1); 32 is far past any model, and bounds the recursion of reading and inlining.
MAX_NESTING = 32
# Nodes in a graph, all levels counted: a Loihi 2 chip has 128 neurocores (Intel's Loihi 2
# product brief) and a chain takes a few nodes per layer; 4096 leaves room for many chips.
MAX_NODES = 4096
# dtype kinds a numeric NIR parameter may hold: bool, signed and unsigned integers, floats.
NUMERIC_KINDS = "biuf"
# What the other kinds hold, for messages (HDF5 strings and references arrive as objects).
_KIND_NAMES = {"U": "text", "S": "text", "O": "objects (strings or references)",
               "V": "compound or opaque records", "c": "complex numbers", "M": "dates",
               "m": "time spans"}


def not_numbers(dtype: np.dtype) -> str | None:
    """What an array of ``dtype`` holds when that is not numbers, else None."""
    if dtype.kind in NUMERIC_KINDS:
        return None
    return _KIND_NAMES.get(dtype.kind, f"values of type {dtype.str}")


def float_array(value, what: str) -> np.ndarray:
    """``value`` as a float64 array, or UnsupportedNode naming ``what`` when it does not hold
    numbers (a NIR file may hold strings, compound records or references where numbers belong)."""
    arr = np.asarray(value)
    held = not_numbers(arr.dtype)
    if held is not None:
        raise UnsupportedNode(f"{what} holds {held}, not numbers")
    return arr.astype(np.float64)


def check_graph_size(graph: nir.NIRGraph) -> None:
    """Refuse, without recursion, a graph nested deeper than MAX_NESTING or holding more than
    MAX_NODES nodes at all levels together."""
    pending: list[tuple[str, nir.NIRGraph, int]] = [("", graph, 0)]
    total = 0
    while pending:
        path, sub, level = pending.pop()
        if level > MAX_NESTING:
            shown = path if len(path) <= 60 else "..." + path[-57:]
            raise UnsupportedNode(f"subgraph {shown!r} is nested more than {MAX_NESTING} levels"
                                  " deep")
        total += len(sub.nodes)
        if total > MAX_NODES:
            raise UnsupportedNode(f"the graph holds more than {MAX_NODES} nodes (subgraphs"
                                  " counted)")
        pending.extend((f"{path}.{name}" if path else name, node, level + 1)
                       for name, node in sub.nodes.items() if isinstance(node, nir.NIRGraph))


def inline_subgraphs(graph: nir.NIRGraph) -> nir.NIRGraph:
    """A graph without nested ``NIRGraph`` nodes: node ``g`` holding ``n`` becomes ``g.n``.

    An edge into ``g`` (or ``g.<input name>``) goes to what ``g``'s Input nodes feed; an edge
    out of ``g`` (or ``g.<output name>``) leaves from what feeds ``g``'s Output nodes.

    Raises:
        UnsupportedNode: a graph nested too deep or too large (``check_graph_size``).
    """
    check_graph_size(graph)
    return _inline(graph)


def _inline(graph: nir.NIRGraph) -> nir.NIRGraph:
    nodes: dict[str, nir.NIRNode] = {}
    entries: dict[str, list[str]] = {}  # outer name (or name.input) -> inlined targets
    exits: dict[str, list[str]] = {}
    inner_edges: list[tuple[str, str]] = []
    for name, node in graph.nodes.items():
        if not isinstance(node, nir.NIRGraph):
            nodes[name] = node
            continue
        sub = _inline(node)
        ins = {n for n, v in sub.nodes.items() if isinstance(v, nir.Input)}
        outs = {n for n, v in sub.nodes.items() if isinstance(v, nir.Output)}
        for n, v in sub.nodes.items():
            if n not in ins and n not in outs:
                nodes[f"{name}.{n}"] = v
        for src, dst in sub.edges:
            if src in ins:
                for key in (name, f"{name}.{src}"):
                    entries.setdefault(key, []).append(f"{name}.{dst}")
            elif dst in outs:
                for key in (name, f"{name}.{dst}"):
                    exits.setdefault(key, []).append(f"{name}.{src}")
            else:
                inner_edges.append((f"{name}.{src}", f"{name}.{dst}"))
    edges = list(inner_edges)
    for src, dst in graph.edges:
        for s in exits.get(src, [src]):
            edges.extend((s, d) for d in entries.get(dst, [dst]))
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=dict(graph.metadata or {}),
                        type_check=False)


def _ints(value, n: int, what: str, *, low: int = 1) -> tuple[int, ...]:
    """``value`` as n integers >= ``low`` (a scalar is repeated)."""
    arr = float_array(value, what).reshape(-1)
    try:
        ints = tuple(int(v) for v in np.broadcast_to(arr, (n,)))
    except (ValueError, OverflowError):  # wrong length, or NaN/Inf
        raise UnsupportedNode(f"{what} {arr.tolist()[:8]} does not give {n} integer(s)") from None
    if any(v < low for v in ints):
        raise UnsupportedNode(f"{what} {list(ints)} must be >= {low}")
    return ints


def _padding(value, kernel: tuple[int, ...], dilation: tuple[int, ...]
             ) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(low, high) padding per spatial dimension; 'same' pads as torch does (extra at the end)."""
    if isinstance(value, (str, bytes)) or np.asarray(value).dtype.kind in "SUO":
        mode = value.decode() if isinstance(value, bytes) else str(np.asarray(value).reshape(-1)[0])
        if mode == "valid":
            zeros = (0,) * len(kernel)
            return zeros, zeros
        if mode == "same":
            total = [d * (k - 1) for k, d in zip(kernel, dilation)]
            return tuple(t // 2 for t in total), tuple(t - t // 2 for t in total)
        raise UnsupportedNode(f"padding {mode!r} is not 'same', 'valid' or a number")
    pad = _ints(value, len(kernel), "padding", low=0)
    return pad, pad


def _window_matrix(weight: np.ndarray, in_shape: tuple[int, ...], *, stride, pad_lo, pad_hi,
                   dilation, groups: int) -> tuple[sp.csr_matrix, tuple[int, ...]]:
    """A 2-d cross-correlation (torch's conv2d) as a sparse matrix on C-major vectors.

    ``weight`` (C_out, C_in/groups, kH, kW), ``in_shape`` (C_in, H, W); returns the matrix
    (C_out*OH*OW, C_in*H*W) and (C_out, OH, OW), OH = (H + pads - d (kH - 1) - 1) // s + 1.
    """
    c_out, c_group, kh, kw = weight.shape
    c_in, h, w = in_shape
    if c_group * groups != c_in or c_out % groups:
        raise UnsupportedNode(f"weight {weight.shape} with {groups} group(s) cannot take"
                              f" {c_in} input channels")
    oh = (h + pad_lo[0] + pad_hi[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (w + pad_lo[1] + pad_hi[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    if oh < 1 or ow < 1:
        raise UnsupportedNode(f"a {kh}x{kw} window does not fit input {in_shape}")
    if c_out * c_group * kh * kw * oh * ow > MAX_DENSE_ELEMENTS:  # the index arrays below
        raise UnsupportedNode(f"a {kh}x{kw} window over {oh}x{ow} outputs and {c_out} x"
                              f" {c_group} channels makes more than {MAX_DENSE_ELEMENTS} weights")
    co, cg, i, j, y, x = np.indices((c_out, c_group, kh, kw, oh, ow), sparse=True)
    ci = (co // (c_out // groups)) * c_group + cg
    iy = y * stride[0] - pad_lo[0] + i * dilation[0]
    ix = x * stride[1] - pad_lo[1] + j * dilation[1]
    full = (c_out, c_group, kh, kw, oh, ow)
    iy, ix = np.broadcast_to(iy, full), np.broadcast_to(ix, full)
    valid = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)
    rows = np.broadcast_to((co * oh + y) * ow + x, full)[valid]
    cols = ((np.broadcast_to(ci, full) * h + iy) * w + ix)[valid]
    vals = np.broadcast_to(weight[:, :, :, :, None, None], full)[valid]
    matrix = sp.coo_matrix((vals.astype(np.float64), (rows, cols)),
                           shape=(c_out * oh * ow, c_in * h * w)).tocsr()
    return matrix, (c_out, oh, ow)


@dataclasses.dataclass(frozen=True)
class NodeMap:
    """One linear node as ``matrix @ x + bias`` on C-major vectors, and its output shape."""

    matrix: sp.csr_matrix
    bias: np.ndarray | None
    out_shape: tuple[int, ...]


def _conv(node: nir.NIRNode, shape: tuple[int, ...], dims: int) -> NodeMap:
    weight = float_array(node.weight, "weight")
    if weight.ndim != dims + 2 or len(shape) != dims + 1:
        raise UnsupportedNode(f"Conv{dims}d weight {weight.shape} cannot take input {shape}")
    kernel = weight.shape[2:]
    dilation = _ints(node.dilation, dims, "dilation")
    stride = _ints(node.stride, dims, "stride")
    lo, hi = _padding(node.padding, kernel, dilation)
    if dims == 1:  # a Conv1d is a Conv2d on height 1
        weight, shape = weight[:, :, None, :], (shape[0], 1, shape[1])
        stride, dilation, lo, hi = (1, *stride), (1, *dilation), (0, *lo), (0, *hi)
    matrix, out = _window_matrix(weight, shape, stride=stride, pad_lo=lo, pad_hi=hi,
                                 dilation=dilation, groups=_ints(node.groups, 1, "groups")[0])
    bias = getattr(node, "bias", None)
    b = None
    if bias is not None:
        per_channel = float_array(bias, "bias").reshape(-1)
        b = np.repeat(per_channel, matrix.shape[0] // out[0])
    return NodeMap(matrix, b, out if dims == 2 else (out[0], out[2]))


def _pool(node: nir.NIRNode, shape: tuple[int, ...], *, average: bool) -> NodeMap:
    if len(shape) != 3:
        raise UnsupportedNode(f"a 2-d pool cannot take input of shape {shape}")
    kernel = _ints(node.kernel_size, 2, "kernel_size")
    lo, hi = _padding(node.padding, kernel, (1, 1))
    value = 1.0 / (kernel[0] * kernel[1]) if average else 1.0  # padding counts in the average
    weight = np.full((shape[0], 1, *kernel), value)
    matrix, out = _window_matrix(weight, shape, stride=_ints(node.stride, 2, "stride"),
                                 pad_lo=lo, pad_hi=hi, dilation=(1, 1), groups=shape[0])
    return NodeMap(matrix, None, out)


def _flatten(node: nir.NIRNode, shape: tuple[int, ...]) -> NodeMap:
    rank = len(shape)
    if rank == 0:
        raise UnsupportedNode("a Flatten cannot take a scalar input")
    start = _ints(node.start_dim, 1, "start_dim", low=-rank)[0] % rank
    end = _ints(node.end_dim, 1, "end_dim", low=-rank)[0] % rank
    out = (*shape[:start], math.prod(shape[start:end + 1]), *shape[end + 1:])
    return NodeMap(sp.identity(math.prod(shape), format="csr"), None, out)  # C-major: no move


def node_map(node: nir.NIRNode, shape: tuple[int, ...]) -> NodeMap:
    """One linear NIR node on input of ``shape`` (NIR's layout, without the batch dimension)."""
    kind = type(node).__name__
    n = math.prod(shape)
    if kind in ("Affine", "Linear"):
        w = float_array(node.weight, "weight")
        if len(shape) != 1 or w.ndim != 2 or w.shape[1] != n:
            raise UnsupportedNode(f"{kind} with weight {w.shape} cannot take input of shape"
                                  f" {shape} (a Flatten before it is missing?)")
        bias = float_array(node.bias, "bias").reshape(-1) if kind == "Affine" else None
        return NodeMap(sp.csr_matrix(w), bias, (w.shape[0],))
    if kind == "Scale":
        try:
            scale = np.broadcast_to(float_array(node.scale, "scale"), shape).reshape(-1)
        except ValueError:
            raise UnsupportedNode(f"scale of shape {np.shape(node.scale)} cannot take input of"
                                  f" shape {shape}") from None
        return NodeMap(sp.diags(scale, format="csr"), None, shape)
    if kind in ("Conv1d", "Conv2d"):
        return _conv(node, shape, 1 if kind == "Conv1d" else 2)
    if kind in ("SumPool2d", "AvgPool2d"):
        return _pool(node, shape, average=kind == "AvgPool2d")
    if kind == "Flatten":
        return _flatten(node, shape)
    if kind == "Identity":
        return NodeMap(sp.identity(n, format="csr"), None, shape)
    raise UnsupportedNode(f"{kind} is not a linear node")


@dataclasses.dataclass(frozen=True)
class AffineMap:
    """``y = weight @ x + bias`` on C-major flattened vectors (float64)."""

    weight: np.ndarray  # (n_out, n_in)
    bias: np.ndarray  # (n_out,)
    out_shape: tuple[int, ...]


def compose(nodes: list[tuple[str, nir.NIRNode]], in_shape: tuple[int, ...]) -> AffineMap:
    """Compose a run of linear nodes, applied in order to input of ``in_shape``, into one map
    (no nodes: the identity)."""
    n_in = math.prod(in_shape)
    # Every map has n_in columns, the identity (no nodes: np.eye below) n_in rows as well:
    # refused before anything of that size is allocated.
    least = n_in * (1 if nodes else n_in)
    if least > MAX_DENSE_ELEMENTS:
        raise UserError(f"input of shape {in_shape} makes a weight matrix of at least {least}"
                        f" elements, more than the {MAX_DENSE_ELEMENTS} one Dense can hold here")
    matrix = sp.identity(n_in, format="csr")
    bias = np.zeros(n_in)
    shape = in_shape
    for name, node in nodes:
        try:
            m = node_map(node, shape)
        except UnsupportedNode as exc:
            raise UnsupportedNode(f"node {name!r} ({type(node).__name__}): {exc}") from None
        if m.matrix.shape[0] * n_in > MAX_DENSE_ELEMENTS:
            raise UserError(f"node {name!r} ({type(node).__name__}) makes a {m.matrix.shape[0]}"
                            f" x {n_in} weight matrix, more than the {MAX_DENSE_ELEMENTS} weights"
                            " one Dense can hold here")
        matrix = m.matrix @ matrix
        bias = m.matrix @ bias + (0.0 if m.bias is None else m.bias)
        shape = m.out_shape
    if not nodes:  # a single Affine/Linear keeps its weights bit for bit either way
        return AffineMap(weight=np.eye(n_in), bias=bias, out_shape=shape)
    return AffineMap(weight=matrix.toarray(), bias=np.asarray(bias, dtype=np.float64),
                     out_shape=shape)
