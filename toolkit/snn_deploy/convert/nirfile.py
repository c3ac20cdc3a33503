"""NIR files read as untrusted input (convert stage): the graph, and the coding our writers record
in its metadata, each value checked before it is used.

``read_nir`` checks the HDF5 structure first (``hdf5_limits.check_declared_sizes``: no links or
storage outside the file, bounded sizes), then that every node parameter is numeric, then lets
``nir.read`` build the nodes; every failure is one InputFileError naming the file (and the node).
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import h5py
import nir
import numpy as np

from snn_deploy.bounds import MAX_STEPS
from snn_deploy.convert.lowering import not_numbers
from snn_deploy.errors import InputFileError, UserError
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


def brief(value: object) -> str:
    """A value from a file as one short line for a message."""
    text = " ".join(repr(value).split())
    return text if len(text) <= 60 else text[:57] + "..."


def _number(value: object) -> float | None:
    """A single finite number from a file's metadata, else None."""
    arr = np.asarray(value) if not isinstance(value, dict) else np.asarray(None)
    if arr.size != 1 or arr.dtype.kind not in "iuf":
        return None
    number = float(arr.reshape(-1)[0])
    return number if math.isfinite(number) else None


# Coding metadata our writers record as text (convert.export, convert.ann_to_snn).
CODING_TEXT_KEYS = ("encoding", "dataset", "decoder")


def read_coding(raw: object, *, where: str) -> dict:
    """An input coding read from a file (a NIR graph's ``metadata["snn_deploy"]``, a Deployment's
    coding), its values checked: ``steps`` a whole number in 1..MAX_STEPS, ``decoder_beta`` a
    finite number, names text. ``where`` names the coding in the one-line UserError."""
    if not isinstance(raw, dict):
        raise UserError(f"{where} is {brief(raw)}, not a group of values")
    coding = {}
    for key, value in raw.items():
        value = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        number = _number(value)
        what = f"{where}: {key}"
        if key == "steps":
            if number is None or number != round(number) or not 1 <= number <= MAX_STEPS:
                raise UserError(f"{what} must be a whole number in 1..{MAX_STEPS}, got"
                                f" {brief(value)}")
            value = int(number)
        elif key == "decoder_beta":
            if number is None:
                raise UserError(f"{what} must be a finite number, got {brief(value)}")
            value = number
        elif key in CODING_TEXT_KEYS and not isinstance(value, str):
            raise UserError(f"{what} must be text, got {brief(value)}")
        coding[key] = value
    return coding
