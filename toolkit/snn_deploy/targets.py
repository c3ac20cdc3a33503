"""What the user points a command at: a checkpoint, a NIR graph or a Deployment, told apart safely."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import ClassVar, Union

import h5py

from snn_deploy.coding import Coding
from snn_deploy.convert.nirfile import read_nir, read_nir_bytes
from snn_deploy.convert.nirgraph import FloatNetwork, graph_to_network
from snn_deploy.errors import InputFileError, UserError
from snn_deploy.hdf5_limits import check_declared_sizes
from snn_deploy.quantize.deployment import FORMAT_TAG, Deployment, load_deployment
from snn_deploy.train.ann import ANN_KIND, AnnNetwork, ann_from_payload
from snn_deploy.train.model import LIFNetwork, checkpoint_kind, lif_from_payload, read_checkpoint


@dataclasses.dataclass(frozen=True)
class LifCheckpoint:
    """A Norse LIF network saved by ``snn-deploy train`` (.pt)."""

    model: LIFNetwork
    kind: ClassVar[str] = "checkpoint"


@dataclasses.dataclass(frozen=True)
class AnnCheckpoint:
    """A ReLU network saved by ``snn-deploy train-ann`` (.pt): it reads values, not spikes."""

    model: AnnNetwork
    kind: ClassVar[str] = ANN_KIND


@dataclasses.dataclass(frozen=True)
class NirGraph:
    """A NIR graph (.nir), read as the float backend's layer chain."""

    network: FloatNetwork
    kind: ClassVar[str] = "nir"


@dataclasses.dataclass(frozen=True)
class DeploymentFile:
    """A Deployment (.deploy.h5) with the NIR graph it was made from, which it carries (None for
    one imported from lava-dl netx)."""

    deployment: Deployment
    source: FloatNetwork | None
    kind: ClassVar[str] = "deployment"


Model = Union[LifCheckpoint, AnnCheckpoint, NirGraph, DeploymentFile]


@dataclasses.dataclass(frozen=True)
class Target:
    """A loaded model file: its path, SHA-256 and what it holds (one of the ``Model`` kinds)."""

    path: Path
    sha256: str
    model: Model

    @property
    def kind(self) -> str:
        """"checkpoint" (LIF) | "ann" | "nir" | "deployment", as reports name it."""
        return self.model.kind

    @property
    def checkpoint(self) -> LIFNetwork | None:
        return self.model.model if isinstance(self.model, LifCheckpoint) else None

    @property
    def ann(self) -> AnnNetwork | None:
        return self.model.model if isinstance(self.model, AnnCheckpoint) else None

    @property
    def deployment(self) -> Deployment | None:
        return self.model.deployment if isinstance(self.model, DeploymentFile) else None

    @property
    def network(self) -> FloatNetwork | None:
        """The NIR layer chain: the graph file itself, or the graph a Deployment carries."""
        match self.model:
            case NirGraph(network=network) | DeploymentFile(source=network):
                return network
        return None

    @property
    def float_model(self) -> LIFNetwork | FloatNetwork | None:
        """What the float backend runs: the LIF checkpoint's Norse model, else the NIR graph."""
        return self.checkpoint if self.checkpoint is not None else self.network

    def require_deployment(self) -> Deployment:
        if self.deployment is None:
            ann = isinstance(self.model, AnnCheckpoint)
            how = ("convert it with `snn-deploy convert ANN.pt --out M.nir`, then make one with"
                   if ann else "make one with")
            raise UserError(
                f"{self.path} is {'an ANN checkpoint' if ann else 'a ' + self.kind},"
                f" not a Deployment: {how} `snn-deploy deploy MODEL.nir --profile loihi2"
                " --out M.deploy.h5`"
            )
        return self.deployment

    def require_network(self) -> FloatNetwork:
        if self.network is None:
            why = ("an ANN, not a NIR graph: convert it with `snn-deploy convert`"
                   if isinstance(self.model, AnnCheckpoint) else
                   f"a {self.kind} without a NIR source graph (imported from netx?)")
            raise UserError(f"{self.path} is {why}: the float backend has no SNN to run")
        return self.network

    @property
    def input_size(self) -> int:
        match self.model:
            case LifCheckpoint(model=lif):
                return lif.config.input_size
            case AnnCheckpoint(model=ann):
                return ann.config.n_inputs
            case DeploymentFile(deployment=dep):
                return dep.input_size
        return self.require_network().input_size

    @property
    def coding(self) -> Coding:
        match self.model:
            case LifCheckpoint(model=lif):
                return lif.config.coding  # the entries its exported graph records
            case AnnCheckpoint(model=ann):  # an ANN reads the values themselves, once
                return Coding.of(encoding="none", steps=1, dataset=ann.config.dataset)
            case DeploymentFile(deployment=dep):
                return dep.coding
            case NirGraph(network=network):
                return network.coding
        raise TypeError(f"not a model kind: {self.model!r}")


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _kind(path: Path) -> str:
    if path.suffix == ".pt":
        return "checkpoint"
    if path.suffix == ".nir":
        return "nir"
    check_declared_sizes(path, origin=str(path))  # before h5py follows a link out of the file
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") in (FORMAT_TAG, FORMAT_TAG.encode()):
                return "deployment"
            if "node" in f:
                return "nir"
    except (OSError, RuntimeError):  # h5py raises RuntimeError on damaged metadata
        if path.suffix in (".h5", ".hdf5"):
            raise InputFileError(f"{path} is not a readable HDF5 file (damaged or truncated?)") from None
    raise InputFileError(
        f"{path}: not a checkpoint (.pt), NIR graph (.nir) or deployment (.deploy.h5)"
    )


def load_target(path: str | Path, *, dt: float | None = None) -> Target:
    """Load a model file of any kind (a LIF or ANN checkpoint, a NIR graph, a Deployment), with
    one clear error if it is none of them."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"file not found: {path}")
    kind = _kind(path)
    digest = sha256_file(path)
    if kind == "checkpoint":
        payload = read_checkpoint(path)
        if checkpoint_kind(payload) == ANN_KIND:
            return Target(path, digest, AnnCheckpoint(ann_from_payload(payload, path)))
        return Target(path, digest, LifCheckpoint(lif_from_payload(payload, path)))
    if kind == "nir":
        return Target(path, digest, NirGraph(graph_to_network(read_nir(path), dt=dt)))
    deployment = load_deployment(path)
    network: FloatNetwork | None = None
    if deployment.source_nir:  # empty for deployments imported from lava-dl netx
        graph = read_nir_bytes(deployment.source_nir, origin=f"{path}:source_nir")
        network = graph_to_network(graph, dt=deployment.dt)
    return Target(path, digest, DeploymentFile(deployment, source=network))
