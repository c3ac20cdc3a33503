"""Per-sample random streams for randomised attacks (attack stage).

Sample i's random numbers come from its own ``torch.Generator`` seeded by (seed, stream, i), where
i is the sample's index in the evaluated set (``idx``), not its position in the batch. So an attack
gives every sample the same draws whichever other samples share its batch: the robustness sweep
attacks only the points still correct, a different subset at every eps, and a sample's result must
not depend on that subset. This mirrors ``FrozenEncoder``, whose encoder noise is per sample too.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch


def sample_seed(seed: int, stream: str, index: int) -> int:
    """A 63-bit seed mixed from (seed, stream name, sample index) by numpy's SeedSequence."""
    word = seed & 0xFFFF_FFFF_FFFF_FFFF  # two's complement: negative seeds are fine too
    key = [word & 0xFFFF_FFFF, word >> 32, zlib.crc32(stream.encode()), index]
    return int(np.random.SeedSequence(key).generate_state(1, np.uint64)[0]) >> 1


class SampleStreams:
    """One generator per sample; ``uniforms``/``normals`` draw (B, *shape) from them in order."""

    def __init__(self, idx: torch.Tensor, *, seed: int, stream: str):
        self.gens = [torch.Generator().manual_seed(sample_seed(seed, stream, int(i)))
                     for i in idx.tolist()]

    def _pick(self, rows: torch.Tensor | None) -> list[torch.Generator]:
        return self.gens if rows is None else [self.gens[r] for r in rows.tolist()]

    def uniforms(self, *shape: int, rows: torch.Tensor | None = None) -> torch.Tensor:
        """(B, *shape) float32 uniforms in [0, 1), row b from sample b's generator; ``rows``
        (batch positions) draws for those samples only, leaving the others' streams untouched."""
        gens = self._pick(rows)
        if not gens:
            return torch.zeros((0, *shape))
        return torch.stack([torch.rand(shape, generator=g) for g in gens])

    def normals(self, *shape: int, rows: torch.Tensor | None = None) -> torch.Tensor:
        """(B, *shape) float32 standard normals, as ``uniforms``."""
        gens = self._pick(rows)
        if not gens:
            return torch.zeros((0, *shape))
        return torch.stack([torch.randn(shape, generator=g) for g in gens])
