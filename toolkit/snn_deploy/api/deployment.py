"""``deploy`` and ``import-netx``: a NIR graph or a lava-dl netx file -> Deployment for a profile.

Workflow layer (``snn_deploy.api``): reads the graph, calibrates on data when it is given,
quantizes (``quantize.fixed_point``), re-tunes (``quantize.retune``) and measures the fidelity of
the result against the float graph.
"""

from __future__ import annotations

import dataclasses
import hashlib
import warnings
from pathlib import Path
from typing import Sequence

import torch

from snn_deploy.api.calibration import (
    EFFECT_RATE,
    EFFECT_SAMPLES,
    EFFECT_STEPS,
    SourceEffect,
    calibration_input,
    random_spikes,
    reset_effect,
)
from snn_deploy.api.common import jsonable
from snn_deploy.api.inputs import load_npy
from snn_deploy.coding import BINARY_ENCODINGS
from snn_deploy.convert.nirfile import read_nir
from snn_deploy.convert.nirgraph import RESETS, FloatNetwork, graph_to_network
from snn_deploy.data import load_dataset
from snn_deploy.errors import UserError
from snn_deploy.fileio import all_or_nothing
from snn_deploy.profiles import Profile, load_profile
from snn_deploy.quantize.deployment import Deployment, save_deployment
from snn_deploy.quantize.fidelity import FidelityLayer, fidelity
from snn_deploy.quantize.fixed_point import quantize_network
from snn_deploy.quantize.retune import MODES as RETUNE_MODES
from snn_deploy.quantize.retune import RetuneResult, Simulators, retune
from snn_deploy.run.emulator import run_emulator
from snn_deploy.run.float_backend import run_float
from snn_deploy.run.twin import EmulatorTwin


def layer_rows(dep: Deployment) -> list[dict]:
    """Per layer what ``deploy`` prints: formats, decays, threshold and how much saturated."""
    return [{"layer": layer.neuron, "kind": layer.kind, "shape": list(layer.shape or (layer.size,)),
             "neurons": layer.size, "sign": layer.sign_mode,
             "w_exp": layer.weight_exp, "du": layer.du, "dv": layer.dv, "vth": layer.vth,
             "saturated_share": layer.stats.saturated_share,
             "u_peak_share": layer.stats.u_peak_share} for layer in dep.layers]


@dataclasses.dataclass(frozen=True)
class DeployResult:
    deployment: Deployment
    warnings: tuple[str, ...]
    retuning: RetuneResult | None = None
    fidelity: tuple[FidelityLayer, ...] = ()  # on the calibration input; empty without data
    notes: tuple[str, ...] = ()  # how the NIR import read the writer's conventions
    source_effect: SourceEffect | None = None  # with a source_reset other than "zero"

    def to_json(self) -> dict:
        """The summary ``deploy`` prints (the integer parameters themselves are in the file)."""
        tuning = None if self.retuning is None else {
            key: jsonable(getattr(self.retuning, key)) for key in
            ("mode", "samples", "best_epoch", "accuracy_before", "accuracy_after", "wall_time_s",
             "layers")}
        return {"profile": self.deployment.profile.name, "calibration": self.deployment.calibration,
                "layers": jsonable(layer_rows(self.deployment)), "warnings": list(self.warnings),
                "notes": list(self.notes), "retuning": tuning, "fidelity": jsonable(self.fidelity),
                "source_effect": jsonable(self.source_effect)}

    def write(self, out: str | Path, *, netx_out: str | Path | None = None) -> None:
        """Save the Deployment and, with ``netx_out``, a lava-dl netx file: both or neither."""
        write_deployment(self.deployment, out, netx_out=netx_out)

    def summary(self) -> str:
        """What ``deploy`` prints: a row per layer, the calibration, re-tuning and fidelity."""
        from snn_deploy.evaluate.report import format_table
        from snn_deploy.quantize.fidelity import format_fidelity
        from snn_deploy.quantize.retune import format_retune

        dep = self.deployment
        rows = [[r["layer"], r["neurons"], r["sign"], r["w_exp"], r["du"], r["dv"], r["vth"],
                 f"{100 * r['saturated_share']:.2f}%", f"{100 * r['u_peak_share']:.1f}%"]
                for r in layer_rows(dep)]
        lines = [format_table(["layer", "neurons", "sign", "w_exp", "du", "dv", "vth", "saturated",
                               "u peak / range"], rows),
                 f"profile {dep.profile.name}; calibration: {dep.calibration}"]
        if self.retuning is not None:
            lines.append(format_retune(self.retuning))
        if self.fidelity:
            lines += ["fidelity on the calibration input (float graph vs emulator):",
                      format_fidelity(self.fidelity)]
        return "\n".join(lines)


