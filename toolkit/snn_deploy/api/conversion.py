"""``export`` (checkpoint -> NIR) and ``convert`` (ReLU ANN -> NIR graph of IF neurons).

Workflow layer (``snn_deploy.api``) over ``convert.export`` and ``convert.ann_api``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from snn_deploy.api.common import jsonable
from snn_deploy.convert import ann_api
from snn_deploy.convert.ann_to_snn import DEFAULT_PERCENTILE
from snn_deploy.convert.export import model_to_nir, write_nir
from snn_deploy.convert.nirfile import read_nir
from snn_deploy.convert.nirgraph import FloatNetwork, graph_to_network
from snn_deploy.train.model import load_checkpoint


def export(checkpoint: str | Path, out: str | Path) -> FloatNetwork:
    """Checkpoint -> NIR file; returns the graph as read back from the written file."""
    model = load_checkpoint(Path(checkpoint))
    write_nir(model_to_nir(model), out)
    return graph_to_network(read_nir(out))


@dataclasses.dataclass(frozen=True)
class ConvertResult(ann_api.ConvertSummary):
    """What ``convert`` wrote and the thresholds it chose (``ConvertSummary``)."""

    def to_json(self) -> dict:
        return jsonable(self)  # type: ignore[return-value]

    def summary(self) -> str:
        """What ``convert`` prints: a row per layer, then the settings and the ANN's accuracy."""
        from snn_deploy.evaluate.report import format_table

        rows = [[layer.name, layer.neurons, layer.activation_scale, layer.threshold,
                 f"{layer.active_share:.1%}", f"{layer.saturated_share:.2%}"] for layer in self.layers]
        which = "" if self.percentile is None else f" ({self.percentile:g}th percentile)"
        return "\n".join([
            format_table(["layer", "neurons", "lambda", "threshold", "active", "saturated"], rows),
            f"{self.norm} norm{which}, threshold scale {self.threshold_scale:g}, calibrated on"
            f" {self.calibration_samples} {self.dataset} samples; {self.encoding} coding,"
            f" T = {self.steps}; ANN test accuracy {self.ann_test_accuracy:.4f}"])


def convert(ann_path: str | Path, *, out: str | Path, dataset: str | None = None,
            steps: int = 32, norm: str = "max", percentile: float = DEFAULT_PERCENTILE,
            threshold_scale: float = 1.0, encoding: str = "direct",
            calibration_samples: int | None = None) -> ConvertResult:
    """ANN checkpoint -> NIR file of IF neurons, thresholds balanced on the training split
    (``convert.ann_api.convert``)."""
    summary = ann_api.convert(ann_path, out=out, dataset=dataset, steps=steps, norm=norm,
                              percentile=percentile, threshold_scale=threshold_scale,
                              encoding=encoding, calibration_samples=calibration_samples)
    return ConvertResult(**{f.name: getattr(summary, f.name)
                            for f in dataclasses.fields(summary)})
