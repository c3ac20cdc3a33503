"""Stage 5: the neuro cores and chips a Deployment needs under a profile's ``[limits]``.

Per layer (a Dense, plus its recurrent Dense, feeding one LIF population), from the integer
weights the Deployment runs:

    neurons       n
    synapses      non-zero weights, feed-forward plus recurrent
    fan-in        the most non-zero inputs of one neuron
    inputs        distinct presynaptic neurons with a non-zero weight into the layer
    weight bits   sum over synapses of their weight width (``num_weight_bits``)

Cores: a layer's neurons are packed in order into cores that hold that layer only, a new core
starting when the next neuron would take the current one past ``neurons_per_core``,
``synaptic_memory_bits_per_core`` or ``fan_in_per_core`` (distinct presynaptic neurons of the
core's neurons). A neuron that alone exceeds a per-core limit cannot be mapped at all. Weight bits
leave out the index and header bits a chip stores with each weight, so memory use is a lower bound
and core counts may be too.

Chips: for each per-chip limit (``cores_per_chip``, ``neurons_per_chip``, ``synapses_per_chip``)
the deployment needs ceil(used / limit) chips; it needs the most of these, and the limit with the
highest use is the binding one. A limit the profile does not give is reported as unchecked.
"""

from __future__ import annotations

import collections
import dataclasses

import numpy as np

from snn_deploy.profiles import LIMIT_KEYS, Limits, Profile
from snn_deploy.quantize.deployment import Deployment, QuantLayer
from snn_deploy.run.layer_constants import require_dense

CHIP_LIMITS = ("cores_per_chip", "neurons_per_chip", "synapses_per_chip")
CORE_LIMITS = ("neurons_per_core", "synaptic_memory_bits_per_core", "fan_in_per_core")


@dataclasses.dataclass(frozen=True)
class LayerResources:
    """What one layer needs.

    Attributes:
        name: the layer's neuron node id.
        neurons: neurons in the layer.
        synapses: non-zero weights into it, feed-forward and recurrent.
        fan_in: the most non-zero inputs of one of its neurons.
        inputs: distinct presynaptic neurons with a non-zero weight into the layer.
        weight_bits: synapses times their weight width (bits), a lower bound on memory.
        cores: cores it needs; None when the profile gives no per-core limit, or it cannot be
            mapped.
        core_limit: the per-core limit that closed most of its cores; None for one core.
        blocked_by: the per-core limit one of its neurons alone exceeds, else None.
        problem: why it cannot be mapped, with the numbers, else None.
    """

    name: str
    neurons: int
    synapses: int
    fan_in: int
    inputs: int
    weight_bits: int
    cores: int | None
    core_limit: str | None
    blocked_by: str | None
    problem: str | None


