"""One layer's synapses as Lava processes, for the graph of ``run/lava_sim.py`` (``build_graph``).

Every layer's LIF is a flat (n,) population in C, H, W order, as everywhere in snn_deploy. A
``dense`` layer is a fixed-point ``Dense`` between flat ports. A ``conv`` layer is Lava's
``Conv`` (``lava.proc.conv``, ``PyConvModelFixed`` under ``select_tag="fixed_pt"``), which works
in Lava's (W, H, C) axis order and computes a true convolution (scipy's ``convolve2d``). As
lava-dl's netx does it (netx/hdf5.py ``create_conv``, netx/blocks/process.py ``Conv``):

- the kernel is flipped in both spatial axes and stored (C_out, kW, kH, C_in / groups):
  ``w[:, :, ::-1, ::-1].transpose(0, 3, 2, 1)``, so the convolution is torch's cross-correlation;
- stride, padding and dilation are given in (x, y) = (W, H) order, our (H, W) pairs reversed;
- the flat C, H, W spikes reach the Conv through Lava's virtual ports, reshaped to (C, H, W) and
  transposed to (W, H, C); its (W', H', C') output reaches the next LIF transposed back to
  (C', H', W') and flattened (netx's ``out.transpose([2, 1, 0]).flatten()``).

Lava's fixed-point Conv applies no weight exponent and wraps its output into 24 bits, as
``quantize.deployment.ConvGeometry`` states and the emulator's ``ConvSynapses`` computes. Like a
Dense, it delays its output by one step, so the graph's timing (staggered resets, pauses for
recurrent layers) is the same for both kinds.

A dense layer with synaptic delays (``QuantLayer.delays``) is Lava's ``DelayDense``
(``PyDelayDenseModelBitAcc``) as netx builds it (netx/blocks/process.py ``Dense``): the (n, n_in)
delay matrix repeats each neuron's delay over its inputs, ``max_delay`` 62, so a spike sent at
step t reaches neuron j at t + 1 + d_j. Its buffer ``a_buff`` (n, 63) holds what arrives in the
next 63 steps; run/lava_sim.py empties the part of it that belongs to the next sample.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from snn_deploy.errors import UserError
from snn_deploy.quantize.deployment import MAX_DELAY, Deployment, QuantLayer
from snn_deploy.run.layer_constants import require_kinds

# Lava SignMode names for our sign_mode strings (lava/utils/weightutils.py, SignMode).
_SIGN_MODE_NAMES = {"mixed": "MIXED", "excitatory": "EXCITATORY", "inhibitory": "INHIBITORY"}

LAVA_KINDS = ("dense", "conv")  # the layer kinds the Lava backends build


def require_lava_kinds(dep: Deployment, what: str = "the Lava backends") -> None:
    """Refuse the layer kinds the Lava graph does not build yet (input layers of neurons)."""
    require_kinds(dep, LAVA_KINDS, f"{what} run dense and conv layers only so far")


def dense(weights: np.ndarray, *, weight_exp: int, num_weight_bits: int, sign_mode: str,
          num_message_bits: int, name: str, delays: np.ndarray | None = None) -> Any:
    """A fixed-point Lava ``Dense`` of (n_out, n_in) mantissas; a ``DelayDense`` with (n_out,)
    ``delays``, one per output neuron, as netx builds it."""
    from lava.proc.dense.process import DelayDense, Dense
    from lava.utils.weightutils import SignMode

    params = dict(weights=weights, weight_exp=weight_exp, num_weight_bits=num_weight_bits,
                  num_message_bits=num_message_bits,
                  sign_mode=getattr(SignMode, _SIGN_MODE_NAMES[sign_mode]), name=name)
    if delays is None:
        return Dense(**params)
    matrix = np.repeat(np.asarray(delays, dtype=int).reshape(-1, 1), weights.shape[1], axis=1)
    return DelayDense(delays=matrix, max_delay=MAX_DELAY, **params)


def conv_kernel(weights: np.ndarray) -> np.ndarray:
    """(C_out, C_in / groups, kH, kW) cross-correlation mantissas -> the int32 (C_out, kW, kH,
    C_in / groups) kernel of Lava's (true) convolution in (W, H, C) order."""
    return np.ascontiguousarray(np.asarray(weights)[:, :, ::-1, ::-1].transpose(0, 3, 2, 1),
                                dtype=np.int32)


def _xy(pair: tuple[int, int]) -> tuple[int, int]:
    """Our (H, W) pair as Lava's (x, y) = (W, H)."""
    return int(pair[1]), int(pair[0])


def conv(layer: QuantLayer, port: Any) -> Any:
    """Connect flat C, H, W ``port`` to a new Lava ``Conv`` for ``layer``; returns the port that
    carries its output as a flat C, H, W (n,) vector."""
    from lava.proc.conv.process import Conv

    g = layer.conv
    if g is None:
        raise UserError(f"layer {layer.neuron} is a conv layer without a conv geometry")
    c, h, w = (int(d) for d in g.in_shape)
    # num_weight_bits: Lava's default 8, as netx leaves it (the fixed-point model ignores it)
    proc = Conv(weight=conv_kernel(layer.weights), weight_exp=0, input_shape=(w, h, c),
                stride=_xy(g.stride), padding=_xy(g.padding), dilation=_xy(g.dilation),
                groups=int(g.groups), num_message_bits=layer.num_message_bits,
                name=f"conv:{layer.synapse}")
    expected = tuple(reversed(g.out_shape))
    if tuple(proc.output_shape) != expected:  # deployment validation should have caught it
        raise UserError(f"layer {layer.neuron}: Lava's Conv gives (W, H, C) {proc.output_shape},"
                        f" the deployment says (C, H, W) {g.out_shape}")
    port.reshape((c, h, w)).transpose([2, 1, 0]).connect(proc.s_in)
    return proc.a_out.transpose([2, 1, 0]).flatten()


def feed_forward(layer: QuantLayer, port: Any) -> Any:
    """Connect flat ``port`` (the layer before's spikes, or the input) to ``layer``'s feed-forward
    synapse; returns the port that carries its (n,) output, C, H, W order, to the layer's LIF."""
    if layer.kind == "conv":
        return conv(layer, port)
    ff = dense(layer.weights, weight_exp=layer.weight_exp, num_weight_bits=layer.num_weight_bits,
               sign_mode=layer.sign_mode, num_message_bits=layer.num_message_bits,
               name=f"dense:{layer.synapse}", delays=layer.delays)
    port.connect(ff.s_in)
    return ff.a_out


def recurrent(layer: QuantLayer, lif: Any) -> Any:
    """A Dense from ``lif``'s spikes back into its input port (which sums both synapses)."""
    rec = layer.recurrent
    assert rec is not None
    loop = dense(rec.weights, weight_exp=rec.weight_exp, num_weight_bits=rec.num_weight_bits,
                 sign_mode=rec.sign_mode, num_message_bits=0, name=f"dense_rec:{layer.neuron}")
    lif.s_out.connect(loop.s_in)
    loop.a_out.connect(lif.a_in)
    return loop
