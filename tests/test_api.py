"""``snn_deploy.api``: one small real call per function, its typed result, and ``to_json()``
equal to what the CLI command of the same name writes (wall times apart).

The CLI runs in-process (``snn_deploy.cli.main``) on the same tiny model (64-8-10, T = 4, one
epoch), so the module stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from snn_deploy import api
from snn_deploy.cli import main
from snn_deploy.convert.nirgraph import FloatNetwork
from snn_deploy.train.model import read_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")

STEPS, LIMIT = 4, 12
WALL_KEYS = {"wall_time_s", "seconds"}  # wall-clock times (evaluate; attack rows)


def _plain(x: object) -> object:
    """JSON round trip (tuples -> lists); raises if ``x`` is not JSON-serialisable."""
    return json.loads(json.dumps(x))


def _without_wall(report: object) -> object:
    if isinstance(report, dict):
        return {k: _without_wall(v) for k, v in report.items() if k not in WALL_KEYS}
    if isinstance(report, list):
        return [_without_wall(v) for v in report]
    return report


def _cli(*args: object) -> None:
    assert main([str(a) for a in args]) == 0


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("api")
    trained = api.train(dataset="digits", hidden=(8,), encoding="rate", steps=STEPS, epochs=1,
                        seed=0, lr=5e-3, batch_size=64)
    trained.save(folder / "m.pt")
    network = api.export(folder / "m.pt", folder / "m.nir")
    deployed = api.deploy(folder / "m.nir", profile="loihi2", dataset="digits")
    deployed.write(folder / "m.deploy.h5")
    return {"folder": folder, "train": trained, "network": network, "deploy": deployed,
            "pt": folder / "m.pt", "nir": folder / "m.nir", "dep": folder / "m.deploy.h5"}


def test_train_result_is_what_the_checkpoint_records(files: dict) -> None:
    result = files["train"]
    assert isinstance(result, api.TrainRun)
    assert result.seed == 0 and result.epochs == 1 and len(result.history) == 1
    assert read_checkpoint(files["pt"])["info"] == _plain(result.to_json())
    assert "LIF network (bptt, count loss, rate coding, T=4) on digits" in result.summary()


def test_train_ann_and_convert(files: dict, tmp_path: Path) -> None:
    ann = api.train_ann(dataset="digits", hidden=(8,), epochs=1, seed=3)
    assert isinstance(ann, api.AnnTrainRun) and ann.seed == 3 and not ann.conv
    ann.save(tmp_path / "ann.pt")
    assert read_checkpoint(tmp_path / "ann.pt")["info"] == _plain(ann.to_json())
    converted = api.convert(tmp_path / "ann.pt", out=tmp_path / "ann.nir", steps=STEPS)
    assert isinstance(converted, api.ConvertResult) and (tmp_path / "ann.nir").is_file()
    doc = _plain(converted.to_json())
    assert doc["steps"] == STEPS and len(doc["layers"]) == len(converted.layers) == 2
    assert doc["out"] == str(tmp_path / "ann.nir")


def test_export_returns_the_graph_read_back(files: dict) -> None:
    network = files["network"]
    assert isinstance(network, FloatNetwork)
    assert [layer.size for layer in network.layers] == [8, 10]


def test_deploy_result(files: dict, tmp_path: Path) -> None:
    result = files["deploy"]
    assert isinstance(result, api.DeployResult)
    doc = _plain(result.to_json())
    assert doc["profile"] == "loihi2" and [r["neurons"] for r in doc["layers"]] == [8, 10]
    assert len(doc["fidelity"]) == 2 and doc["retuning"] is None
    _cli("deploy", files["nir"], "--dataset", "digits", "--out", tmp_path / "cli.deploy.h5")
    assert (tmp_path / "cli.deploy.h5").is_file()


def test_import_netx(files: dict, tmp_path: Path) -> None:
    netx = api.deploy(files["nir"], profile="loihi2-netx")
    netx.write(tmp_path / "m.deploy.h5", netx_out=tmp_path / "m.net")
    result = api.import_netx(tmp_path / "m.net", profile="loihi2-netx")
    assert isinstance(result, api.ImportResult)
    assert [layer.size for layer in result.deployment.layers] == [8, 10]
    assert _plain(result.to_json())["input_size"] == 64


def test_run_equals_the_cli_output(files: dict, tmp_path: Path) -> None:
    x = (np.random.default_rng(0).random((STEPS, 3, 64)) < 0.3).astype(np.uint8)
    np.save(tmp_path / "x.npy", x)
    result = api.run(files["dep"], input_path=tmp_path / "x.npy", backend="emulator")
    assert isinstance(result, api.RunResult) and result.output.shape == (STEPS, 3, 10)
    assert _plain(result.to_json())["samples"] == 3
    _cli("run", files["dep"], "--input", tmp_path / "x.npy", "--out", tmp_path / "y.npy")
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), result.output)


def test_evaluate_and_compare_equal_the_cli_json(files: dict, tmp_path: Path) -> None:
    result = api.evaluate(files["dep"], backend="emulator", limit=LIMIT, seed=2)
    assert isinstance(result, api.EvaluateResult) and result.report["n"] == LIMIT
    _cli("evaluate", files["dep"], "--backend", "emulator", "--limit", LIMIT, "--seed", 2,
         "--json", tmp_path / "e.json")
    written = json.loads((tmp_path / "e.json").read_text())
    assert _without_wall(written) == _without_wall(_plain(result.to_json()))
    both = api.compare([tmp_path / "e.json", tmp_path / "e.json"])
    assert isinstance(both, api.CompareResult) and both.reports[0] == written
    assert _plain(both.to_json())["accuracy_points"] == [{"backend": "emulator", "points": 0.0}]


def test_attack_equals_the_cli_json(files: dict, tmp_path: Path) -> None:
    result = api.attack(files["dep"], attacks=("fgsm",), eps=(0.1,), limit=LIMIT, checks=False)
    assert isinstance(result, api.AttackResult)
    assert [r["attack"] for r in result.report["results"]] == ["fgsm"]
    _cli("attack", files["dep"], "--attack", "fgsm", "--eps", "0.1", "--limit", LIMIT,
         "--no-checks", "--json", tmp_path / "a.json")
    written = json.loads((tmp_path / "a.json").read_text())
    assert _without_wall(written) == _without_wall(_plain(result.to_json()))


def test_resources_equal_the_cli_json(files: dict, tmp_path: Path) -> None:
    result = api.resources(files["dep"])
    assert isinstance(result, api.ResourcesResult) and result.report.fits is True
    _cli("resources", files["dep"], "--json", tmp_path / "r.json")
    assert (tmp_path / "r.json").read_text() == json.dumps(result.to_json(), indent=2) + "\n"
