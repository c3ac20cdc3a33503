"""`snn-deploy study`: a tiny grid end to end, resuming, a failing cell, bad configs."""

from __future__ import annotations

import csv
import json
import math

import pytest

from snn_deploy.errors import UserError
from snn_deploy.evaluate.study import (load_study, parse_study, regulariser_keywords,
                                       run_study)

# Two cells: the spike-flip attack needs a spike encoding, so the direct-coded cell fails for real
# inside its sweep, while the rate-coded one finishes.
TINY = """
[study]
name = "tiny"
seeds = [0]
steps = 6
epochs = 1
hidden = 8
limit = 20
attacks = ["pgd", "spike-flip"]
eps = [0.0, 1.0]  # whole numbers: spike-flip counts flipped spikes
iterations = 2
perturbation_sigma = 0.1

[grid]
encoding = ["rate", "direct"]
rule = ["bptt"]
recurrent = [false]
regulariser = ["none"]
"""


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("study")
    config_path = folder / "tiny.toml"
    config_path.write_text(TINY)
    config = load_study(config_path)
    messages: list[str] = []
    result = run_study(config, folder / "out", on_progress=messages.append)
    return config, folder / "out", result, messages


def test_tiny_study_writes_cells_and_tables(tiny_run):
    config, out, result, messages = tiny_run
    assert (result.ran, result.skipped, result.failed) == (2, 0, 1)
    ok = json.loads((out / "cells" / "rate-bptt-ff-none-s0.json").read_text())
    assert ok["status"] == "ok"
    m = ok["metrics"]
    assert 0 <= m["robust_pgd_eps1"] <= m["robust_pgd_eps0"] <= m["clean_accuracy"] <= 1
    assert m["spikes_per_sample"] > 0 and m["synops_per_sample"] > 0
    assert m["energy_per_sample_nj"] > 0 and m["perturbation_ms"] >= 0
    assert any("rate-bptt-ff-none-s0: training" in msg for msg in messages)
    rows = list(csv.DictReader(result.csv_path.open()))
    assert [r["group"] for r in rows] == ["rate-bptt-ff-none", "direct-bptt-ff-none"]
    assert float(rows[0]["clean_accuracy_mean"]) == pytest.approx(m["clean_accuracy"])
    assert math.isnan(float(rows[0]["clean_accuracy_std"]))  # one seed: no spread
    table = result.markdown_path.read_text()
    assert "| rate | bptt | false | none | 1 |" in table and "robust_pgd_eps1" in table
    assert result.plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_failing_cell_is_recorded_and_reported(tiny_run):
    _, out, result, _ = tiny_run
    failed = json.loads((out / "cells" / "direct-bptt-ff-none-s0.json").read_text())
    assert failed["status"] == "failed"
    assert "spike encoding" in failed["error"] and "\n" not in failed["error"]
    assert "direct-bptt-ff-none" in result.markdown_path.read_text().split("Failed cells:")[1]


def test_second_run_skips_finished_cells(tiny_run):
    config, out, first, _ = tiny_run
    messages: list[str] = []
    again = run_study(config, out, on_progress=messages.append)
    assert (again.ran, again.skipped) == (0, 2)
    assert not any("training" in msg for msg in messages)
    assert again.cells == first.cells


def test_regulariser_keywords():
    assert regulariser_keywords("none") == {}
    assert regulariser_keywords("noise:0.2") == {"noise_sigma": 0.2}
    assert regulariser_keywords("fgsm:0.1") == {"adversarial": "fgsm", "eps": 0.1}
    assert regulariser_keywords("perturbation:1") == {"noise_sigma": 0.1,
                                                      "perturbation_weight": 1.0}


@pytest.mark.parametrize("section, key, value, named", [
    ("study", "colour", "'red'", "colour"),
    ("grid", "encodings", "['rate']", "encodings"),
    ("study", "backend", "'float'", "backend"),
    ("study", "profile", "'loihi9'", "profile"),
    ("study", "hidden", "0", "hidden"),
    ("study", "seeds", "[]", "seeds"),
    ("study", "eps", "[0.1, -0.1]", "eps"),
    ("study", "attacks", "['pgdd']", "attacks"),
    ("study", "eps", "[0.5]", "eps"),  # spike-flip needs whole spike counts
    ("grid", "encoding", "['morse']", "encoding"),
    ("grid", "rule", "['hebb']", "rule"),
    ("grid", "recurrent", "['yes']", "recurrent"),
    ("grid", "regulariser", "['noise']", "regulariser"),
    ("grid", "regulariser", "['fgsm:2']", "regulariser"),
])
def test_bad_configs_name_the_key(section, key, value, named):
    import tomli

    data = tomli.loads(TINY)
    data[section][key] = tomli.loads(f"v = {value}")["v"]
    with pytest.raises(UserError, match=named) as info:
        parse_study(data)
    assert "\n" not in str(info.value)


def test_default_study_config_is_valid():
    from pathlib import Path

    config = load_study(Path(__file__).parents[1] / "studies" / "digits.toml")
    assert len(config.seeds) >= 3 and config.backend == "emulator"


def test_cli_study_refuses_a_bad_config(tmp_path):
    from tests.test_cli import assert_bad_input, run_cli

    bad = tmp_path / "bad.toml"
    bad.write_text('[study]\nname = "x"\nbogus = 1\n')
    assert_bad_input(run_cli("study", "--config", bad, "--out", tmp_path / "o", cwd=tmp_path),
                     "bogus")
    assert not (tmp_path / "o" / "study.csv").exists()
