"""Stage 2: ReLU ANN -> NIR graph of IF neurons, by threshold balancing.

Every ReLU (and the output layer) becomes a layer of NIR ``IF`` neurons (r = 1, reset to 0):

    v_t = v_{t-1} + W' s_{t-1}^{(l-1)} + b;    s_t = [v_t > theta_l];   v_t <- 0 where s_t

Over T steps of constant (direct-coded) input, the spike rate of neuron i approximates
``relu(a_i) / theta_l`` for the ANN activation a_i, as long as a_i <= theta_l (one spike per step
at most). Thresholds are set from the ANN's own activations on calibration data (Rueckauer et al.,
"Conversion of Continuous-Valued Deep Networks to Efficient Event-Driven Networks for Image
Classification", Front. Neurosci. 11:682, 2017, section 2.2):

    lambda_l = max of layer l's ReLU activations ("max"), or their p-th percentile over the
               positive ones ("percentile", p = 99.9 by default, robust to outliers)
    theta_l  = threshold_scale * lambda_l

``threshold_scale`` < 1 is the low-latency setting of Ozdenizci & Legenstein ("Adversarially Robust
Spiking Neural Networks Through Conversion", TMLR 2024): 0.3 for short T. A spike of layer l stands
for an activation theta_l, so the weights reading it are scaled by theta_l:

    W'_l = theta_{l-1} * W_l   (theta_0 = 1: the input's values enter as they are)
    b'_l = b_l                 (an Affine bias is a current added every step: the per-step ANN bias)

This "threshold" form is the same network as Rueckauer's weight normalisation (W_l theta_{l-1} /
theta_l, b_l / theta_l, threshold 1) divided through by theta_l; it keeps the balanced thresholds
visible in the graph, where later threshold tuning finds them. Reset is to zero (NIR's ``IF`` and
Loihi reset to v_reset), not by subtraction, so the charge above threshold is lost: rates come out
slightly low, which a ``threshold_scale`` below 1 also offsets.

Layers map as Linear -> ``Affine`` (bias kept, zeros when absent), Conv2d -> ``Conv2d``, Flatten ->
``Flatten`` (NIR shapes have no batch axis: torch ``start_dim`` 1 is NIR 0), AvgPool2d(k) ->
``SumPool2d(k)`` with its 1/k^2 folded into the next Linear/Conv2d of the same layer (or, when none
follows before the ReLU, into the previous one, weights and bias), since a SumPool of spikes is what
the hardware can add up. Dropout and Identity are skipped (identities in evaluation). Anything else,
MaxPool2d and BatchNorm included, is refused, naming every offending layer at once.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import nir
import numpy as np
import torch

from snn_deploy.bounds import MAX_STEPS
from snn_deploy.coding import ENCODERS
from snn_deploy.errors import UnsupportedNode, UserError
from snn_deploy.train.ann import IDENTITY_LAYERS, neuron_activations

DEFAULT_DT = 1e-3  # s; IF neurons have no time constant, dt only labels the step (as Norse's 1e-3)
DEFAULT_PERCENTILE = 99.9  # Rueckauer et al. 2017, section 3.1 (99.9th to 99.999th percentile)
WRITER = "snn-deploy ann_to_snn (threshold balancing, Rueckauer et al. 2017)"

WEIGHT_LAYERS = (torch.nn.Linear, torch.nn.Conv2d)
LINEAR_LAYERS = (*WEIGHT_LAYERS, torch.nn.AvgPool2d, torch.nn.Flatten)
SKIPPED_LAYERS = IDENTITY_LAYERS


def max_norm(values: np.ndarray, percentile: float) -> float:
    """Largest activation (``percentile`` unused)."""
    del percentile
    return float(values.max(initial=0.0))


def percentile_norm(values: np.ndarray, percentile: float) -> float:
    """The ``percentile``-th percentile of the positive activations."""
    positive = values[values > 0]
    return float(np.percentile(positive, percentile)) if positive.size else 0.0


Norm = Callable[[np.ndarray, float], float]
NORMS: dict[str, Norm] = {"max": max_norm, "percentile": percentile_norm}


@dataclasses.dataclass(frozen=True)
class BalancedLayer:
    """One layer of IF neurons and the calibration statistics that set its threshold.

    Attributes:
        name: id of the IF node (index of its ReLU in the Sequential; ``len(net)`` for the output).
        synapses: ids of the nodes between the previous neurons and this layer.
        neurons: number of IF neurons.
        activation_scale: lambda_l, the max or percentile of the ReLU activations.
        threshold: theta_l = threshold_scale * lambda_l.
        active_share: share of calibration activations > 0.
        saturated_share: share of the positive activations above theta_l: the IF neuron, capped at
            one spike per step, cannot represent them.
    """

    name: str
    synapses: tuple[str, ...]
    neurons: int
    activation_scale: float
    threshold: float
    active_share: float
    saturated_share: float


@dataclasses.dataclass(frozen=True)
class Conversion:
    graph: nir.NIRGraph
    layers: tuple[BalancedLayer, ...]
    norm: str
    percentile: float | None  # None for norm "max"
    threshold_scale: float
    calibration_samples: int


@dataclasses.dataclass(frozen=True)
class _Segment:
    """Modules from one layer of neurons to the next: linear ops, then a ReLU (or the end)."""

    ops: tuple[int, ...]  # indices of Linear/Conv2d/AvgPool2d/Flatten modules
    name: str


def _layer_problem(i: int, module: torch.nn.Module) -> str | None:
    kind = type(module).__name__
    if isinstance(module, (*LINEAR_LAYERS, torch.nn.ReLU, *SKIPPED_LAYERS)):
        if isinstance(module, torch.nn.Conv2d) and module.padding_mode != "zeros":
            return f"{i} (Conv2d with padding_mode {module.padding_mode!r}; only 'zeros')"
        if isinstance(module, torch.nn.AvgPool2d):
            if np.any(np.asarray(module.padding) != 0) or module.ceil_mode \
                    or module.divisor_override is not None:
                return (f"{i} (AvgPool2d with padding {module.padding}, ceil_mode"
                        f" {module.ceil_mode}, divisor_override {module.divisor_override};"
                        " only padding 0, ceil_mode False, no divisor_override)")
        return None
    return f"{i} ({kind})"


def check_convertible(net: torch.nn.Sequential) -> list[_Segment]:
    """The layers of neurons the net converts to.

    Raises:
        UnsupportedNode: naming every unsupported layer (index and type) at once, or every ReLU
            that no Linear/Conv2d feeds.
    """
    problems = [p for i, m in enumerate(net) if (p := _layer_problem(i, m)) is not None]
    if problems:
        raise UnsupportedNode(
            "cannot convert layer(s) " + ", ".join(problems) + ": supported are Linear, Conv2d,"
            " AvgPool2d, Flatten and ReLU (Dropout and Identity are skipped)"
        )
    segments, ops, empty = [], [], []
    for i, module in enumerate(net):
        if isinstance(module, torch.nn.ReLU):
            if not any(isinstance(net[j], WEIGHT_LAYERS) for j in ops):
                empty.append(f"{i} (ReLU)")
            segments.append(_Segment(ops=tuple(ops), name=str(i)))
            ops = []
        elif isinstance(module, LINEAR_LAYERS):
            ops.append(i)
    if ops:
        if not any(isinstance(net[j], WEIGHT_LAYERS) for j in ops):
            empty.append(f"{len(net)} (output after layer {ops[-1]})")
        segments.append(_Segment(ops=tuple(ops), name=str(len(net))))
    if empty:
        raise UnsupportedNode("no Linear or Conv2d feeds the neurons of layer(s) "
                              + ", ".join(empty) + ": every ReLU (and the output) needs one")
    if not segments:
        raise UnsupportedNode("the ANN has no Linear or Conv2d layer")
    return segments


def _input_shapes(net: torch.nn.Sequential, input_shape: tuple[int, ...]
                  ) -> list[tuple[int, ...]]:
    """Per module, the shape (no batch axis) it receives; one more entry for the net's output."""
    shapes, h = [tuple(input_shape)], torch.zeros(1, *input_shape)
    with torch.no_grad():
        for module in net:
            h = module(h)
            shapes.append(tuple(h.shape[1:]))
    return shapes


