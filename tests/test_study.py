"""`snn-deploy study`: a tiny grid end to end, resuming, a failing cell, bad configs."""

from __future__ import annotations

import csv
import json
import math

import pytest
from snn_deploy.errors import UserError
from snn_deploy.study import load_study, parse_study, run_study
from snn_deploy.study.config import Cell, loss_keywords, regulariser_keywords

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
    ok = json.loads((out / "cells" / "rate-count-bptt-ff-none-s0.json").read_text())
    assert ok["status"] == "ok"
    m = ok["metrics"]
    assert 0 <= m["robust_pgd_eps1"] <= m["robust_pgd_eps0"] <= m["clean_accuracy"] <= 1
    assert m["spikes_per_sample"] > 0 and m["synops_per_sample"] > 0
    assert m["energy_per_sample_nj"] > 0 and m["perturbation_ms"] >= 0
    assert any("rate-count-bptt-ff-none-s0: training" in msg for msg in messages)
    rows = list(csv.DictReader(result.csv_path.open()))
    assert [r["group"] for r in rows] == ["rate-count-bptt-ff-none", "direct-count-bptt-ff-none"]
    assert float(rows[0]["clean_accuracy_mean"]) == pytest.approx(m["clean_accuracy"])
    assert math.isnan(float(rows[0]["clean_accuracy_std"]))  # one seed: no spread
    table = result.markdown_path.read_text()
    assert "| rate | count | bptt | false | none | 1 |" in table and "robust_pgd_eps1" in table
    assert result.plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_failing_cell_is_recorded_and_reported(tiny_run):
    _, out, result, _ = tiny_run
    failed = json.loads((out / "cells" / "direct-count-bptt-ff-none-s0.json").read_text())
    assert failed["status"] == "failed"
    assert "spike encoding" in failed["error"] and "\n" not in failed["error"]
    assert "direct-count-bptt-ff-none" in result.markdown_path.read_text().split("Failed cells:")[1]


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


def test_loss_keywords():
    assert loss_keywords("count") == {"loss": "count"}
    assert loss_keywords("max_membrane:4") == {"loss": "max_membrane", "decoder_beta": 4.0}
    for bad, match in (("mse", "LOSS one of"), ("first_spike:x", "not a number"),
                       ("first_spike:0", "> 0")):
        with pytest.raises(UserError, match=match):
            loss_keywords(bad)


def test_several_grids_run_the_union_of_their_cells_once():
    import tomli

    data = tomli.loads(TINY)
    data["study"]["seeds"] = [0, 1]
    data["grid"] = [{"encoding": ["rate", "fusion"], "loss": ["count", "first_spike:0.5"]},
                    {"encoding": ["rate"], "rule": ["bptt", "eprop"], "recurrent": [False, True]}]
    config = parse_study(data)
    groups = list(dict.fromkeys(c.group for c in config.cells()))
    assert groups == ["rate-count-bptt-ff-none", "rate-first_spike0.5-bptt-ff-none",
                      "fusion-count-bptt-ff-none", "fusion-first_spike0.5-bptt-ff-none",
                      "rate-count-bptt-rec-none", "rate-count-eprop-ff-none",
                      "rate-count-eprop-rec-none"]
    assert len(config.cells()) == 2 * len(groups)
    assert config.cells()[1] == Cell("rate", "count", "bptt", False, "none", 1)
    data["grid"][1]["loss"] = ["hinge"]
    with pytest.raises(UserError, match="grid 2: \\[grid\\] loss"):
        parse_study(data)
    data["grid"] = []
    with pytest.raises(UserError, match="at least one table"):
        parse_study(data)


# Two cells with the temporal decoders, run on lava-sim and on the emulator: the backends must
# give the same numbers (training is seeded and identical; only the verifying backend differs).
DECODERS = """
[study]
name = "decoders"
seeds = [0]
steps = 8
epochs = 2
hidden = 16
lr = 1e-2
batch_size = 128
limit = 12
attacks = ["pgd"]
eps = [0.1]
iterations = 2

[[grid]]
encoding = ["rate"]
loss = ["first_spike:0.5"]

[[grid]]
encoding = ["fusion"]
loss = ["max_membrane:4"]
"""


@pytest.mark.slow
def test_lava_sim_study_equals_the_emulator_one_for_both_temporal_decoders(tmp_path):
    import tomli

    cells = {}
    for backend in ("lava-sim", "emulator"):
        data = tomli.loads(DECODERS)
        data["study"]["backend"] = backend
        result = run_study(parse_study(data), tmp_path / backend)
        assert (result.ran, result.failed) == (2, 0), [c.get("error") for c in result.cells]
        cells[backend] = {c["cell"]: c["metrics"] for c in result.cells}
    assert set(cells["lava-sim"]) == {"rate-first_spike0.5-bptt-ff-none-s0",
                                      "fusion-max_membrane4-bptt-ff-none-s0"}
    for cell, lava in cells["lava-sim"].items():
        emu = cells["emulator"][cell]
        assert lava == emu, cell
        assert 0 <= lava["robust_pgd_eps0.1"] <= lava["clean_accuracy"]
    table = (tmp_path / "lava-sim" / "study.md").read_text()
    assert "| fusion | max_membrane:4 | bptt | false | none | 1 |" in table


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
    ("grid", "loss", "['max_membrane:-1']", "loss"),
    ("grid", "loss", "[1]", "loss"),
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
    from tests.factories import assert_bad_input, run_cli

    bad = tmp_path / "bad.toml"
    bad.write_text('[study]\nname = "x"\nbogus = 1\n')
    assert_bad_input(run_cli("study", "--config", bad, "--out", tmp_path / "o", cwd=tmp_path),
                     "bogus")
    assert not (tmp_path / "o" / "study.csv").exists()
