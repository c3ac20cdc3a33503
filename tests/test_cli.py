"""The ``snn-deploy`` command as a user runs it: a subprocess of the real console script.

Contract (cli.py, DESIGN): every command exits 0 on success; bad input gets exactly one line on
stderr naming the problem, exit status 2, no Python traceback, and no output file (nor a stray
temporary file) left behind.

One tiny model (64-16-10, T=8, 2 epochs) is trained, exported and deployed once per module; the
bad-input tests that need a good NIR graph or Deployment reuse it. Each test runs in its own
folder: inputs under ``in/``, outputs aimed at ``out/``, and afterwards ``out/`` must be empty and
the shared model folder unchanged.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import nir
import numpy as np
import pytest

from tests.factories import assert_bad_input, assert_ok, run_cli

HIDDEN, STEPS, LIMIT = 16, 8, 20
DIGITS_INPUTS, DIGITS_CLASSES = 64, 10


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --------------------------------------------------------------------------------------------
# Fixtures


class Model:
    """The good model files, made once, and the results of the commands that made them."""

    def __init__(self, folder: Path):
        self.dir = folder
        self.pt = folder / "m.pt"
        self.nir = folder / "m.nir"
        self.deploy = folder / "m.deploy.h5"
        self.steps: dict[str, subprocess.CompletedProcess] = {}
        self.listing: list[str] = []

    def assert_unchanged(self) -> None:
        assert _listing(self.dir) == self.listing, "the shared model folder changed"


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Model:
    m = Model(tmp_path_factory.mktemp("model"))
    m.steps["train"] = run_cli("train", "--hidden", HIDDEN, "--epochs", 2, "--steps", STEPS,
                               "--out", m.pt.name, cwd=m.dir)
    assert_ok(m.steps["train"])
    m.steps["export"] = run_cli("export", m.pt.name, "--out", m.nir.name, cwd=m.dir)
    assert_ok(m.steps["export"])
    m.steps["deploy"] = run_cli("deploy", m.nir.name, "--dataset", "digits",
                                "--out", m.deploy.name, cwd=m.dir)
    assert_ok(m.steps["deploy"])
    m.listing = _listing(m.dir)
    return m


class Work:
    """A test's own folder: ``in/`` for inputs it makes, ``out/`` for outputs that must not appear."""

    def __init__(self, root: Path):
        self.root = root
        self.inp = root / "in"
        self.out = root / "out"
        self.inp.mkdir()
        self.out.mkdir()

    def run(self, *args: object) -> subprocess.CompletedProcess:
        return run_cli(*args, cwd=self.root)

    def assert_clean(self) -> None:
        """Nothing written: out/ is empty, and no stray file appeared next to in/ and out/."""
        assert _listing(self.out) == [], f"files left in the output folder: {_listing(self.out)}"
        assert _listing(self.root) == ["in", "out"], f"stray files: {_listing(self.root)}"


@pytest.fixture
def work(tmp_path) -> Work:
    return Work(tmp_path)


def _lif(n: int) -> nir.LIF:
    return nir.LIF(tau=np.full(n, 1e-2, np.float32), r=np.ones(n, np.float32),
                   v_leak=np.zeros(n, np.float32), v_threshold=np.ones(n, np.float32))


def _affine(n_out: int, n_in: int) -> nir.Affine:
    rng = np.random.default_rng(0)
    return nir.Affine(weight=rng.normal(0, 0.5, (n_out, n_in)).astype(np.float32),
                      bias=np.zeros(n_out, np.float32))


def write_chain(path: Path, *, n_in: int = DIGITS_INPUTS, n_out: int = DIGITS_CLASSES,
                metadata: dict | None = None) -> Path:
    """A valid one-layer graph Input -> Affine -> LIF -> Output (no training needed)."""
    nodes = {"input": nir.Input(input_type=np.array([n_in])), "fc": _affine(n_out, n_in),
             "lif": _lif(n_out), "output": nir.Output(output_type=np.array([n_out]))}
    edges = [("input", "fc"), ("fc", "lif"), ("lif", "output")]
    nir.write(str(path), nir.NIRGraph(nodes=nodes, edges=edges,
                                      metadata={"dt": 1e-3} if metadata is None else metadata))
    return path


