"""The reference Norse LIF network (feed-forward or with recurrent hidden layers) and its checkpoints.

Each layer is ``torch.nn.Linear`` (no bias) followed by a current-based LIF neuron with Norse's
parameters (``norse.torch.LIFCell``); a recurrent hidden layer adds ``R z_{t-1}`` (R: (n, n), its own
spikes of the step before) to the input current:

    i_t = (1 - dt / tau_syn) * i_{t-1} + W x_t [+ R z_{t-1}]
    v_t = v_{t-1} + dt / tau_mem * (v_leak - v_{t-1} + i_t)
    z_t = [v_t > v_th];  v_t <- v_reset where z_t

The step is ``lif_step`` below, in the operation order of Norse 1.1.0's ``lif_feed_forward_step``
(norse/torch/functional/lif.py) and, with R, of its ``lif_step``, which adds ``R z_{t-1}`` to the
current of the same step (no extra delay): tests/test_train_rules.py checks both against Norse.
The threshold's derivative is Norse's SuperSpike surrogate. The checkpoint is a plain dict of
tensors and primitives, loadable with ``torch.load(path, weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Callable

import norse.torch as norse
import torch
from norse.torch.functional.threshold import threshold

from snn_deploy.coding import DECODERS, Coding
from snn_deploy.errors import InputFileError, UserError
from snn_deploy.fileio import regular_input
from snn_deploy.train.checkpoint_archive import check_archive, first_line

CHECKPOINT_FORMAT = "snn-deploy-checkpoint"
CHECKPOINT_VERSION = 1
LIF_KIND = "lif"  # the payload's "kind"; checkpoints written before kinds existed have none


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture, neuron parameters (SI units), the input coding and the output decoder a model
    was trained with. ``recurrent``: hidden layers carry recurrent weights (the output layer never
    does). ``decoder_beta``: the first-spike decoder's logits are ``-decoder_beta * t_first``
    (t_first in steps)."""

    input_size: int
    hidden: tuple[int, ...]
    output_size: int
    dt: float = 1e-3  # s
    tau_syn: float = 5e-3  # s (Norse default tau_syn_inv = 200 / s)
    tau_mem: float = 1e-2  # s (Norse default tau_mem_inv = 100 / s)
    v_th: float = 1.0
    encoding: str = "rate"
    steps: int = 32
    dataset: str = "digits"
    recurrent: bool = False
    decoder: str = "spike_count"  # a key of coding.DECODERS, also in the NIR metadata
    decoder_beta: float = 1.0  # 1 / step

    @property
    def coding(self) -> Coding:
        """The coding the exported graph records (decoder_beta only for the decoders that scale
        their logits by it)."""
        entries = {"encoding": self.encoding, "steps": self.steps, "dataset": self.dataset,
                   "decoder": self.decoder}
        if self.decoder != "spike_count":
            entries["decoder_beta"] = self.decoder_beta
        return Coding.of(**entries)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise InputFileError(f"checkpoint config has unknown keys: {sorted(unknown)}")
        d = dict(d)
        hidden = d.get("hidden", ())
        if not isinstance(hidden, (list, tuple)) or not all(_is(h, "int") for h in hidden):
            raise InputFileError(f"checkpoint config: hidden must be a list of sizes, got {hidden!r}")
        d["hidden"] = tuple(hidden)
        if d.get("decoder", "spike_count") not in DECODERS:
            raise InputFileError(f"checkpoint config names decoder {d['decoder']!r}: known are"
                                 f" {', '.join(DECODERS)}")
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in d
                   and f.default is dataclasses.MISSING]
        if missing:
            raise InputFileError(f"checkpoint config lacks {', '.join(missing)}")
        for f in dataclasses.fields(cls):  # the annotations are strings: "int", "float", ...
            value = d.get(f.name, f.default)
            if f.type in ("int", "float", "str", "bool") and not _is(value, f.type):
                raise InputFileError(f"checkpoint config: {f.name} must be {f.type}, got {value!r}")
        bad = [f"{name} = {d[name]!r}" for name in ("input_size", "output_size", "steps", "dt",
                                                    "tau_syn", "tau_mem") if name in d and d[name] <= 0]
        if any(h < 1 for h in hidden):
            bad.append(f"hidden = {list(hidden)}")
        if bad:
            raise InputFileError(f"checkpoint config: {', '.join(bad)} must be > 0")
        return cls(**d)


