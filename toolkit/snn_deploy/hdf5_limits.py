"""A size check for HDF5 files we did not write: refuse before reading what they claim to hold.

An HDF5 dataset declares its shape; chunked storage lets a few kilobytes of file claim 10**9
neurons, and reading it would allocate hundreds of gigabytes. Every reader of a NIR graph,
Deployment or netx file checks the declared sizes first.
"""

from __future__ import annotations

import io
from pathlib import Path

import h5py

from snn_deploy.errors import InputFileError

# No network this toolkit can run (Loihi 2: 120M synapses per chip, Intel product brief; a few
# chips) needs a single array near this; 2**28 elements = 1 GiB at float32.
MAX_DATASET_ELEMENTS = 1 << 28
MAX_TOTAL_ELEMENTS = 1 << 29


def check_declared_sizes(source: str | Path | io.BytesIO, *, origin: str) -> None:
    """Raise InputFileError when a dataset, or all of them together, claim too many elements.

    Files h5py cannot open are left to the caller's own reader (which names them as unreadable).
    """
    try:
        f = h5py.File(source, "r")
    except (OSError, ValueError):
        return
    total = 0
    with f:
        found: list[tuple[str, tuple[int, ...], int]] = []

        def visit(name: str, obj: object) -> None:
            if isinstance(obj, h5py.Dataset):
                found.append((name, tuple(obj.shape or ()), int(obj.size or 0)))

        try:
            f.visititems(visit)
        except (RuntimeError, OSError, KeyError, ValueError) as exc:
            raise InputFileError(f"{origin} is damaged: {type(exc).__name__} while listing its"
                                 " contents") from None
    for name, shape, size in found:
        if size > MAX_DATASET_ELEMENTS:
            raise InputFileError(f"{origin}: dataset {name} claims shape {shape} ({size:,}"
                                 f" elements, limit {MAX_DATASET_ELEMENTS:,}): refused unread")
        total += size
    if total > MAX_TOTAL_ELEMENTS:
        raise InputFileError(f"{origin}: its datasets claim {total:,} elements together (limit"
                             f" {MAX_TOTAL_ELEMENTS:,}): refused unread")