def write_unsupported(path: Path, kind: str) -> Path:
    """A graph with one node of an unsupported type, named ``weird``."""
    if kind == "Delay":
        nodes = {"input": nir.Input(input_type=np.array([DIGITS_INPUTS])),
                 "fc": _affine(16, DIGITS_INPUTS),
                 "weird": nir.Delay(delay=np.ones(16, np.float32)),
                 "output": nir.Output(output_type=np.array([16]))}
        edges = [("input", "fc"), ("fc", "weird"), ("weird", "output")]
    else:  # Conv2d: its (C, H, W) types cannot follow an Affine, so it reads the input directly
        conv = nir.Conv2d(input_shape=(8, 8), weight=np.ones((1, 1, 3, 3), np.float32), stride=1,
                          padding=1, dilation=1, groups=1, bias=np.zeros(1, np.float32))
        nodes = {"input": nir.Input(input_type=np.array([1, 8, 8])), "weird": conv,
                 "output": nir.Output(output_type=np.array([1, 8, 8]))}
        edges = [("input", "weird"), ("weird", "output")]
    nir.write(str(path), nir.NIRGraph(nodes=nodes, edges=edges, metadata={"dt": 1e-3}))
    return path


# --------------------------------------------------------------------------------------------
# Happy path


REPORT_KEYS = {"backend", "dataset", "n", "steps", "accuracy", "spikes_per_sample",
               "synops_per_sample", "energy_per_sample_nj", "layers"}


def check_report(path: Path, backend: str) -> dict:
    report = json.loads(path.read_text())
    assert REPORT_KEYS <= set(report), f"missing keys {sorted(REPORT_KEYS - set(report))}"
    assert report["backend"] == backend
    assert report["dataset"] == "digits"
    assert report["n"] == LIMIT
    assert report["steps"] == STEPS
    assert 0.0 <= report["accuracy"] <= 1.0
    assert report["spikes_per_sample"] >= 0 and report["synops_per_sample"] >= 0
    energy = report["energy_per_sample_nj"]
    assert energy is None or energy >= 0
    layers = report["layers"]
    assert isinstance(layers, list) and len(layers) == 2
    for layer in layers:
        assert set(layer) >= {"name", "neurons", "spikes_per_sample"}
        assert isinstance(layer["name"], str) and layer["name"]
        assert layer["spikes_per_sample"] >= 0
    assert [layer["neurons"] for layer in layers] == [HIDDEN, DIGITS_CLASSES]
    assert sum(layer["spikes_per_sample"] for layer in layers) == pytest.approx(
        report["spikes_per_sample"])
    return report


@pytest.mark.slow
def test_pipeline_end_to_end(model: Model, work: Work) -> None:
    for step, out in (("train", model.pt), ("export", model.nir), ("deploy", model.deploy)):
        proc = model.steps[step]
        assert proc.returncode == 0 and "Traceback" not in proc.stderr
        assert out.is_file() and out.stat().st_size > 0, out
        assert f"wrote {out.name}" in proc.stdout
    assert "64-16-10" in model.steps["train"].stdout
    assert "2 layers (64-16-10)" in model.steps["export"].stdout

    f_json, l_json = work.out / "f.json", work.out / "l.json"
    proc = work.run("evaluate", model.nir, "--backend", "float", "--limit", LIMIT,
                    "--json", f_json)
    assert_ok(proc)
    assert f_json.is_file()
    float_report = check_report(f_json, "float")
    assert float_report["model_kind"] == "nir"

    proc = work.run("evaluate", model.deploy, "--backend", "lava-sim", "--limit", LIMIT,
                    "--json", l_json)
    assert_ok(proc)
    assert l_json.is_file()
    lava_report = check_report(l_json, "lava-sim")
    assert lava_report["model_kind"] == "deployment"
    assert lava_report["profile"] == "loihi2"
    assert [layer["name"] for layer in lava_report["layers"]] == \
        [layer["name"] for layer in float_report["layers"]]

    proc = work.run("compare", f_json, l_json)
    assert_ok(proc)
    assert "float" in proc.stdout and "lava-sim" in proc.stdout
    assert "lava-sim vs float" in proc.stdout

    proc = work.run("profiles")
    assert_ok(proc)
    assert "loihi2" in proc.stdout

    # Only the two reports were written, with no temporary files beside them.
    assert _listing(work.out) == ["f.json", "l.json"]
    assert _listing(work.root) == ["in", "out"]
    model.assert_unchanged()


