"""Outputs and arguments at the CLI boundary (the security issue, classes 3, 6, 7, 8).

No command may overwrite its own input, replace a device or FIFO with a regular file, leave one
output behind when another failed, write outside the folder a study names, or end in a traceback
on an out-of-range argument: each is one line on stderr, exit status 2, and nothing written.
Run in-process through ``snn_deploy.cli.main``, as the console script does.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from snn_deploy.cli import main
from snn_deploy.errors import UserError
from snn_deploy.fileio import all_or_nothing, atomic_path, check_writable
from snn_deploy.study import folder_name, parse_study

pytestmark = pytest.mark.usefixtures("one_thread")


def refused(capsys, *args: object, mention: str = "") -> str:
    """Run the CLI: exit status 2 and exactly one line on stderr (containing ``mention``)."""
    capsys.readouterr()
    rc = main([str(a) for a in args])
    err = capsys.readouterr().err.strip()
    assert rc == 2, f"rc={rc}: {err}"
    assert err.count("\n") == 0 and err.startswith("snn-deploy: error:"), err
    assert "Traceback" not in err
    assert mention in err, err
    return err


@pytest.fixture()
def model(small_model_files, tmp_path) -> dict[str, Path]:
    """Private copies of the checkpoint, NIR graph and Deployment, in tmp_path."""
    return {k: Path(shutil.copy(small_model_files[k], tmp_path / Path(small_model_files[k]).name))
            for k in ("checkpoint", "nir", "deployment")}


@pytest.mark.parametrize("command", ["deploy", "export", "evaluate", "netx", "run"])
def test_no_command_overwrites_its_input(capsys, model, tmp_path, command):
    nir_path, ckpt, dep = model["nir"], model["checkpoint"], model["deployment"]
    args = {
        "deploy": ["deploy", nir_path, "--out", nir_path],
        "export": ["export", ckpt, "--out", ckpt],
        "evaluate": ["evaluate", dep, "--backend", "emulator", "--json", dep],
        "netx": ["deploy", nir_path, "--profile", "loihi2-netx", "--netx", nir_path,
                 "--out", tmp_path / "x.deploy.h5"],
        "run": ["run", dep, "--input", dep, "--out", dep],
    }[command]
    before = {p: p.read_bytes() for p in model.values()}
    refused(capsys, *args, mention="input")
    assert {p: p.read_bytes() for p in model.values()} == before
    assert not (tmp_path / "x.deploy.h5").exists()


def test_a_link_to_the_input_is_the_input(capsys, model, tmp_path):
    hard, soft = tmp_path / "hard.nir", tmp_path / "soft.nir"
    os.link(model["nir"], hard)
    soft.symlink_to(model["nir"])
    before = model["nir"].read_bytes()
    for out in (hard, soft):
        refused(capsys, "deploy", model["nir"], "--out", out, mention="input")
    assert model["nir"].read_bytes() == before and soft.is_symlink()


def test_the_same_output_twice_is_refused(capsys, model, tmp_path):
    out = tmp_path / "both"
    refused(capsys, "deploy", model["nir"], "--profile", "loihi2-netx", "--netx", out, "--out", out,
            mention="two outputs")
    assert not out.exists()


def test_devices_and_fifos_are_not_replaced(capsys, model, tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for out in (fifo, Path("/dev/null")):
        refused(capsys, "deploy", model["nir"], "--out", out, mention="not a regular file")
    assert fifo.is_fifo() and Path("/dev/null").is_char_device()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["pipe", *(p.name for p in
                                                                           model.values())])


def test_a_name_too_long_is_one_line(capsys, model, tmp_path):
    refused(capsys, "deploy", model["nir"], "--out", tmp_path / ("a" * 300), mention="300 bytes")
    # a name that fits alone, but not with the temporary file's suffix, is refused before work
    refused(capsys, "deploy", model["nir"], "--out", tmp_path / ("b" * 250), mention="250 bytes")
    assert not any(p.name.startswith(("a", "b", ".")) for p in tmp_path.iterdir())


def test_outputs_are_tried_before_work(capsys, model, tmp_path):
    """A report folder that cannot be written (under /proc, or under a regular file) is found
    before the attack runs, and the --json file is not written either."""
    report = tmp_path / "r.json"
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for folder in ("/proc/self/report", blocker / "report"):
        refused(capsys, "attack", model["deployment"], "--eps", "0.1", "--json", report,
                "--report-dir", folder, mention="cannot write")
    assert not report.exists()


def test_all_or_nothing_writes_every_file_or_none(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "new" / "deeper" / "b.txt"
    with pytest.raises(UserError):
        with all_or_nothing():
            with atomic_path(a) as tmp:
                tmp.write_text("first")
            with atomic_path(b) as tmp:
                tmp.write_text("second")
            raise UserError("the third output failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == [], list(tmp_path.rglob("*"))
    with all_or_nothing():
        with atomic_path(a) as tmp:
            tmp.write_text("first")
        assert not a.exists()  # nothing appears before the block ends
    assert a.read_text() == "first"


def test_check_writable_refuses_an_input(tmp_path):
    src = tmp_path / "in.h5"
    src.write_bytes(b"data")
    with pytest.raises(UserError, match="input"):
        check_writable(tmp_path / "." / "in.h5", inputs=[src])
    check_writable(tmp_path / "other.h5", inputs=[src])  # a different file is fine
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.h5"]  # the probe is gone


@pytest.mark.parametrize("args, mention", [
    (["train", "--seed", str(2**70)], "--seed"),
    (["train", "--seed", "-1"], "--seed"),
    (["train", "--hidden", str(10**9)], "--hidden"),
    (["train", "--hidden", "100000,100000"], "--hidden"),
    (["train", "--steps", "0"], "--steps"),
    (["train", "--steps", str(10**9)], "--steps"),
    (["train", "--epochs", "0"], "--epochs"),
    (["train", "--lr", "nan"], "--lr"),
    (["train", "--eps", "inf"], "--eps"),
    (["deploy", "MODEL", "--dt", "nan"], "--dt"),
    (["deploy", "MODEL", "--dt", "-1e-3"], "--dt"),
    (["evaluate", "MODEL", "--limit", "0"], "--limit"),
    (["attack", "MODEL", "--iterations", "0"], "--iterations"),
    (["attack", "MODEL", "--width", "nan"], "--width"),
    (["attack", "MODEL", "--step-size", "-0.1"], "--step-size"),
])
def test_out_of_range_arguments(capsys, model, tmp_path, args, mention):
    out = tmp_path / "out.file"
    args = [str(model["deployment"] if a == "MODEL" else a) for a in args]
    refused(capsys, *args, *(["--out", out] if args[0] in ("train", "deploy") else []),
            mention=mention)
    assert not out.exists()


def test_device_meta_is_refused(capsys, model):
    refused(capsys, "evaluate", model["deployment"], "--backend", "emulator", "--device", "meta",
            "--limit", "4", mention="cpu or cuda")


def test_compare_reads_only_bounded_regular_files(capsys, tmp_path):
    zero = tmp_path / "zero.json"
    zero.symlink_to("/dev/zero")
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)  # opening it would block for ever: it must be refused unopened
    big = tmp_path / "big.json"
    big.write_text(" " * (2 << 20) + "{}")
    for path in (zero, fifo):
        refused(capsys, "compare", path, mention="not a regular file")
    refused(capsys, "compare", big, mention="larger than")


@pytest.mark.parametrize("name", ["../../x", "/etc/cron.d/x", "..", ".", "a/../../b", "x" * 500,
                                  "..\\..\\x", "\x00", ""])
def test_a_study_stays_in_its_folder(tmp_path, name):
    root = tmp_path / "study_out"
    folder = (root / folder_name(name)).resolve()
    assert folder.parent == root.resolve(), folder
    assert len(folder.name) <= 64 and not folder.name.startswith(".")


@pytest.mark.parametrize("study, mention", [
    ({"seeds": [2**63 - 1]}, "seeds"),
    ({"hidden": 10**9}, "hidden"),
    ({"hidden": [100_000, 100_000]}, "hidden"),
    ({"steps": 10**9}, "steps"),
    ({"epochs": 10**9}, "epochs"),
])
def test_study_sizes_are_bounded(study, mention):
    with pytest.raises(UserError, match=mention) as info:
        parse_study({"study": study})
    assert "\n" not in str(info.value)
