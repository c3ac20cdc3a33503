"""Stage 1: membrane-potential perturbation (Ding, Pan, Liu, Yu, Huang, "Robust Stable Spiking Neural
Networks", ICML 2024) as a training regulariser and as an evaluation output.

For the last LIF layer (the output layer here), with I_t the synaptic current that drives its
membrane (``train.model.lif_step``) on a clean and on a perturbed input, the perturbation of the
membrane potential without resets follows the neuron's own membrane dynamics:

    Y_0 = 0,   Y_t = keep * Y_{t-1} + gain * (I_clean,t - I_pert,t)        (volts)

with keep = 1 - dt/tau_mem and gain = dt/tau_mem for a LIF neuron (keep = 1, gain = r for IF), i.e.
Y_t = v_clean,t - v_pert,t had neither run reset. The regulariser is alpha * mean(Y^2) over
steps, samples and neurons; ``perturbation_ms`` reports mean(Y^2) for two given inputs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from snn_deploy.errors import UserError
from snn_deploy.train.model import LIFNetwork, Trace

if TYPE_CHECKING:
    from snn_deploy.convert.nirgraph import FloatNetwork


def membrane_perturbation(i_clean: torch.Tensor, i_pert: torch.Tensor, *,
                          keep: torch.Tensor | float, gain: torch.Tensor | float) -> torch.Tensor:
    """Y (T, B, n) from two (T, B, n) current traces, by the recursion in the module docstring."""
    y = torch.zeros_like(i_clean[0])
    out = []
    for diff in i_clean - i_pert:
        y = keep * y + gain * diff
        out.append(y)
    return torch.stack(out)


def _lif_gains(model: LIFNetwork) -> tuple[float, float]:
    gain = model.config.dt / model.config.tau_mem
    return 1.0 - gain, gain


def perturbation_loss(model: LIFNetwork, clean: Trace, perturbed: Trace) -> torch.Tensor:
    """mean(Y^2) of the last LIF layer between two traces of ``model`` (differentiable)."""
    keep, gain = _lif_gains(model)
    return membrane_perturbation(clean.currents[-1], perturbed.currents[-1], keep=keep,
                                 gain=gain).square().mean()


def _float_last_currents(network: FloatNetwork, x: torch.Tensor) -> torch.Tensor:
    """(T, B, n_out) currents I_t of the last layer of a NIR layer chain on (T, B, n_in) input."""
    # The float backend's own step, so these are the currents of the graph being evaluated.
    # (A later stage: imported here only when the caller hands over a FloatNetwork.)
    from snn_deploy.run.float_backend import LayerParams, layer_step

    params = [LayerParams.of(layer) for layer in network.layers]
    batch = x.shape[1]
    state = [(torch.zeros(batch, layer.size),) * 3 for layer in network.layers]  # i, v, z
    currents = []
    for x_t in x.reshape(x.shape[0], batch, -1).to(torch.float32):
        z = x_t
        for k, p in enumerate(params):
            i, v, z_prev = state[k]
            z, i, v = layer_step(p, z, i, v, z_prev)
            state[k] = (i, v, z)
        currents.append(state[-1][0])
    return torch.stack(currents)


def perturbation_ms(model_or_network: LIFNetwork | FloatNetwork, x_clean: torch.Tensor,
                    x_pert: torch.Tensor) -> float:
    """Mean square of the last LIF layer's membrane-potential perturbation Y (volts^2).

    Args:
        model_or_network: a trained ``LIFNetwork`` or a NIR layer chain
            (``convert.nirgraph.FloatNetwork``, run with the float backend's dynamics).
        x_clean, x_pert: (T, B, n_in) encoded inputs (spikes or graded values), same shape: e.g. a
            clean test set and its noisy or adversarial version, encoded with the same seed.

    Returns:
        mean over steps, samples and output neurons of Y_t^2.
    """
    if x_clean.shape != x_pert.shape:
        raise UserError(f"clean and perturbed inputs differ in shape: {tuple(x_clean.shape)}"
                        f" vs {tuple(x_pert.shape)}")
    with torch.no_grad():
        if isinstance(model_or_network, LIFNetwork):
            keep, gain = _lif_gains(model_or_network)
            i_clean = model_or_network.trace(x_clean).currents[-1]
            i_pert = model_or_network.trace(x_pert).currents[-1]
            y = membrane_perturbation(i_clean, i_pert, keep=keep, gain=gain)
        else:
            spec = model_or_network.layers[-1].spec
            mem_gain = torch.as_tensor(spec.mem_gain, dtype=torch.float32)
            r = torch.as_tensor(spec.r, dtype=torch.float32)
            keep_t = 1.0 - mem_gain if spec.leak else torch.ones_like(r)
            gain_t = mem_gain * r if spec.leak else r
            y = membrane_perturbation(_float_last_currents(model_or_network, x_clean),
                                      _float_last_currents(model_or_network, x_pert),
                                      keep=keep_t, gain=gain_t)
    return float(y.square().mean())
