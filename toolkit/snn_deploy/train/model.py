"""The reference feed-forward Norse LIF network and its checkpoint format.

Each layer is ``torch.nn.Linear`` (no bias) followed by ``norse.torch.LIFCell`` (current-based LIF):

    i_t = (1 - dt / tau_syn) * i_{t-1} + W x_t
    v_t = v_{t-1} + dt / tau_mem * (v_leak - v_{t-1} + i_t)
    z_t = [v_t > v_th];  v_t <- v_reset where z_t

(norse/torch/functional/lif.py, ``lif_feed_forward_step``). The checkpoint is a plain dict of
tensors and primitives, loadable with ``torch.load(path, weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import norse.torch as norse
import torch

from snn_deploy.errors import InputFileError

CHECKPOINT_FORMAT = "snn-deploy-checkpoint"
CHECKPOINT_VERSION = 1
LIF_KIND = "lif"  # the payload's "kind"; checkpoints written before kinds existed have none


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture, neuron parameters (SI units) and the input coding a model was trained with."""

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
        d["hidden"] = tuple(int(h) for h in d.get("hidden", ()))
        return cls(**d)


class LIFNetwork(torch.nn.Module):
    """Feed-forward stack of Linear -> LIFCell layers, run over time-major input (T, B, n)."""

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
        self.net = norse.SequentialState(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(T, B, n_in) input -> (T, B, n_out) output spikes."""
        state = None
        out = []
        for x_t in x:
            z, state = self.net(x_t, state)
            out.append(z)
        return torch.stack(out)


def save_checkpoint(model: LIFNetwork, path: Path, *, extra: dict | None = None) -> None:
    """Write weights and config as a weights-only checkpoint (atomically)."""
    from snn_deploy.fileio import atomic_path

    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "kind": LIF_KIND,
        "config": model.config.to_dict(),
        "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "info": dict(extra or {}),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def read_checkpoint(path: Path) -> dict:
    """The payload of an snn-deploy checkpoint of any kind (``payload["kind"]``: "lif" when absent,
    or "ann"), checked for its format tag and version; never unpickles arbitrary objects."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or pickled-object files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputFileError(f"{path} is not a readable snn-deploy checkpoint: {first}") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise InputFileError(f"{path} is not an snn-deploy checkpoint (no '{CHECKPOINT_FORMAT}' tag)")
    if payload.get("version") != CHECKPOINT_VERSION:
        raise InputFileError(
            f"{path}: checkpoint version {payload.get('version')} is not supported"
            f" (this snn-deploy reads version {CHECKPOINT_VERSION})"
        )
    return payload


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
    model = LIFNetwork(ModelConfig.from_dict(payload["config"]))
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise InputFileError(f"{path}: weights do not match the config: {exc}") from None
    return model


def load_checkpoint(path: Path) -> LIFNetwork:
    """Load a checkpoint written by ``save_checkpoint``; never unpickles arbitrary objects."""
    return lif_from_payload(read_checkpoint(path), Path(path))
