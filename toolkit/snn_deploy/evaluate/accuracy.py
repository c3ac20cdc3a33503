"""Evaluate a model file on a backend over a data split: accuracy and exact activity counts."""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Iterable, Iterator

import numpy as np
import torch

from snn_deploy.bounds import MAX_STEPS
from snn_deploy.coding import encode, encoded_width
from snn_deploy.data import Split
from snn_deploy.errors import UserError
from snn_deploy.evaluate.counts import ActivityCounts, activity
from snn_deploy.run.emulator import Emulator
from snn_deploy.run.float_backend import run_float
from snn_deploy.run.membrane import MembraneEmulator
from snn_deploy.run.recording import OnChipMeasurement, Recording
from snn_deploy.targets import Target
from snn_deploy.train.ann import neuron_activations
from snn_deploy.train.decoding import DECODERS, MEMBRANE_DECODERS, DecoderSpec, decoder_predict

BACKENDS = ("float", "emulator", "lava-sim", "loihi2")
# run the Deployment, not the float graph
DEPLOYED_BACKENDS = frozenset({"emulator", "lava-sim", "loihi2"})
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


def run_checkpoint(target: Target, x: torch.Tensor) -> Recording:
    """Run the Norse model itself (the training-time model), layer by layer to count spikes.

    Layer names are the Norse module indices of the LIF cells, which are the node ids that
    ``norse.to_nir`` gives them, so reports of a checkpoint and of its NIR graph line up.
    """
    if target.checkpoint is None:
        raise UserError(f"{target.path} is not a checkpoint")
    modules = list(target.checkpoint.net)
    counts, names, h = [], [], x
    with torch.no_grad():
        for i in range(0, len(modules), 2):
            linear, cell = modules[i], modules[i + 1]
            state, spikes = None, []
            for h_t in h:
                z, state = cell(linear(h_t), state)
                spikes.append(z)
            h = torch.stack(spikes)
            counts.append(h.sum(0).to(torch.int64).numpy())
            names.append(str(i + 1))
    return Recording(output=h.to(torch.uint8).numpy(), layer_names=tuple(names),
                     counts=tuple(counts))


def run_checkpoint_membrane(target: Target, x: torch.Tensor) -> Recording:
    """``run_checkpoint`` with the output layer's pre-reset membrane (``train.model.Trace``, whose
    step is Norse's, tests/test_train_rules.py)."""
    if target.checkpoint is None:
        raise UserError(f"{target.path} is not a checkpoint")
    with torch.no_grad():
        trace = target.checkpoint.trace(x)
    assert trace.membrane is not None
    return Recording(output=trace.output.to(torch.uint8).numpy(),
                     layer_names=tuple(str(2 * k + 1) for k in range(len(trace.spikes))),
                     counts=tuple(z.sum(0).to(torch.int64).numpy() for z in trace.spikes),
                     membrane=trace.membrane.to(torch.float64).numpy())


def _synapses(target: Target, backend: str) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
    """The weights the backend runs: per layer, feed-forward and recurrent (or None)."""
    if backend in DEPLOYED_BACKENDS:
        layers = target.require_deployment().layers
        return ([layer.weights for layer in layers],
                [None if layer.recurrent is None else layer.recurrent.weights for layer in layers])
    if target.checkpoint is not None:
        return [m.weight.detach().numpy() for m in list(target.checkpoint.net)[::2]], []
    layers_f = target.require_network().layers
    return [layer.weight for layer in layers_f], [layer.recurrent for layer in layers_f]


