"""The same command with the same seed writes the same report, byte for byte apart from timings."""

from __future__ import annotations

import json

import pytest

from tests.factories import assert_ok, run_cli

TIMING_KEYS = {"wall_time_s", "seconds"}


def _without_timings(value):
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if k not in TIMING_KEYS}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


def _report(tmp_path, name, *args) -> str:
    out = tmp_path / name
    assert_ok(run_cli(*args, "--json", out, cwd=tmp_path))
    return json.dumps(_without_timings(json.loads(out.read_text())), indent=1)


@pytest.mark.parametrize("backend", ["emulator", "lava-sim"])
def test_evaluate_reports_repeat_exactly(small_model_files, tmp_path, backend):
    args = ("evaluate", small_model_files["deployment"], "--backend", backend, "--limit", "24",
            "--seed", "5")
    first, second = _report(tmp_path, "a.json", *args), _report(tmp_path, "b.json", *args)
    assert first == second
    report = json.loads(first)
    assert report["seed"] == 5 and len(report["profile_sha256"]) == 64
    assert {"torch", "lava-nc", "lava-dl", "nir", "norse", "snn-deploy"} <= set(report["versions"])


def test_attack_reports_repeat_exactly(small_model_files, tmp_path):
    args = ("attack", small_model_files["deployment"], "--attack", "pgd,square", "--eps", "0,0.2",
            "--iterations", "4", "--queries", "30", "--limit", "16", "--seed", "2")
    assert _report(tmp_path, "a.json", *args) == _report(tmp_path, "b.json", *args)


def test_export_writes_the_same_file_whatever_the_string_hashing(small_model_files, tmp_path):
    """nirtorch lists a graph's edges in set order, which follows Python's string hashing
    (PYTHONHASHSEED, random per process): the same checkpoint exported twice gave two files, and
    every report's model hash changed with it. ``convert.export.write_nir`` sorts the edges."""
    import os
    import subprocess
    import sys

    digests = []
    for seed in ("1", "2", "3"):
        out = tmp_path / f"{seed}.nir"
        env = {**os.environ, "PYTHONHASHSEED": seed}
        proc = subprocess.run([sys.executable, "-m", "snn_deploy.cli", "export",
                               str(small_model_files["checkpoint"]), "--out", str(out)],
                              capture_output=True, text=True, env=env, timeout=300)
        assert_ok(proc)
        digests.append(out.read_bytes())
    assert digests[0] == digests[1] == digests[2]