def _is(value: object, kind: str) -> bool:
    """``value`` is of the config field type ``kind``: bool only for "bool", finite floats only."""
    if kind == "bool" or isinstance(value, bool):
        return kind == "bool" and isinstance(value, bool)
    if kind == "int":
        return isinstance(value, int)
    if kind == "float":
        return isinstance(value, (int, float)) and math.isfinite(value)
    return isinstance(value, str)


@dataclasses.dataclass(frozen=True)
class LIFState:
    """One layer's state: synaptic current i (after this step's input), membrane v, spikes z;
    ``v_pre`` is this step's membrane before the threshold test and reset (what the threshold saw).
    """

    i: torch.Tensor
    v: torch.Tensor
    z: torch.Tensor
    v_pre: torch.Tensor | None = None


def lif_step(current_in: torch.Tensor, state: LIFState, p: norse.LIFParameters, dt: float, *,
             detach_reset: bool = False) -> tuple[LIFState, torch.Tensor]:
    """One Euler step of a CUBA LIF layer, as Norse 1.1.0's ``lif_feed_forward_step``:

        i = i_{t-1} decayed + current_in;  v = v_{t-1} + dt/tau_mem (v_leak - v_{t-1} + i)
        z = [v > v_th] (SuperSpike surrogate);  v <- v_reset where z;  i decays for the next step

    Args:
        current_in: (B, n) synaptic input of this step (W x_t [+ R z_{t-1}]).
        state: the previous step's state; its ``i`` is already decayed (Norse's convention).
        detach_reset: stop the gradient through the reset (Norse's feed-forward step keeps it).

    Returns:
        The new state (``i`` decayed for the next step) and the undecayed current of this step
        (what drives the membrane, the float backend's I_t).
    """
    i_new = state.i + current_in
    dv = dt * p.tau_mem_inv * ((p.v_leak - state.v) + i_new)
    v_decayed = state.v + dv
    di = -dt * p.tau_syn_inv * i_new
    i_decayed = i_new + di
    z = threshold(v_decayed - p.v_th, p.method, p.alpha)
    r = z.detach() if detach_reset else z
    v_new = (1 - r) * v_decayed + r * p.v_reset
    return LIFState(i=i_decayed, v=v_new, z=z, v_pre=v_decayed), i_new


@dataclasses.dataclass(frozen=True)
class Trace:
    """A run of the network on (T, B, n_in) input: per layer, (T, B, n) spikes and the (T, B, n)
    synaptic current I_t that drove the membrane (``lif_step``'s second result); ``membrane``:
    the (T, B, C) output layer's membrane before threshold and reset, in units of v_th (the
    max-membrane decoder's input)."""

    spikes: tuple[torch.Tensor, ...]
    currents: tuple[torch.Tensor, ...]
    membrane: torch.Tensor | None = None

    @property
    def output(self) -> torch.Tensor:
        return self.spikes[-1]


@dataclasses.dataclass(frozen=True)
class GradientCuts:
    """Where ``LIFNetwork.trace`` stops gradients (all False: full BPTT).

    between_layers: each layer receives the previous layer's spikes detached;
    reset: the reset's dependence on the weights is ignored;
    recurrent: the recurrent input R z_{t-1} is a constant to the gradient (R still learns).
    With all three a synapse's gradient is its postsynaptic surrogate derivative times an
    eligibility trace (its presynaptic input filtered by the neuron's own i and v leaks) that could
    be computed forward in time; autograd computes the same numbers backwards.
    """

    between_layers: bool = False
    reset: bool = False
    recurrent: bool = False


