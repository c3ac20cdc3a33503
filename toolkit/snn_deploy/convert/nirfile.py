"""NIR files read as untrusted input (convert stage), each value checked before it is used (the
coding our writers record in the metadata is checked by ``coding.Coding.read``).

``read_nir`` checks the HDF5 structure first (``hdf5_limits.check_declared_sizes``: no links or
storage outside the file, bounded sizes), then that every node parameter is numeric, then lets
``nir.read`` build the nodes; every failure is one InputFileError naming the file (and the node).
"""

from __future__ import annotations

import io
from pathlib import Path

import h5py
import nir

from snn_deploy.convert.lowering import not_numbers
from snn_deploy.errors import InputFileError
from snn_deploy.hdf5_limits import check_declared_sizes

# NIR fields written as text (nir.write): a node's type, a graph's edges, a convolution's padding
# ('same', 'valid'); a node's metadata is free-form. Every other field of a node holds numbers.
TEXT_FIELDS = ("type", "edges", "padding", "metadata")


def read_nir(path: str | Path) -> nir.NIRGraph:
    """``nir.read`` with one clear error for a missing, unreadable or non-NIR file."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"NIR file not found: {path}")
    return _read(path, origin=str(path))


def read_nir_bytes(data: bytes, *, origin: str) -> nir.NIRGraph:
    """Read a NIR graph from the bytes of a NIR file (e.g. the copy inside a Deployment)."""
    return _read(io.BytesIO(data), origin=origin)


def _check_numeric_fields(source: Path | io.BytesIO, *, origin: str) -> None:
    """Refuse node fields that are not numbers (text, compound records, references), naming the
    node and field, before ``nir.read`` builds nodes from them (nir fails on some deep inside).
    Follows links as nir.read does; ``check_declared_sizes`` has bounded them."""
    try:
        f = h5py.File(source, "r")
    except (OSError, ValueError):
        return  # nir.read names the file as unreadable
    with f:
        try:
            pending: list[tuple[str, object]] = [("", f.get("node"))]
            while pending:
                name, group = pending.pop()
                if not isinstance(group, h5py.Group):
                    continue
                for key, item in group.items():
                    if key == "nodes" and isinstance(item, h5py.Group):
                        pending.extend((f"{name}.{sub}" if name else sub, node)
                                       for sub, node in item.items())
                    elif key not in TEXT_FIELDS and isinstance(item, h5py.Dataset):
                        held = not_numbers(item.dtype)
                        if held is not None:
                            raise InputFileError(f"{origin}: node {name or '(the graph)'!r}:"
                                                 f" parameter {key} holds {held}, not numbers")
        except (OSError, RuntimeError, KeyError, ValueError, TypeError):
            return  # damaged, or a type numpy has no name for: nir.read names the file


def _read(source: Path | io.BytesIO, *, origin: str) -> nir.NIRGraph:
    check_declared_sizes(source, origin=origin)
    _check_numeric_fields(source, origin=origin)
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