def run_backend(target: Target, backend: str, batches: Iterable[torch.Tensor], *,
                device: str = "cpu", total: int | None = None,
                on_progress: Progress | None = None, membrane: bool = False) -> Recording:
    """Run consecutive (T, B, n) input batches on a backend, as one stream of samples.

    float and emulator take the batches one by one (bounded memory; every sample starts from rest,
    as in the single Lava run, where each layer is reset at its first step of each sample); lava-sim
    and loihi2 run all samples in one Lava run (loihi2 on the chip, its Recording carrying the
    profiler's measured time and energy; without Intel's lava-loihi it raises BackendUnavailable
    before reading any input). ``membrane``: also record the output layer's pre-reset membrane
    (``Recording.membrane``, the max-membrane decoder's input; not on loihi2).
    """
    check_backend(target, backend)
    if target.ann is not None:
        raise UserError(f"{target.path} is an ANN: it reads values, not spike trains; evaluate it"
                        " on the float backend, or convert it to a NIR graph with"
                        " `snn-deploy convert`")
    if membrane and backend == "loihi2":
        raise UserError("the max-membrane decoder reads the output layer's v every step; the loihi2"
                        " backend records spikes only (use emulator or lava-sim)")
    if backend == "lava-sim":
        from snn_deploy.run.lava_sim import run_lava_sim, run_lava_sim_membrane

        xs = torch.cat(list(batches), dim=1)
        run_lava = run_lava_sim_membrane if membrane else run_lava_sim
        return run_lava(target.require_deployment(), xs.numpy(), on_progress=on_progress)
    if backend == "loihi2":
        from snn_deploy.run.loihi2 import require_lava_loihi, run_loihi2

        require_lava_loihi()
        xs = torch.cat(list(batches), dim=1)
        return run_loihi2(target.require_deployment(), xs.numpy(), on_progress=on_progress)
    emulator: Emulator | MembraneEmulator | None = None
    if backend == "emulator":
        dep = target.require_deployment()
        emulator = MembraneEmulator(dep, device=device) if membrane else Emulator(dep, device=device)
    parts, done = [], 0
    for xb in batches:
        if emulator is not None:
            parts.append(emulator.run(xb))
        elif target.checkpoint is not None:
            parts.append(run_checkpoint_membrane(target, xb) if membrane
                         else run_checkpoint(target, xb))
        else:
            parts.append(run_float(target.require_network(), xb, membrane=membrane).recording)
        done += xb.shape[1]
        if on_progress is not None:
            on_progress(done, total if total is not None else done)
    return _concat(parts)


def _concat(parts: list[Recording]) -> Recording:
    membranes = [p.membrane for p in parts]
    return Recording(
        output=np.concatenate([p.output for p in parts], axis=1),
        layer_names=parts[0].layer_names,
        counts=tuple(np.concatenate(c) for c in zip(*(p.counts for p in parts))),
        membrane=None if any(m is None for m in membranes)
        else np.concatenate(membranes, axis=1),  # type: ignore[arg-type]
    )


def recording_logits(recording: Recording, decoder: DecoderSpec) -> torch.Tensor:
    """(B, C) float32 logits of a Recording under a decoder (its membrane for a membrane
    decoder): what an attack's oracle scores."""
    membrane = None if recording.membrane is None else torch.from_numpy(recording.membrane)
    return decoder.logits(torch.from_numpy(recording.output.astype(np.float32)),
                          membrane).to(torch.float32)


def recording_predictions(recording: Recording, decoder: str) -> np.ndarray:
    """(B,) int64 classes of a Recording under the named decoder (its membrane for a membrane
    decoder)."""
    membrane = None if recording.membrane is None else torch.from_numpy(recording.membrane)
    return decoder_predict(torch.from_numpy(recording.output.astype(np.float32)), decoder=decoder,
                           membrane=membrane).numpy()


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
    encoding = str(target.coding.get("encoding", "rate"))
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


def evaluate_target(target: Target, split: Split, *, backend: str, part: str = "test",
                    limit: int | None = None, steps: int | None = None, seed: int = 0,
                    device: str = "cpu", on_progress: Progress | None = None) -> Evaluation:
    """Encode the split with the model's coding, run it on the backend, score it.

    float and emulator stream batches of ``BATCH`` samples (bounded memory); lava-sim runs all
    samples in one Lava run. Encoding is seeded per fixed chunk, so every backend sees identical
    input spikes.
    """
    check_backend(target, backend)
    if target.ann is not None:
        return evaluate_ann(target, split, part=part, limit=limit, steps=steps, seed=seed,
                            device=device, on_progress=on_progress)
    coding = target.coding
    encoding = str(coding.get("encoding", "rate"))
    steps = int(steps if steps is not None else coding.get("steps", 32))
    if not 1 <= steps <= MAX_STEPS:
        raise UserError(f"--steps must be in 1..{MAX_STEPS}, got {steps}")
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

    decoder = str(coding.get("decoder", "spike_count"))
    if decoder not in DECODERS:
        raise UserError(f"{target.path}: unknown decoder {decoder!r} in its coding (known:"
                        f" {', '.join(DECODERS)})")
    started = time.perf_counter()
    recording = run_backend(target, backend, counted(), device=device, total=len(x),
                            on_progress=on_progress, membrane=decoder in MEMBRANE_DECODERS)
    wall = time.perf_counter() - started
    predictions = recording_predictions(recording, decoder)
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
