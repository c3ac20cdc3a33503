"""Evaluate a model file on a backend over a data split: accuracy and exact activity counts."""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Iterable, Iterator, Union

import numpy as np
import torch

from snn_deploy.bounds import MAX_STEPS
from snn_deploy.coding import MEMBRANE_DECODERS, DecoderSpec, encode, encoded_width
from snn_deploy.convert.conv import lowered
from snn_deploy.data import Split
from snn_deploy.errors import UserError
from snn_deploy.evaluate.counts import ActivityCounts, activity, fanout
from snn_deploy.run.backends import BACKENDS, DEPLOYED_BACKENDS, Backend, FloatBackend, Record
from snn_deploy.run.recording import OnChipMeasurement, Recording
from snn_deploy.targets import Target
from snn_deploy.train.ann import neuron_activations

BATCH = 512  # samples per streamed batch and per encoder chunk
MAX_INPUT_GB = 4.0  # encoded input is held in memory whole (float32)

Progress = Callable[[int, int], None]


@dataclasses.dataclass(frozen=True)
class Evaluation:
    backend: str
    n: int
    steps: int
    encoding: str
    seed: int
    accuracy: float
    predictions: np.ndarray  # (n,) int64
    activity: ActivityCounts
    layer_names: tuple[str, ...]
    layer_sizes: tuple[int, ...]
    wall_time_s: float
    on_chip: OnChipMeasurement | None = None  # what Lava's profiler measured (loihi2 only)


def _synapses(target: Target, backend: str) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
    """The weights the backend runs: per layer, feed-forward and recurrent (or None)."""
    if backend in DEPLOYED_BACKENDS:
        layers = target.require_deployment().layers
        return ([fanout(layer) for layer in layers],
                [None if layer.recurrent is None else layer.recurrent.weights for layer in layers])
    if target.checkpoint is not None:
        return [m.weight.detach().numpy() for m in list(target.checkpoint.net)[::2]], []
    layers_f = target.require_network().layers
    return ([layer.weight if layer.conv is None else lowered(layer.weight, layer.conv)
             for layer in layers_f], [layer.recurrent for layer in layers_f])


def open_backend(target: Target, backend: str, *, device: str = "cpu") -> Backend:
    """The model of ``target`` on the named backend (``run.backends.BACKENDS``): its Deployment on
    a deployed backend, else its Norse model or its NIR graph on float."""
    check_backend(target, backend)
    if target.ann is not None:
        raise UserError(f"{target.path} is an ANN: it reads values, not spike trains; evaluate it"
                        " on the float backend, or convert it to a NIR graph with"
                        " `snn-deploy convert`")
    if backend in DEPLOYED_BACKENDS:
        return BACKENDS[backend](target.require_deployment(), device=device)
    model = target.float_model
    return FloatBackend(model if model is not None else target.require_network(), device=device)


# A backend opened on the target (``open_backend``), or a name of ``run.backends.BACKENDS`` that
# ``backend_of`` opens on it: evaluate and attack take either.
BackendRef = Union[Backend, str]


def backend_of(target: Target, backend: BackendRef, *, device: str = "cpu") -> Backend:
    """``backend`` itself, or the named backend opened on ``target``."""
    return open_backend(target, backend, device=device) if isinstance(backend, str) else backend


def run_backend(target: Target, backend: BackendRef, batches: Iterable[torch.Tensor], *,
                device: str = "cpu", total: int | None = None,
                on_progress: Progress | None = None, membrane: bool = False) -> Recording:
    """Run consecutive (T, B, n) input batches of ``target`` on a backend, as one stream of
    samples (``Backend.run``); ``membrane``: also record the output layer's pre-reset membrane
    (``Recording.membrane``, the max-membrane decoder's input; not on loihi2)."""
    return backend_of(target, backend, device=device).run(
        batches, record=Record(membrane=membrane), total=total, on_progress=on_progress)


def recording_logits(recording: Recording, decoder: DecoderSpec) -> torch.Tensor:
    """(B, C) float32 logits of a Recording under a decoder (its membrane for a membrane
    decoder): what an attack's oracle scores."""
    membrane = None if recording.membrane is None else torch.from_numpy(recording.membrane)
    return decoder.logits(torch.from_numpy(recording.output.astype(np.float32)),
                          membrane).to(torch.float32)


def recording_predictions(recording: Recording, decoder: DecoderSpec) -> np.ndarray:
    """(B,) int64 classes of a Recording under a decoder (its membrane for a membrane decoder)."""
    membrane = None if recording.membrane is None else torch.from_numpy(recording.membrane)
    return decoder.predict(torch.from_numpy(recording.output.astype(np.float32)),
                           membrane).numpy()


def encoded_batches(x: torch.Tensor, *, encoding: str, steps: int, seed: int
                    ) -> Iterator[torch.Tensor]:
    """Encode (N, n) inputs in fixed chunks of ``BATCH`` samples, chunk j seeded by (seed, j).

    The chunking is fixed, so every backend, streaming or not, sees the same input spikes.
    """
    for j, start in enumerate(range(0, len(x), BATCH)):
        yield encode(x[start:start + BATCH], encoding=encoding, steps=steps,
                     seed=seed * 1_000_003 + j)


def check_backend(target: Target, backend: str) -> None:
    """Refuse a backend that cannot run this kind of file, saying what to do instead."""
    if backend not in BACKENDS:
        raise UserError(f"unknown backend {backend!r}: choose from {', '.join(BACKENDS)}")
    if backend in DEPLOYED_BACKENDS:
        target.require_deployment()