@dataclasses.dataclass(frozen=True)
class LimitUse:
    """One per-chip limit: what the deployment uses of it and what one chip offers."""

    limit: str
    used: int | None  # None when it cannot be computed (cores, without per-core limits)
    available: int | None  # None when the profile does not give the limit

    @property
    def share(self) -> float | None:
        """Used / available on one chip (above 1: more than one chip)."""
        if self.used is None or self.available is None:
            return None
        return self.used / self.available

    @property
    def chips(self) -> int | None:
        if self.used is None or self.available is None:
            return None
        return max(1, -(-self.used // self.available))


@dataclasses.dataclass(frozen=True)
class ResourceReport:
    """Cores and chips a Deployment needs under one profile's limits.

    Attributes:
        profile: the profile whose limits were applied.
        layers: per layer, input side first.
        neurons, synapses, weight_bits, cores: totals (cores None when unknown).
        chips: chips needed; None when no per-chip limit could be checked, or a layer cannot be
            mapped.
        fits: True when it fits one chip under every limit the profile gives (see
            ``unchecked``), False when it does not, None when nothing could be checked.
        binding: the [limits] key that decides: the per-core limit a layer cannot meet, else the
            per-chip limit with the highest use.
        detail: one sentence saying why, with the numbers.
        chip_limits: use of each per-chip limit.
        unchecked: [limits] keys the profile does not give.
    """

    profile: str
    layers: tuple[LayerResources, ...]
    neurons: int
    synapses: int
    weight_bits: int
    cores: int | None
    chips: int | None
    fits: bool | None
    binding: str | None
    detail: str
    chip_limits: tuple[LimitUse, ...]
    unchecked: tuple[str, ...]

    def as_dict(self) -> dict:
        """JSON-ready form: every number ``format_resources`` prints."""
        return {
            "profile": self.profile, "fits": self.fits, "chips": self.chips, "cores": self.cores,
            "binding": self.binding, "detail": self.detail, "neurons": self.neurons,
            "synapses": self.synapses, "weight_bits": self.weight_bits,
            "chip_limits": [{"limit": u.limit, "used": u.used, "available": u.available,
                             "share": u.share} for u in self.chip_limits],
            "unchecked": list(self.unchecked),
            "layers": [dataclasses.asdict(layer) for layer in self.layers],
        }


def _input_mask(layer: QuantLayer) -> tuple[np.ndarray, np.ndarray]:
    """(n, inputs) bool: which presynaptic neurons reach each neuron (feed-forward, then the
    layer's own neurons through the recurrent Dense); (n,) int64 weight bits per neuron."""
    ff = layer.weights != 0
    bits = ff.sum(axis=1).astype(np.int64) * layer.num_weight_bits
    if layer.recurrent is None:
        return ff, bits
    rec = layer.recurrent.weights != 0
    bits += rec.sum(axis=1).astype(np.int64) * layer.recurrent.num_weight_bits
    return np.concatenate([ff, rec], axis=1), bits


def _pack(mask: np.ndarray, bits: np.ndarray, limits: Limits
          ) -> tuple[int, collections.Counter[str], tuple[int, str, int, int] | None]:
    """Pack neurons in order into cores; returns (cores, how often each limit closed a core,
    (neuron, limit, needed, available) for a neuron that fits no core, else None)."""
    per_core = {key: getattr(limits, key) for key in CORE_LIMITS}
    closed: collections.Counter[str] = collections.Counter()
    fan_in = mask.sum(axis=1)
    for i in range(len(bits)):
        for key, need in (("synaptic_memory_bits_per_core", int(bits[i])),
                          ("fan_in_per_core", int(fan_in[i]))):
            if per_core[key] is not None and need > per_core[key]:
                return 0, closed, (i, key, need, per_core[key])
    cores, count, used_bits = 0, 0, 0
    inputs = np.zeros(mask.shape[1], dtype=bool)
    for i in range(len(bits)):
        if count:
            merged = inputs | mask[i]
            over = [key for key, value, limit in (
                ("neurons_per_core", count + 1, per_core["neurons_per_core"]),
                ("synaptic_memory_bits_per_core", used_bits + int(bits[i]),
                 per_core["synaptic_memory_bits_per_core"]),
                ("fan_in_per_core", int(merged.sum()), per_core["fan_in_per_core"]),
            ) if limit is not None and value > limit]
            if not over:
                count, used_bits, inputs = count + 1, used_bits + int(bits[i]), merged
                continue
            closed[over[0]] += 1
        cores, count, used_bits, inputs = cores + 1, 1, int(bits[i]), mask[i].copy()
    return cores, closed, None


def layer_resources(layer: QuantLayer, limits: Limits, *, profile: str) -> LayerResources:
    """Neurons, synapses, fan-in and the cores one layer needs (see the module docstring)."""
    mask, bits = _input_mask(layer)
    synapses = int(np.count_nonzero(layer.weights))
    if layer.recurrent is not None:
        synapses += int(np.count_nonzero(layer.recurrent.weights))
    known = any(getattr(limits, key) is not None for key in CORE_LIMITS)
    cores, closed, stuck = _pack(mask, bits, limits)
    problem, blocked_by = None, None
    if stuck is not None:
        neuron, blocked_by, need, available = stuck
        key = blocked_by
        what = "bits of weights" if key == "synaptic_memory_bits_per_core" else "inputs"
        problem = (f"layer {layer.neuron}: neuron {neuron} needs {need} {what}, more than one"
                   f" core holds ({key} = {available} in profile {profile})")
    core_limit = None
    if closed:
        core_limit = max(CORE_LIMITS, key=lambda k: (closed[k], -CORE_LIMITS.index(k)))
    return LayerResources(
        name=layer.neuron, neurons=layer.size, synapses=synapses,
        fan_in=int(mask.sum(axis=1).max(initial=0)), inputs=int(mask.any(axis=0).sum()),
        weight_bits=int(bits.sum()), cores=cores if known and stuck is None else None,
        core_limit=core_limit, blocked_by=blocked_by, problem=problem,
    )


def resources(dep: Deployment, profile: Profile) -> ResourceReport:
    """The cores and chips ``dep`` needs under ``profile``'s ``[limits]``, and whether it fits."""
    require_dense(dep, "resources")
    limits = profile.limits
    layers = tuple(layer_resources(layer, limits, profile=profile.name) for layer in dep.layers)
    neurons = sum(r.neurons for r in layers)
    synapses = sum(r.synapses for r in layers)
    cores = None if any(r.cores is None for r in layers) else sum(r.cores or 0 for r in layers)
    uses = (LimitUse("cores_per_chip", cores, limits.cores_per_chip),
            LimitUse("neurons_per_chip", neurons, limits.neurons_per_chip),
            LimitUse("synapses_per_chip", synapses, limits.synapses_per_chip))
    unchecked = tuple(key for key in LIMIT_KEYS if getattr(limits, key) is None)
    stuck = next((r for r in layers if r.blocked_by is not None), None)
    checked = [u for u in uses if u.share is not None]
    chips: int | None = None
    if stuck is not None:
        fits, binding, detail = False, stuck.blocked_by, f"does not fit: {stuck.problem}"
    elif not checked:
        fits, binding = None, None
        detail = f"cannot tell: profile {profile.name} gives no per-chip limit that applies"
    else:
        top = max(checked, key=lambda u: u.share or 0.0)
        chips = max(u.chips or 1 for u in checked)
        fits, binding = chips == 1, top.limit
        detail = (f"{'fits on one chip' if fits else f'needs {chips} chips'}: {top.limit} is the"
                  f" binding limit ({top.used} of {top.available} per chip)")
    return ResourceReport(
        profile=profile.name, layers=layers, neurons=neurons, synapses=synapses,
        weight_bits=sum(r.weight_bits for r in layers), cores=cores, chips=chips, fits=fits,
        binding=binding, detail=detail, chip_limits=uses, unchecked=unchecked,
    )


def format_resources(report: ResourceReport) -> str:
    """The per-layer table, the per-chip limits, the verdict and the unchecked limits."""
    from snn_deploy.evaluate.report import format_table

    rows: list[list[object]] = [
        [r.name, r.neurons, r.synapses, r.fan_in, r.inputs, r.weight_bits,
         r.cores if r.cores is not None else ("no fit" if r.blocked_by else None),
         r.blocked_by or r.core_limit]
        for r in report.layers
    ]
    rows.append(["total", report.neurons, report.synapses, None, None, report.weight_bits,
                 report.cores, None])
    lines = [f"profile {report.profile}",
             format_table(["layer", "neurons", "synapses", "fan-in", "inputs", "weight bits",
                           "cores", "core limit"], rows)]
    for use in report.chip_limits:
        share = "" if use.share is None else f" ({100 * use.share:.2f} % of one chip)"
        used = "unknown" if use.used is None else str(use.used)
        available = "unchecked" if use.available is None else str(use.available)
        lines.append(f"{use.limit}: {used} of {available}{share}")
    lines.append(report.detail)
    if report.unchecked:
        lines.append(f"unchecked (not in profile {report.profile}'s [limits]):"
                     f" {', '.join(report.unchecked)}")
    return "\n".join(lines)