def _check_options(*, retune_mode: str, source_reset: str, dataset: str | None,
                   calibration: str | None) -> None:
    if source_reset not in RESETS:
        raise UserError(f"unknown --source-reset {source_reset!r}: choose from {', '.join(RESETS)}")
    if retune_mode not in ("none", *RETUNE_MODES):
        raise UserError(f"unknown --retune {retune_mode!r}: choose from none, {', '.join(RETUNE_MODES)}")
    if retune_mode in ("grad", "robust") and dataset is None:
        raise UserError(f"--retune {retune_mode} needs labelled data: give --dataset")
    if retune_mode == "rate" and dataset is None and calibration is None:
        raise UserError("--retune rate needs data: give --dataset or --calibration")


def deploy(nir_path: str | Path, *, profile: str, dt: float | None = None,
           dataset: str | None = None, calibration: str | None = None,
           seed: int = 0, retune_mode: str = "none", source_reset: str = "zero") -> DeployResult:
    """NIR file -> Deployment for a profile, calibrated on data when it is given, and re-tuned
    after quantization (``retune_mode``: none, rate, grad or robust; see quantize/retune.py).

    ``source_reset``: how the model that the graph came from reset its neurons
    (``convert.nirgraph.SOURCE_RESETS``). NIR (and Loihi 2) reset v to v_reset with one spike per
    step; a model that reset by subtraction (snnTorch's "subtract") or ran as Sinabs does
    (several spikes per step, subtraction, a floor under an IF's v) cannot say so in NIR. With
    any but "zero", the warnings say what the difference does to the float graph's spike counts,
    on the calibration input or on random spikes, and ``source_effect`` holds the figures.
    ``DeployResult.write`` saves the Deployment (and a lava-dl netx file).
    """
    _check_options(retune_mode=retune_mode, source_reset=source_reset, dataset=dataset,
                   calibration=calibration)
    prof = load_profile(profile)
    nir_path = Path(nir_path)
    network = graph_to_network(read_nir(nir_path), dt=dt)
    decoder = network.coding.decoder.name
    if retune_mode in ("grad", "robust") and decoder != "spike_count":
        raise UserError(f"--retune {retune_mode} trains on the spike-count decoder's loss, but this"
                        f" graph is read out by {decoder}: use --retune rate or none")
    source = nir_path.read_bytes()
    x = calibration_input(network, dataset=dataset, calibration=calibration, seed=seed)
    float_run = run_float(network, x) if x is not None else None
    result = _quantize(network, prof, source=source, x=x,
                       u_peaks=None if float_run is None else float_run.u_peaks, seed=seed,
                       how=f"{dataset or calibration}", source_reset=source_reset)
    if retune_mode != "none":
        tuning = _retune(result.deployment, network, mode=retune_mode, dataset=dataset,
                         calibration=calibration, seed=seed)
        result = dataclasses.replace(result, deployment=tuning.deployment, retuning=tuning)
    if x is not None and float_run is not None:
        result = dataclasses.replace(result, fidelity=fidelity(
            result.deployment, network, float_counts=float_run.recording.counts,
            fixed_counts=run_emulator(result.deployment, x).counts, steps=x.shape[0]))
    return result