def _samples(target: Target, split: Split, *, part: str, limit: int | None
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """The (N, n) inputs and (N,) labels of a split part, the first ``limit`` of them if given."""
    x, y = split.part(part)
    width = target.input_size
    encoding = target.coding.encoding
    if encoded_width(encoding, x.shape[1]) != width:
        how = "" if encoded_width(encoding, 1) == 1 else f" ({encoding} coding stacks" \
            f" {encoded_width(encoding, 1)} channels per value)"
        raise UserError(
            f"{target.path} takes {width} inputs, but {split.name} samples have {x.shape[1]}{how}"
        )
    if limit is not None:
        if limit < 1:
            raise UserError(f"--limit must be >= 1, got {limit}")
        x, y = x[:limit], y[:limit]
    return x, y


def evaluate_ann(target: Target, split: Split, *, part: str = "test", limit: int | None = None,
                 steps: int | None = None, seed: int = 0, device: str = "cpu",
                 on_progress: Progress | None = None) -> Evaluation:
    """Accuracy of an ANN itself: argmax of its logits on the clean values, one pass per sample.

    An ANN sends no spikes, so its activity counts are zero (``steps`` is 1, ``encoding`` "none");
    its layers are those that become spiking neurons on conversion, named as in the converted
    NIR graph, so the reports of an ANN and of its conversion line up.
    """
    if target.ann is None:
        raise UserError(f"{target.path} is not an ANN")
    if steps is not None:
        raise UserError("an ANN has no time steps: --steps applies to spiking models")
    x, y = _samples(target, split, part=part, limit=limit)
    model = target.ann.to(device).eval()
    started = time.perf_counter()
    parts: list[np.ndarray] = []
    with torch.no_grad():
        for start in range(0, len(x), BATCH):
            parts.append(model(x[start:start + BATCH].to(device)).argmax(dim=1).cpu().numpy())
            if on_progress is not None:
                on_progress(min(start + BATCH, len(x)), len(x))
        layers = neuron_activations(model.net, torch.zeros(1, *target.ann.config.input_shape,
                                                           device=device))
    wall = time.perf_counter() - started
    predictions = np.concatenate(parts).astype(np.int64)
    sizes = tuple(int(a[0].numel()) for _, a in layers)
    zeros = (0.0,) * len(layers)
    return Evaluation(
        backend="float", n=int(len(y)), steps=1, encoding="none", seed=seed,
        accuracy=float((predictions == y.numpy()).mean()), predictions=predictions,
        activity=ActivityCounts(spikes_per_sample=0.0, synops_per_sample=0.0,
                                layer_spikes_per_sample=zeros, layer_synops_per_sample=zeros,
                                layer_updates_per_sample=zeros),
        layer_names=tuple(name for name, _ in layers), layer_sizes=sizes, wall_time_s=wall,
    )


def evaluate_target(target: Target, split: Split, *, backend: BackendRef, part: str = "test",
                    limit: int | None = None, steps: int | None = None, seed: int = 0,
                    device: str = "cpu", on_progress: Progress | None = None) -> Evaluation:
    """Encode the split with the model's coding, run it on the backend, score it.

    float and emulator stream batches of ``BATCH`` samples (bounded memory); lava-sim runs all
    samples in one Lava run. Encoding is seeded per fixed chunk, so every backend sees identical
    input spikes. ``backend``: one opened on the target, or its name.
    """
    if target.ann is not None:
        check_backend(target, backend if isinstance(backend, str) else backend.name)
        return evaluate_ann(target, split, part=part, limit=limit, steps=steps, seed=seed,
                            device=device, on_progress=on_progress)
    coding = target.coding
    encoding = coding.encoding
    steps = steps if steps is not None else coding.steps
    if not 1 <= steps <= MAX_STEPS:
        raise UserError(f"--steps must be in 1..{MAX_STEPS}, got {steps}")
    runner = backend_of(target, backend, device=device)
    backend = runner.name
    x, y = _samples(target, split, part=part, limit=limit)
    held = x.shape[0] if backend == "lava-sim" else min(x.shape[0], BATCH)  # samples in memory
    gigabytes = steps * held * x.shape[1] * 4 / 1e9
    if gigabytes > MAX_INPUT_GB:
        raise UserError(
            f"{backend} holds {held} samples x {steps} steps of encoded input at once: that needs"
            f" {gigabytes:.1f} GB (limit {MAX_INPUT_GB} GB); use --limit or fewer --steps"
        )
    events_parts: list[np.ndarray] = []  # non-zero input events per sample and channel

    def counted() -> Iterator[torch.Tensor]:
        for xb in encoded_batches(x, encoding=encoding, steps=steps, seed=seed):
            events_parts.append((xb != 0).sum(dim=0).to(torch.int64).numpy())
            yield xb

    decoder = coding.decoder.name  # a known one: Coding.read checked it
    started = time.perf_counter()
    recording = runner.run(counted(), record=Record(membrane=decoder in MEMBRANE_DECODERS),
                           total=len(x), on_progress=on_progress)
    wall = time.perf_counter() - started
    predictions = recording_predictions(recording, coding.decoder)
    events = np.concatenate(events_parts)
    weights, recurrent = _synapses(target, backend)
    return Evaluation(
        backend=backend, n=int(len(y)), steps=steps, encoding=encoding, seed=seed,
        accuracy=float((predictions == y.numpy()).mean()),
        predictions=predictions,
        activity=activity(recording, events, weights, recurrent, steps=steps),
        layer_names=recording.layer_names,
        layer_sizes=tuple(int(c.shape[1]) for c in recording.counts),
        wall_time_s=wall, on_chip=recording.on_chip,
    )