# --------------------------------------------------------------------------------------------
# Bad input: missing and foreign files


def test_export_missing_checkpoint(work: Work) -> None:
    proc = work.run("export", "missing.pt", "--out", work.out / "x.nir")
    assert_bad_input(proc, "missing.pt")
    work.assert_clean()


@pytest.mark.parametrize("json_out", [False, True])
def test_evaluate_missing_checkpoint(work: Work, json_out: bool) -> None:
    extra = ["--json", work.out / "r.json"] if json_out else []
    proc = work.run("evaluate", "missing.pt", *extra)
    assert_bad_input(proc, "missing.pt")
    work.assert_clean()


def _not_nir(work: Work, what: str) -> Path:
    if what == "text":
        path = work.inp / "bad.nir"
        path.write_text("this is not a NIR graph\n")
    elif what == "random":
        path = work.inp / "random.nir"
        path.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, np.uint8).tobytes())
    else:  # random bytes without a telling suffix
        path = work.inp / "random.bin"
        path.write_bytes(np.random.default_rng(2).integers(0, 256, 4096, np.uint8).tobytes())
    return path


@pytest.mark.parametrize("what", ["text", "random", "random-no-suffix"])
def test_deploy_not_nir(work: Work, what: str) -> None:
    path = _not_nir(work, what)
    proc = work.run("deploy", path, "--out", work.out / "x.deploy.h5")
    assert_bad_input(proc, path.name)
    work.assert_clean()


@pytest.mark.parametrize("what", ["text", "random", "random-no-suffix"])
def test_evaluate_not_nir(work: Work, what: str) -> None:
    path = _not_nir(work, what)
    proc = work.run("evaluate", path, "--json", work.out / "r.json")
    assert_bad_input(proc, path.name)
    work.assert_clean()


def test_export_not_a_checkpoint(work: Work) -> None:
    path = _not_nir(work, "random").rename(work.inp / "model.pt")
    proc = work.run("export", path, "--out", work.out / "x.nir")
    assert_bad_input(proc, "model.pt")
    work.assert_clean()


# --------------------------------------------------------------------------------------------
# Bad input: graphs the toolkit cannot run


@pytest.mark.parametrize("kind", ["Delay", "Conv2d"])
@pytest.mark.parametrize("command", ["deploy", "evaluate"])
def test_unsupported_node(work: Work, kind: str, command: str) -> None:
    path = write_unsupported(work.inp / "weird.nir", kind)
    if command == "deploy":
        proc = work.run("deploy", path, "--out", work.out / "x.deploy.h5")
    else:
        proc = work.run("evaluate", path, "--json", work.out / "r.json")
    assert_bad_input(proc, "weird", kind)
    work.assert_clean()


@pytest.mark.parametrize("command", ["deploy", "evaluate"])
def test_graph_without_dt(work: Work, command: str) -> None:
    path = write_chain(work.inp / "nodt.nir", metadata={})
    if command == "deploy":
        proc = work.run("deploy", path, "--out", work.out / "x.deploy.h5")
    else:
        proc = work.run("evaluate", path, "--json", work.out / "r.json")
    assert_bad_input(proc, "dt")
    work.assert_clean()