def _factors(net: torch.nn.Sequential, seg: _Segment, theta_in: float
             ) -> dict[int, tuple[float, float]]:
    """Per Linear/Conv2d of a segment, the (weight, bias) multipliers: theta_in on the first one,
    each AvgPool's 1/k^2 on the next one (weights) or else the previous one (weights and bias)."""
    weights = [i for i in seg.ops if isinstance(net[i], WEIGHT_LAYERS)]
    factors = {i: [1.0, 1.0] for i in weights}
    factors[weights[0]][0] *= theta_in
    for i in seg.ops:
        module = net[i]
        if isinstance(module, torch.nn.AvgPool2d):
            inv_area = 1.0 / math.prod(_pair(module.kernel_size))
            later = [j for j in weights if j > i]
            if later:
                factors[later[0]][0] *= inv_area
            else:
                last = [j for j in weights if j < i][-1]
                factors[last][0] *= inv_area
                factors[last][1] *= inv_area
    return {i: (w, b) for i, (w, b) in factors.items()}


def _pair(value: int | tuple[int, ...]) -> tuple[int, int]:
    return (int(value[0]), int(value[1])) if isinstance(value, tuple) else (int(value), int(value))


def _scaled(t: torch.Tensor, scale: float) -> np.ndarray:
    """float32 copy of t * scale, multiplied in float64."""
    return (t.detach().cpu().to(torch.float64).numpy() * scale).astype(np.float32)


