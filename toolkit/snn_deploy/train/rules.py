"""Stage 1: learning rules of varying locality (Lin et al. 2024, arXiv 2402.01782), as batch losses.

Every rule trains the same deployable chain of LIF layers; what differs is which gradient reaches a
weight. E is the task loss: cross-entropy of the output decoder's logits (``coding``).

bptt     surrogate-gradient backpropagation through time: dE/dW through every layer and step,
         resets included (Norse's feed-forward step). Not local in space or time.
decolle  DECOLLE-style layer-local losses (Kaiser, Mostafa, Neftci, "Synaptic Plasticity Dynamics
         for Deep Continuous Local Learning (DECOLLE)", Front. Neurosci. 14:424, 2020): hidden layer
         l has a fixed random readout G_l (C x n_l, drawn once from the seed, never trained and
         never exported) and its own loss CE(G_l c_l, y), c_l = the layer's spike counts over the
         T steps; the output layer's own loss is E. The loss is the sum of the layer losses.
eprop    e-prop with random feedback (Bellec et al., "A solution to the learning dilemma for
         recurrent networks of spiking neurons", Nat. Commun. 11:3625, 2020): hidden layer l gets
         the learning signal L^t = B_l^T dE/dz_out^t, the output layer's error at step t sent back
         through a fixed random B_l (C x n_l); the output layer learns from E itself. Under the
         max-membrane decoder the error is dE/dm_out^t (the output membrane, not its spikes).

What is local in decolle and eprop (``model.GradientCuts`` with every cut):
- in space: each layer receives the previous layer's spikes detached, so no gradient crosses a
  layer; a layer's weights see only its own loss (decolle: its readout and the label) or its
  learning signal (eprop: a global third factor, the output error through fixed random weights);
- in time: the reset and the recurrent spikes z_{t-1} are constants to the gradient, so a weight's
  gradient is sum_t (dLoss/dz_t) * surrogate'(v_t) * e_t with e_t the eligibility trace (the
  presynaptic input filtered by the neuron's own synaptic and membrane leaks), which a synapse
  could accumulate forward in time. Autograd computes the same numbers backwards here.
Not local: the readouts/feedback matrices are shared fixed arrays, and adversarial examples (if
asked for) are made with the whole network's gradient, as an attacker would.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import torch
import torch.nn.functional as F

from snn_deploy.coding import MEMBRANE_DECODERS, decoder_logits
from snn_deploy.train.model import GradientCuts, LIFNetwork, Trace

LOCAL_CUTS = GradientCuts(between_layers=True, reset=True, recurrent=True)


@dataclasses.dataclass(frozen=True)
class RuleLoss:
    """One forward pass under a rule.

    total: what to differentiate (for eprop a surrogate whose value is not a loss);
    task: E, the output decoder's cross-entropy (the reported loss);
    layer_terms: per layer, the term that trains it (bptt: only the last is E, earlier are 0).
    """

    total: torch.Tensor
    task: torch.Tensor
    layer_terms: tuple[torch.Tensor, ...]
    trace: Trace


def fixed_feedback(model: LIFNetwork, *, seed: int) -> tuple[torch.Tensor, ...]:
    """Per hidden layer, a fixed random (C, n_l) float32 matrix, U(-1/sqrt(n_l), 1/sqrt(n_l))
    (``torch.nn.Linear``'s initial range): decolle's readouts, eprop's feedback weights."""
    gen = torch.Generator().manual_seed(seed)
    c = model.config.output_size
    return tuple((torch.rand((c, n), generator=gen) * 2 - 1) / n ** 0.5
                 for n in model.config.hidden)


def _task(trace: Trace, y: torch.Tensor, *, decoder: str, beta: float) -> torch.Tensor:
    return F.cross_entropy(decoder_logits(trace.output, decoder=decoder, beta=beta,
                                          membrane=trace.membrane), y)


def bptt_loss(model: LIFNetwork, x: torch.Tensor, y: torch.Tensor, *, decoder: str, beta: float,
              feedback: tuple[torch.Tensor, ...]) -> RuleLoss:
    del feedback
    trace = model.trace(x)
    task = _task(trace, y, decoder=decoder, beta=beta)
    zero = torch.zeros(())
    return RuleLoss(total=task, task=task, trace=trace,
                    layer_terms=(*[zero] * (len(trace.spikes) - 1), task))


def decolle_loss(model: LIFNetwork, x: torch.Tensor, y: torch.Tensor, *, decoder: str,
                 beta: float, feedback: tuple[torch.Tensor, ...]) -> RuleLoss:
    trace = model.trace(x, cuts=LOCAL_CUTS)
    task = _task(trace, y, decoder=decoder, beta=beta)
    local = tuple(F.cross_entropy(z.sum(dim=0) @ g.T, y) for z, g in zip(trace.spikes, feedback))
    return RuleLoss(total=task + sum(local), task=task, trace=trace, layer_terms=(*local, task))


def eprop_loss(model: LIFNetwork, x: torch.Tensor, y: torch.Tensor, *, decoder: str, beta: float,
               feedback: tuple[torch.Tensor, ...]) -> RuleLoss:
    trace = model.trace(x, cuts=LOCAL_CUTS)
    task = _task(trace, y, decoder=decoder, beta=beta)
    if not trace.output.requires_grad:  # under no_grad there is no error to send back
        signals: tuple[torch.Tensor, ...] = tuple(torch.zeros(()) for _ in feedback)
    else:
        # the output's error at every step: dE/dz_out, or dE/dm_out for a membrane decoder
        read = trace.membrane if decoder in MEMBRANE_DECODERS else trace.output
        (error,) = torch.autograd.grad(task, read, retain_graph=True)  # (T, B, C)
        # sum_t,j z_j^t L_j^t with L detached: its gradient with respect to z^t is L^t
        signals = tuple((z * (error @ b)).sum() for z, b in zip(trace.spikes, feedback))
    return RuleLoss(total=task + sum(signals), task=task, trace=trace,
                    layer_terms=(*signals, task))


Rule = Callable[..., RuleLoss]

RULES: dict[str, Rule] = {
    "bptt": bptt_loss,
    "decolle": decolle_loss,
    "eprop": eprop_loss,
}