def test_graph_with_text_dt(work: Work) -> None:
    path = write_chain(work.inp / "textdt.nir", metadata={"dt": "abc"})
    proc = work.run("evaluate", path, "--limit", 3, "--json", work.out / "r.json")
    assert_bad_input(proc, "dt")
    work.assert_clean()


def test_graph_without_dt_runs_with_dt_option(work: Work) -> None:
    path = write_chain(work.inp / "nodt.nir", metadata={})
    proc = work.run("evaluate", path, "--dt", "1e-3", "--limit", 5)
    assert_ok(proc)


@pytest.mark.parametrize("dt", ["0", "nan"])
def test_bad_dt_option(work: Work, dt: str) -> None:
    path = write_chain(work.inp / "g.nir")
    proc = work.run("evaluate", path, "--dt", dt, "--json", work.out / "r.json")
    assert_bad_input(proc, "dt")
    work.assert_clean()


# --------------------------------------------------------------------------------------------
# Bad input: profiles


@pytest.mark.slow
def test_unknown_profile(model: Model, work: Work) -> None:
    proc = work.run("deploy", model.nir, "--profile", "nosuch", "--out", work.out / "x.h5")
    assert_bad_input(proc, "nosuch")
    work.assert_clean()
    model.assert_unchanged()


def _shipped_profile_text() -> str:
    from snn_deploy.profiles import available_profiles

    return available_profiles()["loihi2"].read_text()


@pytest.mark.slow
def test_profile_missing_key(model: Model, work: Work) -> None:
    text = _shipped_profile_text()
    kept = [line for line in text.splitlines() if not line.startswith("state_bits")]
    assert len(kept) == len(text.splitlines()) - 1
    path = work.inp / "partial.toml"
    path.write_text("\n".join(kept) + "\n")
    proc = work.run("deploy", model.nir, "--profile", path, "--out", work.out / "x.h5")
    assert_bad_input(proc, "state_bits")
    work.assert_clean()
    model.assert_unchanged()


@pytest.mark.slow
def test_profile_not_toml(model: Model, work: Work) -> None:
    path = work.inp / "broken.toml"
    path.write_text("name = 'x'\nthis is [ not toml\n")
    proc = work.run("deploy", model.nir, "--profile", path, "--out", work.out / "x.h5")
    assert_bad_input(proc, "broken.toml")
    work.assert_clean()
    model.assert_unchanged()


@pytest.mark.slow
def test_profile_path_missing(model: Model, work: Work) -> None:
    proc = work.run("deploy", model.nir, "--profile", work.inp / "absent.toml",
                    "--out", work.out / "x.h5")
    assert_bad_input(proc, "absent.toml")
    work.assert_clean()


# --------------------------------------------------------------------------------------------
# Bad input: option values


@pytest.mark.slow
def test_evaluate_limit_zero(model: Model, work: Work) -> None:
    proc = work.run("evaluate", model.nir, "--limit", 0, "--json", work.out / "r.json")
    assert_bad_input(proc, "--limit")
    work.assert_clean()
    model.assert_unchanged()


def test_evaluate_steps_zero(work: Work) -> None:
    path = write_chain(work.inp / "g.nir")
    proc = work.run("evaluate", path, "--steps", 0, "--json", work.out / "r.json")
    assert_bad_input(proc, "--steps")
    work.assert_clean()


@pytest.mark.parametrize("args, named", [
    (["--epochs", "0"], "--epochs"),
    (["--steps", "0"], "--steps"),
    (["--hidden", "abc"], "abc"),
    (["--hidden", "0"], "--hidden"),
    (["--lr", "0"], "--lr"),
])
def test_train_bad_option(work: Work, args: list[str], named: str) -> None:
    proc = work.run("train", *args, "--out", work.out / "m.pt")
    assert_bad_input(proc, named)
    work.assert_clean()


@pytest.mark.slow
def test_evaluate_nir_on_lava_sim(model: Model, work: Work) -> None:
    proc = work.run("evaluate", model.nir, "--backend", "lava-sim", "--json", work.out / "r.json")
    line = assert_bad_input(proc, model.nir.name)
    assert "deploy" in line.lower()  # names what lava-sim needs / what to do instead
    work.assert_clean()
    model.assert_unchanged()


