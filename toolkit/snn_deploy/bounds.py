"""Bounds of user-given sizes and seeds, shared by the CLI and the study config: values past them
are refused with one line before any work (they would overflow an RNG or allocate without end)."""

from __future__ import annotations

# Every RNG we seed takes this range (numpy's legacy seed and torch's generators both do).
MAX_SEED = 2**31 - 1
# Time steps per sample: N-TIDIGITS, the longest network lava-dl ships, runs 3000.
MAX_STEPS = 100_000
# Neurons in one layer: a Loihi 2 chip has about 1M (Intel's Loihi 2 product brief).
MAX_LAYER = 1 << 20
MAX_EPOCHS = 100_000
MAX_BATCH = 1 << 16
MAX_ITERATIONS = 100_000
# A study config or compare report is a small text file; more is refused unread.
MAX_TEXT_BYTES = 1 << 20
# Weights of one layer: as many elements as one HDF5 dataset we read back may hold (hdf5_limits).
MAX_LAYER_WEIGHTS = 1 << 28


def layer_sizes_problem(sizes: tuple[int, ...] | list[int]) -> str | None:
    """What is wrong with hidden layer sizes, or None: each in 1..MAX_LAYER, and no two
    consecutive ones needing more than MAX_LAYER_WEIGHTS weights."""
    for n in sizes:
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_LAYER:
            return f"a layer of {n!r} neurons: sizes must be integers in 1..{MAX_LAYER}"
    for a, b in zip(sizes, sizes[1:]):
        if a * b > MAX_LAYER_WEIGHTS:
            return f"{a} x {b} weights exceed the {MAX_LAYER_WEIGHTS:,} one layer may hold"
    return None