NO_CUTS = GradientCuts()


class LIFNetwork(torch.nn.Module):
    """Stack of Linear -> LIF layers run over time-major input (T, B, n); with
    ``config.recurrent``, hidden layer k also has ``recurrent[k]``, a bias-free (n, n) Linear."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        sizes = [config.input_size, *config.hidden, config.output_size]
        params = norse.LIFParameters(
            tau_syn_inv=torch.as_tensor(1.0 / config.tau_syn),
            tau_mem_inv=torch.as_tensor(1.0 / config.tau_mem),
            v_th=torch.as_tensor(config.v_th),
        )
        layers: list[torch.nn.Module] = []
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            layers.append(torch.nn.Linear(n_in, n_out, bias=False))
            layers.append(norse.LIFCell(p=params, dt=config.dt))
        # Kept as Norse modules: ``norse.to_nir`` exports them and the checkpoint keys stay
        # "net.0.weight", "net.2.weight", ...
        self.net = norse.SequentialState(*layers)
        self.recurrent = torch.nn.ModuleList(
            [torch.nn.Linear(n, n, bias=False) for n in config.hidden] if config.recurrent else [])

    @property
    def synapses(self) -> tuple[torch.nn.Linear, ...]:
        """The feed-forward Linear of every layer, input side first."""
        return tuple(self.net[k] for k in range(0, len(self.net), 2))

    def trace(self, x: torch.Tensor, *, cuts: GradientCuts = NO_CUTS) -> Trace:
        """Run (T, B, n_in) input layer by layer; every layer starts from zero state."""
        spikes, currents = [], []
        z_in = x
        for k, syn in enumerate(self.synapses):
            cell = self.net[2 * k + 1]
            rec = self.recurrent[k] if k < len(self.recurrent) else None
            if cuts.between_layers and k > 0:
                z_in = z_in.detach()
            drive = syn(z_in)  # (T, B, n): the feed-forward input of every step at once
            zeros = torch.zeros_like(drive[0])
            state = LIFState(i=zeros, v=zeros, z=zeros)
            zs, cs, vs = [], [], []
            for d_t in drive:
                if rec is not None:
                    z_prev = state.z.detach() if cuts.recurrent else state.z
                    d_t = d_t + rec(z_prev)
                state, i_t = lif_step(d_t, state, cell.p, cell.dt, detach_reset=cuts.reset)
                zs.append(state.z)
                cs.append(i_t)
                vs.append(state.v_pre)
            z_in = torch.stack(zs)
            spikes.append(z_in)
            currents.append(torch.stack(cs))
        membrane = torch.stack(vs) / cell.p.v_th  # the output layer's, in units of its threshold
        return Trace(spikes=tuple(spikes), currents=tuple(currents), membrane=membrane)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(T, B, n_in) input -> (T, B, n_out) output spikes."""
        return self.trace(x).output


def save_checkpoint(model: LIFNetwork, path: Path, *, extra: dict | None = None) -> None:
    """Write weights and config as a weights-only checkpoint (atomically)."""
    write_checkpoint(model, kind=LIF_KIND, path=path, extra=extra)