@pytest.mark.slow
def test_evaluate_checkpoint_on_lava_sim(model: Model, work: Work) -> None:
    proc = work.run("evaluate", model.pt, "--backend", "lava-sim", "--json", work.out / "r.json")
    line = assert_bad_input(proc, model.pt.name)
    assert "deploy" in line.lower()
    work.assert_clean()


def test_out_is_a_folder(work: Work) -> None:
    path = write_chain(work.inp / "g.nir")
    (work.out / "sub").mkdir()
    proc = work.run("deploy", path, "--out", work.out / "sub")
    assert_bad_input(proc, "--out")
    assert _listing(work.out) == ["sub"] and _listing(work.out / "sub") == []


@pytest.mark.slow
def test_deploy_missing_calibration(model: Model, work: Work) -> None:
    proc = work.run("deploy", model.nir, "--calibration", work.inp / "nothere.npy",
                    "--out", work.out / "x.h5")
    assert_bad_input(proc, "nothere.npy")
    work.assert_clean()


@pytest.mark.slow
def test_deploy_dataset_and_calibration(model: Model, work: Work) -> None:
    cal = work.inp / "cal.npy"
    np.save(cal, np.zeros((4, DIGITS_INPUTS), np.float32))
    proc = work.run("deploy", model.nir, "--dataset", "digits", "--calibration", cal,
                    "--out", work.out / "x.h5")
    assert_bad_input(proc, "--dataset", "--calibration")
    work.assert_clean()


# --------------------------------------------------------------------------------------------
# Bad input: damaged deployments and reports


