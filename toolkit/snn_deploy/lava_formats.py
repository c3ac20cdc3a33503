"""Lava 0.10's fixed-point number formats: the one table of limits every stage checks against.

Read in Lava's bit-accurate process models: ``AbstractPyLifModelFixed`` and ``PyLifModelBitAcc``
(lava/proc/lif/models.py), ``AbstractPyDenseModelBitAcc`` (lava/proc/dense/models.py) and
``clip_weights`` / ``truncate_weights`` (lava/utils/weightutils.py). A profile
(hw_profiles/*.toml) may describe a chip with narrower formats than these, never wider ones:
``profiles.parse_profile`` refuses a key outside the range it takes from here, and
``quantize.deployment.validate_deployment`` checks every Deployment field against its profile.
tests/test_profiles.py checks each constant against Lava's own classes.

This module belongs to no stage: profiles, quantization and every backend read it.
"""

from __future__ import annotations

# ------------------------------------------------------------------ LIF (lava/proc/lif/models.py)
# AbstractPyLifModelFixed.uv_bitwidth = 24: u wraps around in 24 bits, v saturates at +-(2**23 - 1).
STATE_BITS = 24
# decay_shift = 12 (decay_unity = 4096); du, dv are LavaPyType(int, np.uint16, precision=12).
DECAY_BITS = 12
# ds_offset = 1, dm_offset = 0, "1-bit registers in Loihi 1" (AbstractPyLifModelFixed.__init__).
DU_OFFSET = 1
DV_OFFSET = 0
DECAY_OFFSET_MAX = 1
# PyLifModelBitAcc.vth: LavaPyType(int, np.int32, precision=17), unsigned 0..131071.
THRESHOLD_BITS = 17
# vth_shift = 6: v is compared with vth << 6.
THRESHOLD_SHIFT = 6
# act_shift = 6: the synaptic input enters u as a_in << 6.
ACTIVATION_SHIFT = 6
# bias_mant: LavaPyType(np.ndarray, np.int16, precision=13), signed -4096..4095.
BIAS_MANT_BITS = 13
# bias_exp: LavaPyType(np.ndarray, np.int16, precision=3), unsigned 0..7 (PyLifModelBitAcc docstring).
BIAS_EXP_BITS = 3
BIAS_EXP_MAX = (1 << BIAS_EXP_BITS) - 1
# PyLifModelBitAcc.s_out: LavaPyType(VEC_DENSE, np.int32, precision=24): a graded spike carries
# at most 24 bits (Dense's own num_message_bits field is 5 bits wide, 0..31, but no payload the
# fixed-point LIF sends is wider than 24). Input levels up to 2**24 are also exact in float32,
# which run/emulator.py input_levels relies on.
MESSAGE_BITS = 24

# ------------------------------------------------------------- Dense (lava/proc/dense/models.py)
# AbstractPyDenseModelBitAcc.run_spk: clip_weights(weights, sign_mode, num_bits=8); weights are
# LavaPyType(np.ndarray, np.int32, precision=8) (lava/utils/weightutils.py clip_weights: mixed
# [-256, 255], excitatory [0, 255], inhibitory [-255, 0]).
WEIGHT_BITS = 8
# truncate_weights drops WEIGHT_BITS - num_weight_bits low bits (one more in mixed sign mode), a
# count that must not be negative (num_weight_bits_range). At 0 bits nothing is left (a mixed
# weight -256 even becomes -512). A profile needs 2: with 1, a mixed-sign layer keeps no positive
# weight (its grid is {-256, 0}).
NUM_WEIGHT_BITS_MIN = 1
PROFILE_NUM_WEIGHT_BITS_MIN = 2
# Dense's weight_exp shifts the summed input (np.left_shift / np.right_shift). Lava accepts any
# integer; the chip's weight exponent is a signed 4-bit field (Davies et al., IEEE Micro 38(1)
# 2018, Sec. 3, as hw_profiles/loihi2.toml cites it).
WEIGHT_EXP_MIN = -8
WEIGHT_EXP_MAX = 7

# ----------------------------------------------------------------------------------- storage
# Lava's fixed-point arrays (u, v, a_out, weights, the effective bias) are np.int32: sums wrap there.
INT_BITS = 32

SIGN_MODES = ("mixed", "excitatory", "inhibitory")


def weight_clip_range(sign_mode: str, weight_bits: int = WEIGHT_BITS) -> tuple[int, int]:
    """(lowest, highest) weight ``clip_weights(num_bits=weight_bits)`` keeps for a sign mode
    (lava/utils/weightutils.py): mixed [-2**b, 2**b - 1], excitatory [0, 2**b - 1], inhibitory
    [-(2**b - 1), 0]."""
    top = (1 << weight_bits) - 1
    if sign_mode == "mixed":
        return -(1 << weight_bits), top
    if sign_mode == "excitatory":
        return 0, top
    if sign_mode == "inhibitory":
        return -top, 0
    raise ValueError(f"unknown sign mode {sign_mode!r}: one of {', '.join(SIGN_MODES)}")


def num_weight_bits_range(sign_mode: str, weight_bits: int = WEIGHT_BITS) -> tuple[int, int]:
    """The num_weight_bits a Dense of this sign mode can take: ``truncate_weights`` drops
    ``weight_bits - num_weight_bits + mixed`` bits, so up to weight_bits + 1 in mixed sign mode
    (lava-dl netx's optimize_weight_bits gives 9 for odd mixed weights), weight_bits otherwise."""
    return NUM_WEIGHT_BITS_MIN, weight_bits + int(sign_mode == "mixed")
