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

import torch

from snn_deploy.errors import UserError
from snn_deploy.train.model import LIFNetwork, Trace


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


def perturbation_ms(model: LIFNetwork, x_clean: torch.Tensor, x_pert: torch.Tensor) -> float:
    """Mean square of the last LIF layer's membrane-potential perturbation Y (volts^2) of a trained
    ``LIFNetwork`` between two (T, B, n_in) encoded inputs of the same shape (e.g. a clean test set
    and its noisy or adversarial version, encoded with the same seed): mean over steps, samples and
    output neurons of Y_t^2. (For a NIR graph: ``evaluate.stability.graph_perturbation_ms``.)"""
    check_same_shape(x_clean, x_pert)
    with torch.no_grad():
        keep, gain = _lif_gains(model)
        y = membrane_perturbation(model.trace(x_clean).currents[-1],
                                  model.trace(x_pert).currents[-1], keep=keep, gain=gain)
    return float(y.square().mean())


def check_same_shape(x_clean: torch.Tensor, x_pert: torch.Tensor) -> None:
    if x_clean.shape != x_pert.shape:
        raise UserError(f"clean and perturbed inputs differ in shape: {tuple(x_clean.shape)}"
                        f" vs {tuple(x_pert.shape)}")
