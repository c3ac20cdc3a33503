"""Reading stored HDF5 values of a Deployment file into Python values, each checked: one
InputFileError naming what was read where ``int()`` or a cast would raise a bare error, wrap or
truncate (``quantize.deployment.load_deployment``)."""

from __future__ import annotations

import math

import numpy as np

from snn_deploy import lava_formats as lava
from snn_deploy.errors import InputFileError


def text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


INT64_LIMIT = 2.0**63
INT32_RANGE = (-(1 << (lava.INT_BITS - 1)), (1 << (lava.INT_BITS - 1)) - 1)


def integer(value: object, what: str) -> int:
    """An HDF5 attribute as an int: an integer, or a float that is finite and whole. NaN, inf,
    2.5, 1e300 or text are an InputFileError naming ``what`` (int() would raise a bare
    ValueError or OverflowError, or truncate 2.5 to 2)."""
    arr = np.asarray(value)
    ok = arr.shape == () and arr.dtype.kind in "iuf"
    if ok and arr.dtype.kind == "f":
        x = float(arr)
        ok = math.isfinite(x) and x == math.floor(x) and abs(x) < INT64_LIMIT
    if not ok:
        raise InputFileError(f"{what} must be an integer, got {value!r}")
    return int(arr)


def real(value: object, what: str) -> float:
    """An HDF5 attribute as a float (validate_deployment checks its range)."""
    arr = np.asarray(value)
    if arr.shape != () or arr.dtype.kind not in "iuf":
        raise InputFileError(f"{what} must be a number, got {value!r}")
    return float(arr)


def int32_array(data: object, what: str) -> np.ndarray:
    """A stored integer array as int32. Floats must be whole and finite (a NaN cast to int32 is
    silently -2**31), every value within int32 (a cast would silently wrap)."""
    arr = np.asarray(data)
    if arr.dtype.kind not in "iuf":
        raise InputFileError(f"{what} must hold integers, got dtype {arr.dtype}")
    if arr.dtype.kind == "f" and arr.size and not (
            np.all(np.isfinite(arr)) and np.array_equal(arr, np.floor(arr))):
        raise InputFileError(f"{what} must hold integers, got non-integer or non-finite floats")
    lo, hi = INT32_RANGE
    if arr.size and (arr.min() < lo or arr.max() > hi):
        raise InputFileError(f"{what} holds values {arr.min()}..{arr.max()} beyond int32")
    return arr.astype(np.int32)


def int_tuple(value: object, what: str, size: int | None = None) -> tuple[int, ...]:
    """A stored 1-d integer array as a tuple (of ``size`` entries when given)."""
    arr = int32_array(value, what)
    if arr.ndim != 1 or (size is not None and arr.size != size):
        raise InputFileError(f"{what} must be {size or 'a list of'} integers, got shape {arr.shape}")
    return tuple(int(v) for v in arr)