def _quantize(network: FloatNetwork, prof: Profile, *, source: bytes, x: torch.Tensor | None,
              u_peaks: Sequence[float] | None, seed: int, how: str,
              source_reset: str) -> DeployResult:
    """Quantize with the calibrated current peaks (None: bounded from the weights); the warnings
    raised on the way are kept."""
    if x is not None and u_peaks is not None:
        u_peaks = list(u_peaks)
        how = f"{how}: {x.shape[1]} samples x {x.shape[0]} steps, seed {seed}"
    else:
        u_peaks, how = None, "weights only (worst-case current bound)"
    encoding = network.coding.encoding
    effect = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if source_reset != "zero":
            probe = x if x is not None else random_spikes(network, seed=seed)
            where = how if x is not None else (f"random spikes, p = {EFFECT_RATE}, {EFFECT_SAMPLES}"
                                               f" samples x {EFFECT_STEPS} steps, seed {seed}")
            effect = reset_effect(network, probe, source_reset=source_reset, where=where)
            warnings.warn(effect.message(), stacklevel=2)
        dep = quantize_network(
            network, prof, graded_input=encoding not in BINARY_ENCODINGS, u_peaks=u_peaks,
            source_sha256=hashlib.sha256(source).hexdigest(), source_nir=source, calibration=how,
        )
    return DeployResult(deployment=dep, warnings=tuple(str(w.message) for w in caught),
                        notes=network.notes, source_effect=effect)


def write_deployment(dep: Deployment, out: str | Path, *, netx_out: str | Path | None = None) -> None:
    """The Deployment and, with ``netx_out``, a lava-dl netx file: both files or neither."""
    with all_or_nothing():
        if netx_out:  # first: it refuses what netx cannot carry
            from snn_deploy.quantize.netx_write import write_netx

            write_netx(dep, netx_out)
        save_deployment(dep, out)


def _retune(dep: Deployment, network: FloatNetwork, *, mode: str, dataset: str | None,
            calibration: str | None, seed: int) -> RetuneResult:
    """Re-tune on the whole training split (values and labels) or, for ``rate``, on 2-d values."""
    if dataset is not None:
        split = load_dataset(dataset)
        x, y = split.x_train, split.y_train
    else:
        assert calibration is not None
        values = load_npy(calibration)
        if values.ndim != 2:
            raise UserError(f"--retune rate with --calibration needs (N, features) values in [0, 1],"
                            f" got shape {values.shape}")
        x, y = torch.from_numpy(values).to(torch.float32), None
    return retune(dep, mode=mode, x=x, y=y, seed=seed, train_weights=mode != "rate",
                  simulators=Simulators(fixed=lambda d, s: run_emulator(d, s).counts,
                                        twin=EmulatorTwin),
                  float_rates=lambda s: run_float(network, s).recording.counts)


@dataclasses.dataclass(frozen=True)
class ImportResult:
    """A Deployment read from a lava-dl netx file, and what the reader warned about."""

    deployment: Deployment
    warnings: tuple[str, ...]

    def to_json(self) -> dict:
        return {"profile": self.deployment.profile.name, "input_size": self.deployment.input_size,
                "layers": jsonable(layer_rows(self.deployment)), "warnings": list(self.warnings)}

    def write(self, out: str | Path) -> None:
        save_deployment(self.deployment, out)

    def sizes(self) -> str:
        """"64-256-10": the input width, then each layer's neurons (an input layer of neurons
        is the input), shapes as CxHxW."""
        dep = self.deployment
        shapes = [layer.shape or (layer.size,) for layer in dep.layers]
        if dep.layers[0].kind != "input":
            shapes.insert(0, (dep.input_size,))
        return "-".join("x".join(str(d) for d in shape) for shape in shapes)


def import_netx(net: str | Path, *, profile: str = "loihi2", skip_layers: int = 0,
                num_layers: int | None = None) -> ImportResult:
    """A lava-dl netx network (.net: input, dense, dense_rec and conv layers) -> Deployment;
    ``skip_layers`` / ``num_layers`` as netx's ``Network``."""
    from snn_deploy.quantize.netx_read import read_netx

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dep = read_netx(net, profile=load_profile(profile), skip_layers=skip_layers,
                        num_layers=num_layers)
    return ImportResult(deployment=dep, warnings=tuple(str(w.message) for w in caught))