def write_checkpoint(model: torch.nn.Module, *, kind: str, path: Path,
                     extra: dict | None = None) -> None:
    """The one checkpoint writer for every model kind: format tag, version, ``kind``, the model's
    ``config.to_dict()``, its tensors and ``info``; read back by ``read_checkpoint``."""
    from snn_deploy.fileio import atomic_path

    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "kind": kind,
        "config": model.config.to_dict(),  # type: ignore[operator]
        "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "info": dict(extra or {}),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def read_checkpoint(path: Path) -> dict:
    """The payload of an snn-deploy checkpoint of any kind (``payload["kind"]``: "lif" when absent,
    or "ann"), checked for its format tag and version; never unpickles arbitrary objects.

    ``checkpoint_archive.check_archive`` vets the file before torch opens it: torch 2.3's
    ``torch.load`` hands any archive holding ``constants.pkl`` to ``torch.jit.load``, whatever
    ``weights_only`` says, and that runs the TorchScript module's ``__setstate__``
    (tests/test_security_checkpoint.py)."""
    path = regular_input(path, what="checkpoint")
    check_archive(path)
    try:
        # mmap: torch 2.3 trusts a tensor's declared size when it copies a record
        # (get_storage_from_record); a mapped file bounds it (tests/test_fuzz_checkpoint.py)
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # torch raises many types for corrupt or pickled-object files
        raise InputFileError(f"{path} is not a readable snn-deploy checkpoint:"
                             f" {first_line(exc)}") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise InputFileError(f"{path} is not an snn-deploy checkpoint (no '{CHECKPOINT_FORMAT}' tag)")
    if payload.get("version") != CHECKPOINT_VERSION:
        raise InputFileError(
            f"{path}: checkpoint version {payload.get('version')} is not supported"
            f" (this snn-deploy reads version {CHECKPOINT_VERSION})"
        )
    return payload


def load_weights(make: Callable[[], torch.nn.Module], state: object, path: Path) -> torch.nn.Module:
    """``make()`` (a model built from a checkpoint config) loaded with the checkpoint's tensors
    ``state``, after checking them against the model as built on the meta device (so a config that
    declares absurd sizes allocates nothing): the same names and shapes, real floating point,
    finite."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputFileError(f"{path}: the checkpoint's state_dict is not a dict of tensors")
    try:
        with torch.device("meta"):
            wanted = {k: tuple(v.shape) for k, v in make().state_dict().items()}
    except (TypeError, ValueError, RuntimeError, ArithmeticError, UserError) as exc:
        raise InputFileError(f"{path}: the checkpoint config is unusable: {exc}") from None
    got = {k: tuple(v.shape) for k, v in state.items()}
    for key in sorted(set(got) | set(wanted), key=str):
        if got.get(key) != wanted.get(key):
            raise InputFileError(f"{path}: weights do not match the config: {key} is"
                                 f" {got.get(key, 'missing')}, the config needs"
                                 f" {wanted.get(key, 'no such tensor')}")
    claimed = sum(v.numel() * v.element_size() for v in state.values())
    if claimed > path.stat().st_size:  # views sharing one record or expanded (stride 0) tensors
        raise InputFileError(f"{path}: the weights claim {claimed} bytes, more than the file holds")
    for key, value in state.items():
        if not value.is_floating_point():
            raise InputFileError(f"{path}: weight {key} has dtype {value.dtype}, not floating point")
        if not torch.isfinite(value).all():
            raise InputFileError(f"{path}: weight {key} holds NaN or Inf")
    model = make()
    model.load_state_dict(state)
    return model


def checkpoint_kind(payload: dict) -> str:
    """Which model a checkpoint payload holds: "lif" or "ann"."""
    return str(payload.get("kind", LIF_KIND))


def lif_from_payload(payload: dict, path: Path) -> LIFNetwork:
    """The LIF network of a checkpoint payload read by ``read_checkpoint``."""
    kind = checkpoint_kind(payload)
    if kind != LIF_KIND:
        if kind == "ann":
            raise InputFileError(f"{path} holds an ANN, not a LIF network: turn it into a NIR"
                                 " graph with `snn-deploy convert`")
        raise InputFileError(f"{path} holds a model of kind {kind!r}, not a LIF network")
    config = payload.get("config")
    if not isinstance(config, dict):
        raise InputFileError(f"{path}: the checkpoint has no config")
    config = ModelConfig.from_dict(config)
    return load_weights(lambda: LIFNetwork(config), payload.get("state_dict"), path)


def load_checkpoint(path: Path) -> LIFNetwork:
    """Load a checkpoint written by ``save_checkpoint``; never unpickles arbitrary objects."""
    return lif_from_payload(read_checkpoint(path), Path(path))
