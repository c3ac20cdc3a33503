"""lava-dl netx HDF5 networks <-> Deployment: the format and netx's weight mapping (stage 3).

A netx file (lava-dl 0.6, ``lava/lib/dl/netx/hdf5.py``) holds groups ``layer/0..n-1``, each with a
``type`` and a ``shape``. ``netx.hdf5.Network`` turns a ``dense`` layer into a Lava ``Dense``
feeding a Lava ``LIF`` (CUBA or LOIHI neuron), which computes per step (units: Lava integers)

    a(t+1) = shift(sum_j W'_ij s_j(t), weight_exp)       (Dense, one step late)
    u <- trunc(u * (4096 - iDecay) / 4096) + (a << 6)    (du = iDecay - 1)
    v <- trunc(v * (4096 - vDecay) / 4096) + u + (bias << 6)
    spike = v > (vThMant << 6);  v <- 0 on spike

where ``W'``, ``weight_exp`` and ``num_weight_bits`` come from netx's own ``optimize_weight_bits``
(``lava/lib/dl/netx/utils.py``) applied to the stored weights ``W``: ``W' = W << s``,
``weight_exp = -s`` with ``s`` the largest shift that keeps ``W'`` in 8 bits. netx passes no sign
mode: Lava's Dense picks it from ``W'`` (``determine_sign_mode``) and clips and truncates ``W'`` to
its grid. The file's ``wgtExp`` and ``refDelay`` are ignored by netx; its bias exponent is always 6.
So a netx file holds 8-bit weights at exponent 0, in units of ``1 << 6`` on ``u``: the mapping is
lossless for weights in [-256, 254] except where netx's and Lava's sign-mode rules disagree (a
weight matrix with no positive entry whose minimum is -2**k: Lava clips -256 to -255). ``read_netx``
reproduces netx's parameters exactly, quirks included, and counts the weights netx changed.

Reading is ``netx_read.read_netx`` (one layer at a time: ``netx_layers``), writing
``netx_write.write_netx``; this module holds what both directions share: Lava's formats as netx
assumes them and netx's own weight mapping (``netx_synapse``, ``netx_recurrent``).

Timing: netx's ``Network`` is the same Dense -> LIF chain as the ``lava-sim`` backend, one step of
Dense delay per layer, so with L dense layers its output for input step t appears at Lava step
t + L, exactly where ``run_lava_sim`` reads it; there is no further offset (tests/test_netx.py
checks this spike for spike, and that a one-step shift would not match).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from snn_deploy import lava_formats as lava
from snn_deploy.errors import ProfileError
from snn_deploy.profiles import Profile
from snn_deploy.quantize.dense_grid import lava_dense_grid, sign_mode_of

# Formats netx's mapping assumes, read in Lava 0.10 and lava-dl 0.6; a profile that differs
# would give the same integers another meaning.
# The number formats a netx file assumes: Lava's own (lava_formats.py cites where each is set);
# netx/hdf5.py get_neuron_params reads 'du' as iDecay - 1 and 'dv' as vDecay.
LAVA_FORMATS = {
    "weight_bits": lava.WEIGHT_BITS,
    "decay_bits": lava.DECAY_BITS,
    "du_offset": lava.DU_OFFSET,
    "dv_offset": lava.DV_OFFSET,
    "activation_shift": lava.ACTIVATION_SHIFT,
    "threshold_shift": lava.THRESHOLD_SHIFT,
}
NETX_BIAS_EXP = 6  # netx/hdf5.py get_neuron_params: 'bias_exp': 6 for CUBA/LOIHI neurons
NETX_WEIGHT_BITS = lava.WEIGHT_BITS  # netx/utils.py optimize_weight_bits: "standard 8 bit signed"
NETX_LIF_NEURONS = ("CUBA", "LOIHI")  # netx/hdf5.py: both become lava.proc.lif LIF
# slayer/neuron/cuba.py neuron_params(scale=1 << 6): vThMant = 64 * threshold, weights x 64; with
# Lava's threshold shift, 4096 integer voltage units per SLAYER voltage unit.
SLAYER_SCALE = float((1 << 6) << LAVA_FORMATS["threshold_shift"])
FORMAT_TAG = "snn-deploy-netx"  # root attribute of files written by write_netx
FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class NetxSynapse:
    """The Lava ``Dense`` parameters netx derives from a stored weight matrix.

    ``weights`` (int32, on Lava's grid for ``sign_mode``) are what Lava's fixed-point Dense
    multiplies with; ``changed`` counts the weights whose effective value ``weights *
    2**weight_exp`` differs from the stored one (netx's clip at 254 / -256, Lava's clip at -255).
    """

    weights: np.ndarray
    weight_exp: int
    num_weight_bits: int
    sign_mode: str
    changed: int


def netx_synapse(weight: np.ndarray) -> NetxSynapse:
    """netx/utils.py ``optimize_weight_bits``, then Lava's Dense weight preparation.

    Raises:
        ValueError: weights netx cannot load (all zero: it divides by the maximum) or that make
            it shift by a negative count (numpy then returns 0 or -1, not a shifted value).
    """
    w, shift, num_weight_bits = _netx_optimize(weight)
    return _lava_synapse(w, weight, shift, num_weight_bits)


def netx_recurrent(weight: np.ndarray, weight_rec: np.ndarray) -> tuple[NetxSynapse, NetxSynapse]:
    """A ``dense_rec`` layer: netx optimizes the two matrices side by side (one shift and one
    ``num_weight_bits``, netx/hdf5.py create_dense with rec=True); each Lava Dense then picks its
    own sign mode from its own weights (netx/blocks/process.py RecurrentDense passes none)."""
    n_in = weight.shape[1]
    w, shift, num_weight_bits = _netx_optimize(np.hstack([weight, weight_rec]))
    return (_lava_synapse(w[:, :n_in], weight, shift, num_weight_bits),
            _lava_synapse(w[:, n_in:], weight_rec, shift, num_weight_bits))


def _netx_optimize(weight: np.ndarray) -> tuple[np.ndarray, int, int]:
    """netx's ``optimize_weight_bits``: (clipped weights, left shift, num_weight_bits)."""
    w = np.asarray(weight, dtype=np.int64)
    max_w, min_w = int(w.max()), int(w.min())
    if max_w > 254 and min_w < 0:  # netx clips mixed matrices, in this order
        w = np.clip(w, -256, 254)
        max_w = int(w.max())
    if min_w < -256 and max_w > 0:
        w = np.clip(w, -256, 254)
        min_w = int(w.min())
    if max_w == min_w == 0:
        raise ValueError("all weights are zero, which netx's optimize_weight_bits divides by")
    signed = int(not (max_w < 0 or min_w >= 0))  # netx: max < 0 inhibitory, min >= 0 excitatory
    if signed:
        scale = min(127 / max_w if max_w > 0 else np.inf, -128 / min_w)
    elif max_w < 0:
        scale = -256 / min_w
    else:
        scale = 255 / max_w
    shift = int(np.floor(np.log2(scale))) + signed
    if shift < 0:
        raise ValueError(f"weights up to {max_w} (down to {min_w}) make netx shift by {shift}")
    zeros = next((n for n in range(NETX_WEIGHT_BITS, 0, -1) if not np.any(w % (1 << n))), 0)
    return w, shift, NETX_WEIGHT_BITS - shift - (zeros - signed)


def _lava_synapse(w: np.ndarray, weight: np.ndarray, shift: int, num_weight_bits: int
                  ) -> NetxSynapse:
    """Lava's Dense preparation of netx-optimized weights ``w << shift``."""
    shifted = w << shift
    sign_mode = sign_mode_of(shifted)
    grid = lava_dense_grid(shifted, sign_mode=sign_mode, num_weight_bits=num_weight_bits)
    changed = int(np.sum(grid.astype(np.int64) != (np.asarray(weight, dtype=np.int64) << shift)))
    return NetxSynapse(weights=grid, weight_exp=-shift, num_weight_bits=num_weight_bits,
                       sign_mode=sign_mode, changed=changed)


def check_profile(profile: Profile) -> None:
    """Refuse a profile whose fixed-point formats differ from Lava's, which netx assumes."""
    wrong = [f"{k} = {getattr(profile, k)} (Lava: {v})" for k, v in LAVA_FORMATS.items()
             if getattr(profile, k) != v]
    if wrong:
        raise ProfileError(f"profile {profile.name!r} does not use Lava's fixed-point formats that"
                           f" lava-dl netx assumes: {', '.join(wrong)}")