def _bias(module: torch.nn.Linear | torch.nn.Conv2d, n: int, scale: float) -> np.ndarray:
    return np.zeros(n, dtype=np.float32) if module.bias is None else _scaled(module.bias, scale)


def _node(module: torch.nn.Module, shape_in: tuple[int, ...], factor: tuple[float, float]
          ) -> nir.NIRNode:
    w_mult, b_mult = factor
    if isinstance(module, torch.nn.Linear):
        return nir.Affine(weight=_scaled(module.weight, w_mult),
                          bias=_bias(module, module.out_features, b_mult))
    if isinstance(module, torch.nn.Conv2d):
        padding = module.padding if isinstance(module.padding, str) else tuple(module.padding)
        return nir.Conv2d(input_shape=tuple(shape_in[1:]), weight=_scaled(module.weight, w_mult),
                          stride=tuple(module.stride), padding=padding,
                          dilation=tuple(module.dilation), groups=module.groups,
                          bias=_bias(module, module.out_channels, b_mult))
    if isinstance(module, torch.nn.AvgPool2d):
        kernel = _pair(module.kernel_size)
        stride = _pair(module.stride if module.stride is not None else module.kernel_size)
        return nir.SumPool2d(kernel_size=np.array(kernel), stride=np.array(stride),
                             padding=np.zeros(2, dtype=np.int64))
    if isinstance(module, torch.nn.Flatten):
        # NIR shapes exclude the batch axis, torch dims include it
        start = module.start_dim - 1 if module.start_dim > 0 else module.start_dim
        end = module.end_dim - 1 if module.end_dim > 0 else module.end_dim
        return nir.Flatten(input_type={"input": np.array(shape_in)}, start_dim=start, end_dim=end)
    raise UnsupportedNode(f"no NIR mapping for {type(module).__name__}")  # checked before


def _calibration_values(net: torch.nn.Sequential, x: torch.Tensor, input_shape: tuple[int, ...]
                        ) -> dict[str, np.ndarray]:
    if x.ndim < 1 or len(x) == 0:
        raise UserError("the calibration set is empty: threshold balancing needs ANN activations")
    if x[0].numel() != math.prod(input_shape):
        raise UserError(f"calibration samples have {x[0].numel()} values, the ANN takes"
                        f" {math.prod(input_shape)} ({input_shape})")
    if not torch.all(torch.isfinite(x)):
        raise UserError("the calibration set holds NaN or Inf")
    net.eval()
    with torch.no_grad():
        acts = neuron_activations(net, x.reshape(len(x), *input_shape).to(torch.float32))
    return {name: a.clamp(min=0).cpu().numpy().reshape(-1) for name, a in acts}


def _check_settings(*, norm: str, percentile: float, threshold_scale: float, encoding: str,
                    steps: int) -> None:
    """Refuse an unknown norm or encoding and out-of-range numbers, naming the value."""
    if norm not in NORMS:
        raise UserError(f"unknown norm {norm!r}: choose from {', '.join(NORMS)}")
    if norm == "percentile" and not 0 < percentile <= 100:
        raise UserError(f"the percentile must be in (0, 100], got {percentile}")
    if not (threshold_scale > 0 and math.isfinite(threshold_scale)):
        raise UserError(f"the threshold scale must be a positive number, got {threshold_scale}")
    if encoding not in ENCODERS:
        raise UserError(f"unknown encoding {encoding!r}: choose from {', '.join(ENCODERS)}")
    if not 1 <= steps <= MAX_STEPS:
        raise UserError(f"--steps must be in 1..{MAX_STEPS}, got {steps}")


def _if_node(shape: tuple[int, ...], *, threshold: float, activation_scale: float) -> nir.IF:
    """A layer of IF neurons (r = 1, reset to 0) with one threshold theta_l, as float32."""
    return nir.IF(r=np.ones(shape, dtype=np.float32),
                  v_threshold=np.full(shape, threshold, dtype=np.float32),
                  v_reset=np.zeros(shape, dtype=np.float32),
                  metadata={"activation_scale": activation_scale})


