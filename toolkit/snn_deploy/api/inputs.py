"""User arrays in: ``.npy`` files read safely, time-major layouts told apart.

Workflow layer (``snn_deploy.api``); a file a user gives is untrusted input (docs/security.md).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from snn_deploy.errors import InputFileError, UserError
from snn_deploy.fileio import regular_input

# numpy 1.26's default max_header_size (numpy/lib/format.py), in characters; its own check comes
# after it has read the header, whose length field (4 bytes in versions 2 and 3) is checked first.
NPY_HEADER_MAX = 10_000
NPY_LENGTH_BYTES = {(1, 0): 2, (2, 0): 4, (3, 0): 4}  # the header length field of each version


def load_npy(path: str | Path) -> np.ndarray:
    """A numeric array from a user's .npy file, checked before its data is read: a regular file
    (``regular_input``: no FIFO or device), a header of format 1, 2 or 3, a dtype torch takes
    (bool, int, uint, float up to 64 bits; returned in native byte order) and exactly
    prod(shape) * itemsize bytes after the header, so nothing larger than the file is allocated;
    finite values. Never unpickles objects."""
    path = regular_input(path)
    fmt = np.lib.format
    try:
        with path.open("rb") as f:
            version = fmt.read_magic(f)
            if version not in NPY_LENGTH_BYTES:
                raise ValueError(f"unknown .npy format version {version}")
            start = f.tell()
            length = int.from_bytes(f.read(NPY_LENGTH_BYTES[version]), "little")
            if length > NPY_HEADER_MAX:
                raise ValueError(f"header of {length:,} bytes, more than {NPY_HEADER_MAX:,}")
            f.seek(start)
            # version 3 is version 2 with a UTF-8 header: the same for a numeric dtype's ASCII one
            read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape, fortran, dtype = read_header(f, max_header_size=NPY_HEADER_MAX)
            if dtype.kind not in "biuf" or dtype.itemsize > 8:
                raise InputFileError(f"{path} must hold a numeric array, got dtype {dtype}")
            if min(shape, default=0) < 0:
                raise InputFileError(f"{path}: the header declares the negative shape {shape}")
            nbytes = math.prod(shape) * dtype.itemsize  # Python ints: no overflow
            follow = os.fstat(f.fileno()).st_size - f.tell()
            if nbytes != follow:
                raise InputFileError(f"{path}: the header declares shape {shape} of {dtype},"
                                     f" {nbytes:,} bytes, but {follow:,} bytes follow it")
            data = bytearray(nbytes)
            if f.readinto(data) != nbytes:
                raise InputFileError(f"{path} changed while it was read")
    except (ValueError, EOFError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputFileError(f"{path} is not a readable .npy array: {first}") from None
    except OSError as exc:
        raise InputFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    arr = np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")
    arr = arr.astype(dtype.newbyteorder("="), copy=False)
    if not np.all(np.isfinite(arr)):
        raise InputFileError(f"{path} holds NaN or Inf")
    return arr



def time_major(x: np.ndarray, shape: tuple[int, ...], *, what: str) -> tuple[np.ndarray, bool]:
    """(T, n), (T, *shape), (T, B, n) or (T, B, *shape) -> ((T, B, n), whether one sample)."""
    n = int(np.prod(shape))
    layouts = {(n,), tuple(shape)}
    if x.ndim >= 2 and tuple(x.shape[1:]) in layouts and x.shape[0] >= 1:
        return x.reshape(x.shape[0], 1, n), True
    if x.ndim >= 3 and tuple(x.shape[2:]) in layouts and min(x.shape[:2]) >= 1:
        return x.reshape(x.shape[0], x.shape[1], n), False
    also = "" if len(shape) == 1 else f", or (T, *input) / (T, B, *input), input {tuple(shape)}"
    raise UserError(f"{what}: shape {x.shape} does not fit {n} input channels: expected (T, n) or"
                    f" (T, B, n){also}")

