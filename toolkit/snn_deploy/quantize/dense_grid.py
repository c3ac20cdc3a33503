"""The weights Lava's fixed-point Dense really uses: its sign modes and the grid its mantissas lie on.

``quantize.fixed_point`` rounds onto ``weight_grid``; the emulator, the twin and the netx reader and
writer apply ``lava_dense_grid`` as Lava does (lava/utils/weightutils.py).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from snn_deploy import lava_formats as lava
from snn_deploy.profiles import Profile


@dataclasses.dataclass(frozen=True)
class WeightGrid:
    """The integer values a fixed-point Dense really uses for one sign mode."""

    low: int
    high: int
    step: int  # mantissas are multiples of step (truncated low bits)


def weight_grid(profile: Profile, sign_mode: str) -> WeightGrid:
    """Grid of ``lava.utils.weightutils.clip_weights`` then ``truncate_weights``."""
    mixed = sign_mode == "mixed"
    top = (1 << profile.weight_bits) - 1
    low = -(1 << profile.weight_bits) if mixed else (-top if sign_mode == "inhibitory" else 0)
    high = 0 if sign_mode == "inhibitory" else top
    step = 1 << (profile.weight_bits - profile.num_weight_bits + int(mixed))
    return WeightGrid(low=-((-low) // step) * step, high=(high // step) * step, step=step)


def lava_dense_grid(weights: np.ndarray, *, sign_mode: str, num_weight_bits: int,
                    weight_bits: int = lava.WEIGHT_BITS) -> np.ndarray:
    """The weights Lava's fixed-point Dense really uses: ``clip_weights(num_bits=weight_bits)``
    then ``truncate_weights`` (lava/utils/weightutils.py), as int32."""
    w = np.asarray(weights, dtype=np.int64)
    sign = -1 if sign_mode == "inhibitory" else 1
    mixed = int(sign_mode == "mixed")
    w = np.clip(sign * w, -(1 << weight_bits) * mixed, (1 << weight_bits) - 1)
    drop = weight_bits - num_weight_bits + mixed
    if drop < 0:
        raise ValueError(f"num_weight_bits {num_weight_bits} makes Lava shift by {drop} bits")
    return (sign * ((w >> drop) << drop)).astype(np.int32)


def sign_mode_of(weights: np.ndarray) -> str:
    """Lava's ``determine_sign_mode``: excitatory if no weight < 0, inhibitory if none > 0."""
    if np.all(weights >= 0):
        return "excitatory"
    if np.all(weights <= 0):
        return "inhibitory"
    return "mixed"