def _balanced_layer(seg: _Segment, acts: np.ndarray, shape: tuple[int, ...], *,
                    activation_scale: float, threshold: float) -> BalancedLayer:
    """The statistics of one layer's calibration activations ``acts`` under its threshold."""
    positive = acts[acts > 0]
    return BalancedLayer(
        name=seg.name, synapses=tuple(str(i) for i in seg.ops), neurons=math.prod(shape),
        activation_scale=activation_scale, threshold=threshold,
        active_share=float(positive.size / max(acts.size, 1)),
        saturated_share=float(np.mean(positive > threshold)) if positive.size else 0.0,
    )


def _metadata(*, norm: str, percentile: float, threshold_scale: float, calibration_samples: int,
              encoding: str, steps: int, dataset: str, dt: float) -> dict:
    """The graph's metadata: time step, coding, data set and how the thresholds were balanced."""
    conversion = {"norm": norm, "threshold_scale": float(threshold_scale),
                  "calibration_samples": int(calibration_samples)}
    if norm == "percentile":
        conversion["percentile"] = float(percentile)
    return {
        "dt": float(dt),
        "snn_deploy": {"encoding": encoding, "steps": int(steps), "dataset": dataset,
                       "decoder": "spike_count", "writer": WRITER},
        "snn_deploy_conversion": conversion,
    }


def ann_to_nir(net: torch.nn.Sequential, *, input_shape: tuple[int, ...],
               calibration: torch.Tensor, steps: int, norm: str = "max",
               percentile: float = DEFAULT_PERCENTILE, threshold_scale: float = 1.0,
               encoding: str = "direct", dataset: str = "digits",
               dt: float = DEFAULT_DT) -> Conversion:
    """Convert a ReLU ANN to a NIR graph of IF neurons with balanced thresholds.

    Args:
        net: the ANN (see the module docstring for the layers it may hold).
        input_shape: shape of one input sample, without the batch axis: (n,) or (C, H, W).
        calibration: (N, n) or (N, *input_shape) input values the activations are measured on.
        steps: time steps T the SNN runs for (recorded in the graph's metadata).
        norm: a key of ``NORMS``; percentile: for "percentile", in (0, 100].
        threshold_scale: multiplies every threshold (Ozdenizci & Legenstein: 0.3 for short T).
        encoding: the input coding the graph expects (a key of ``coding.ENCODERS``); "direct"
            feeds the values themselves every step, as the ANN sees them.
        dataset: recorded in the metadata; dt: the time step recorded, in seconds.
    """
    _check_settings(norm=norm, percentile=percentile, threshold_scale=threshold_scale,
                    encoding=encoding, steps=steps)
    segments = check_convertible(net)
    values = _calibration_values(net, calibration, tuple(input_shape))
    shapes = _input_shapes(net, tuple(input_shape))
    nodes: dict[str, nir.NIRNode] = {"input": nir.Input(input_type=np.array(input_shape))}
    edges: list[tuple[str, str]] = []
    previous, theta_in, layers = "input", 1.0, []
    for seg in segments:
        acts = values[seg.name]
        scale = NORMS[norm](acts, percentile)
        if not scale > 0:
            raise UserError(f"layer {seg.name}: no positive activation on the {len(calibration)}"
                            " calibration samples, so its neurons would never spike")
        theta = threshold_scale * scale
        factors = _factors(net, seg, theta_in)
        for i in seg.ops:
            nodes[str(i)] = _node(net[i], shapes[i], factors.get(i, (1.0, 1.0)))
            edges.append((previous, str(i)))
            previous = str(i)
        out_shape = shapes[int(seg.ops[-1]) + 1]
        nodes[seg.name] = _if_node(out_shape, threshold=theta, activation_scale=scale)
        edges.append((previous, seg.name))
        previous, theta_in = seg.name, theta
        layers.append(_balanced_layer(seg, acts, out_shape, activation_scale=scale, threshold=theta))
    nodes["output"] = nir.Output(output_type=np.array(shapes[-1]))
    edges.append((previous, "output"))
    metadata = _metadata(norm=norm, percentile=percentile, threshold_scale=threshold_scale,
                         calibration_samples=len(calibration), encoding=encoding, steps=steps,
                         dataset=dataset, dt=dt)
    return Conversion(graph=nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata),
                      layers=tuple(layers), norm=norm,
                      percentile=float(percentile) if norm == "percentile" else None,
                      threshold_scale=float(threshold_scale),
                      calibration_samples=int(len(calibration)))
