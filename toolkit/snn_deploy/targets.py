"""What the user points a command at: a checkpoint, a NIR graph or a Deployment, told apart safely."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import h5py

from snn_deploy.convert.nirfile import read_nir, read_nir_bytes
from snn_deploy.convert.nirgraph import FloatNetwork, graph_to_network
from snn_deploy.errors import InputFileError, UserError
from snn_deploy.hdf5_limits import check_declared_sizes
from snn_deploy.quantize.deployment import FORMAT_TAG, Deployment, load_deployment
from snn_deploy.train.ann import ANN_KIND, AnnNetwork, ann_from_payload
from snn_deploy.train.model import LIFNetwork, checkpoint_kind, lif_from_payload, read_checkpoint


@dataclasses.dataclass(frozen=True)
class Target:
    """A loaded model file. Exactly one of ``checkpoint``, ``ann``, ``network`` and ``deployment``
    is the file itself; a Deployment also carries its source graph as ``network``."""

    path: Path
    kind: str  # "checkpoint" (LIF) | "ann" | "nir" | "deployment"
    sha256: str
    checkpoint: LIFNetwork | None = None
    network: FloatNetwork | None = None
    deployment: Deployment | None = None
    ann: AnnNetwork | None = None

    def require_deployment(self) -> Deployment:
        if self.deployment is None:
            how = ("convert it with `snn-deploy convert ANN.pt --out M.nir`, then make one with"
                   if self.ann is not None else "make one with")
            raise UserError(
                f"{self.path} is {'an ANN checkpoint' if self.ann is not None else 'a ' + self.kind},"
                f" not a Deployment: {how} `snn-deploy deploy MODEL.nir --profile loihi2"
                " --out M.deploy.h5`"
            )
        return self.deployment

    def require_network(self) -> FloatNetwork:
        if self.network is None:
            why = ("an ANN, not a NIR graph: convert it with `snn-deploy convert`"
                   if self.ann is not None else
                   f"a {self.kind} without a NIR source graph (imported from netx?)")
            raise UserError(f"{self.path} is {why}: the float backend has no SNN to run")
        return self.network

    @property
    def input_size(self) -> int:
        if self.checkpoint is not None:
            return self.checkpoint.config.input_size
        if self.ann is not None:
            return self.ann.config.n_inputs
        if self.deployment is not None:
            return self.deployment.input_size
        return self.require_network().input_size

    @property
    def coding(self) -> dict:
        if self.checkpoint is not None:
            cfg = self.checkpoint.config
            coding = {"encoding": cfg.encoding, "steps": cfg.steps, "dataset": cfg.dataset,
                      "decoder": cfg.decoder}
            if cfg.decoder != "spike_count":  # the same keys as the exported graph's metadata
                coding["decoder_beta"] = cfg.decoder_beta
            return coding
        if self.ann is not None:  # an ANN reads the values themselves, once
            return {"encoding": "none", "steps": 1, "dataset": self.ann.config.dataset}
        if self.deployment is not None:
            return dict(self.deployment.coding)
        return dict(self.network.coding) if self.network is not None else {}


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
            return Target(path=path, kind=ANN_KIND, sha256=digest,
                          ann=ann_from_payload(payload, path))
        return Target(path=path, kind=kind, sha256=digest,
                      checkpoint=lif_from_payload(payload, path))
    if kind == "nir":
        graph_net = graph_to_network(read_nir(path), dt=dt)
        return Target(path=path, kind=kind, sha256=digest, network=graph_net)
    deployment = load_deployment(path)
    network: FloatNetwork | None = None
    if deployment.source_nir:  # empty for deployments imported from lava-dl netx
        graph = read_nir_bytes(deployment.source_nir, origin=f"{path}:source_nir")
        network = graph_to_network(graph, dt=deployment.dt)
    return Target(path=path, kind=kind, sha256=digest, deployment=deployment, network=network)
