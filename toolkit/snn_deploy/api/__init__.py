"""The pipeline as Python functions, one per CLI command; the CLI is a thin shell over these.

Workflow layer: each function composes the stages and returns a frozen dataclass; those of the
commands that print or write a report have ``to_json()`` (exactly what the command writes) and,
where the command writes files, ``write``/``save``. ``snn-deploy study`` is
``snn_deploy.study.run_study`` (the study package sits above this one).

| function | command | result |
| --- | --- | --- |
| ``train`` / ``train_ann`` | ``train`` / ``train --ann`` | ``TrainRun`` / ``AnnTrainRun`` |
| ``export`` | ``export`` | ``FloatNetwork`` (the graph read back) |
| ``convert`` | ``convert`` | ``ConvertResult`` |
| ``deploy`` | ``deploy`` | ``DeployResult`` |
| ``import_netx`` | ``import-netx`` | ``ImportResult`` |
| ``run`` | ``run`` | ``RunResult`` |
| ``evaluate`` | ``evaluate`` | ``EvaluateResult`` |
| ``attack`` | ``attack`` | ``AttackResult`` |
| ``resources`` | ``resources`` | ``ResourcesResult`` |
| ``compare`` | ``compare`` | ``CompareResult`` |
"""

from __future__ import annotations

from snn_deploy.api.calibration import (CALIBRATION_SAMPLES, EFFECT_RATE, EFFECT_SAMPLES,
                                        EFFECT_STEPS, SourceEffect, calibration_input,
                                        random_spikes, reset_effect)
from snn_deploy.api.common import check_device, check_outputs, profile_file, select_host
from snn_deploy.api.conversion import ConvertResult, convert, export
from snn_deploy.api.deployment import (DeployResult, ImportResult, deploy, import_netx,
                                       write_deployment)
from snn_deploy.api.evaluation import (CompareResult, EvaluateResult, compare, evaluate,
                                       format_reports, read_report)
from snn_deploy.api.hardware import ResourcesResult, resources
from snn_deploy.api.inputs import NPY_HEADER_MAX, NPY_LENGTH_BYTES, load_npy, time_major
from snn_deploy.api.robustness import AttackResult, attack
from snn_deploy.api.simulation import RunResult, run
from snn_deploy.api.training import AnnTrainRun, TrainRun, train, train_ann

__all__ = [
    "CALIBRATION_SAMPLES", "EFFECT_RATE", "EFFECT_SAMPLES", "EFFECT_STEPS", "NPY_HEADER_MAX",
    "NPY_LENGTH_BYTES", "AnnTrainRun", "AttackResult", "CompareResult", "ConvertResult",
    "DeployResult", "EvaluateResult", "ImportResult", "ResourcesResult", "RunResult",
    "SourceEffect", "TrainRun", "attack", "calibration_input", "check_device", "check_outputs",
    "compare", "convert", "deploy", "evaluate", "export", "format_reports", "import_netx",
    "load_npy", "profile_file", "random_spikes", "read_report", "reset_effect", "resources",
    "run", "select_host", "time_major", "train", "train_ann", "write_deployment",
]