@pytest.mark.slow
def test_truncated_deployment_on_lava_sim(model: Model, work: Work) -> None:
    data = model.deploy.read_bytes()
    path = work.inp / "half.deploy.h5"
    path.write_bytes(data[:len(data) // 2])
    proc = work.run("evaluate", path, "--backend", "lava-sim", "--limit", 5,
                    "--json", work.out / "r.json")
    assert_bad_input(proc, "half.deploy.h5")
    work.assert_clean()
    model.assert_unchanged()


@pytest.mark.slow
def test_zeroed_deployment_on_lava_sim(model: Model, work: Work) -> None:
    data = bytearray(model.deploy.read_bytes())
    data[len(data) // 4:len(data) // 2] = bytes(len(data) // 2 - len(data) // 4)
    path = work.inp / "zeroed.deploy.h5"
    path.write_bytes(bytes(data))
    proc = work.run("evaluate", path, "--backend", "lava-sim", "--limit", 5,
                    "--json", work.out / "r.json")
    assert_bad_input(proc, "zeroed.deploy.h5")
    work.assert_clean()


def test_compare_not_json(work: Work) -> None:
    path = work.inp / "notes.txt"
    path.write_text("accuracy: 0.9\n")
    proc = work.run("compare", path)
    assert_bad_input(proc, "notes.txt")
    work.assert_clean()


def test_compare_random_bytes(work: Work) -> None:
    path = work.inp / "report.json"
    path.write_bytes(np.random.default_rng(3).integers(0, 256, 1024, np.uint8).tobytes())
    proc = work.run("compare", path)
    assert_bad_input(proc, "report.json")
    work.assert_clean()


def test_compare_missing_report(work: Work) -> None:
    proc = work.run("compare", work.inp / "absent.json")
    assert_bad_input(proc, "absent.json")
    work.assert_clean()


def test_compare_json_without_report_keys(work: Work) -> None:
    path = work.inp / "other.json"
    path.write_text('{"hello": 1}\n')
    proc = work.run("compare", path)
    assert_bad_input(proc, "other.json")
    work.assert_clean()


# --------------------------------------------------------------------------------------------
# Bad input that once escaped as a traceback (found in review, fixed since).


@pytest.mark.parametrize("text", ["42\n", "null\n"])
def test_compare_json_scalar(work: Work, text: str) -> None:
    path = work.inp / "scalar.json"
    path.write_text(text)
    proc = work.run("compare", path)
    assert_bad_input(proc, "scalar.json")
    work.assert_clean()


def test_compare_report_with_text_accuracy(work: Work) -> None:
    base = {"backend": "float", "model_kind": "nir", "dataset": "digits", "n": 1, "steps": 8,
            "accuracy": 0.5, "spikes_per_sample": 1.0, "synops_per_sample": 1.0,
            "wall_time_s": 0.1}
    good, bad = work.inp / "good.json", work.inp / "bad.json"
    good.write_text(json.dumps(base))
    bad.write_text(json.dumps({**base, "backend": "lava-sim", "accuracy": "high"}))
    proc = work.run("compare", good, bad)
    assert_bad_input(proc, "bad.json")
    work.assert_clean()


def test_evaluate_graph_input_width_mismatch(work: Work) -> None:
    path = write_chain(work.inp / "narrow.nir", n_in=32)
    proc = work.run("evaluate", path, "--limit", 3, "--json", work.out / "r.json")
    assert_bad_input(proc, "32", "64")
    work.assert_clean()


def test_hidden_error_names_the_option(work: Work) -> None:
    proc = work.run("train", "--hidden", "abc", "--out", work.out / "m.pt")
    assert_bad_input(proc, "--hidden", "abc")
    work.assert_clean()


def test_absurd_steps_are_refused_before_allocating(work: Work) -> None:
    path = write_chain(work.inp / "g.nir")
    proc = work.run("evaluate", path, "--steps", 90000, "--json", work.out / "r.json")
    assert_bad_input(proc, "GB")
    proc = work.run("evaluate", path, "--steps", 10**9, "--json", work.out / "r.json")
    assert_bad_input(proc, "--steps")
    work.assert_clean()


def test_output_folder_is_a_file(work: Work) -> None:
    path = write_chain(work.inp / "g.nir")
    blocker = work.out / "blocker"
    blocker.write_text("a file, not a folder\n")
    proc = work.run("evaluate", path, "--limit", 3, "--json", blocker / "r.json")
    assert_bad_input(proc, "blocker")
    assert _listing(work.out) == ["blocker"]


# --------------------------------------------------------------------------------------------
# import-netx and deploy --netx


def test_import_netx_refuses_a_corrupt_file(work: Work) -> None:
    path = work.inp / "bad.net"
    path.write_bytes(os.urandom(300))
    proc = work.run("import-netx", path, "--out", work.out / "m.deploy.h5")
    assert_bad_input(proc, "bad.net")
    work.assert_clean()


def test_import_netx_names_an_unsupported_layer(work: Work) -> None:
    import h5py

    path = work.inp / "pool.net"
    with h5py.File(path, "w") as f:
        g = f.create_group("layer/0")
        g.create_dataset("type", data=np.array([b"pool"]))
        g.create_dataset("shape", data=np.array([4, 4, 2]))
    proc = work.run("import-netx", path, "--out", work.out / "m.deploy.h5")
    assert_bad_input(proc, "layer 0 (pool)")
    work.assert_clean()


@pytest.mark.slow
def test_deploy_netx_needs_exponent_zero_and_writes_nothing_otherwise(model: Model, work: Work) -> None:
    proc = work.run("deploy", model.nir, "--dataset", "digits", "--out", work.out / "m.deploy.h5",
                    "--netx", work.out / "m.net")
    assert_bad_input(proc, "netx")
    work.assert_clean()
    ok = work.run("deploy", model.nir, "--profile", "loihi2-netx", "--dataset", "digits",
                  "--out", work.out / "m.deploy.h5", "--netx", work.out / "m.net")
    assert_ok(ok)
    back = work.run("import-netx", work.out / "m.net", "--out", work.out / "back.deploy.h5")
    assert_ok(back)
    assert _listing(work.out) == ["back.deploy.h5", "m.deploy.h5", "m.net"]
