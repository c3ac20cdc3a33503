"""Hostile input files: checkpoints that would run code while torch loads them, and .npy arrays
that would block the reader or make it allocate what the file does not hold.

A checkpoint is vetted by ``train.checkpoint_archive.check_archive`` before torch sees it: only the members a
weights-only ``torch.save`` of a dict writes, stored, under one folder, with a pickle that calls
nothing but torch's tensor rebuild function and OrderedDict (``test_torch_load_runs_torchscript``
shows the torch 2.3 bug this works around). A ``.npy`` is read by ``api.load_npy``, which checks
the file type and the header before reading the data. Every case is a real file, refused through
the library and the CLI (exit 2, one line, no traceback, no output file)."""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import struct
import subprocess
import sys
import threading
import zipfile
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch
from snn_deploy import api
from snn_deploy.cli import main
from snn_deploy.errors import InputFileError, UserError
from snn_deploy.train.ann import AnnConfig, AnnNetwork, mlp_layers, save_ann_checkpoint
from snn_deploy.train.checkpoint_archive import CHECKPOINT_MEMBERS, PICKLE_MAX_BYTES
from snn_deploy.train.model import LIFNetwork, ModelConfig, read_checkpoint, save_checkpoint

from tests.factories import read_records, zip_records

pytestmark = pytest.mark.usefixtures("one_thread")

STEPS = 4
MARKER = "marker"  # the file a hostile checkpoint creates, relative to the loader's working folder


class MarkerModule(torch.nn.Module):
    """A TorchScript module whose ``__setstate__``, run by ``torch.jit.load``, creates the file
    ``marker`` (``torch.from_file(shared=True)`` opens it with O_CREAT): code run by a load."""

    def __init__(self, marker: str):
        super().__init__()
        self.marker = marker
        self.mapped = torch.zeros(0, dtype=torch.uint8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    @torch.jit.export
    def __getstate__(self) -> tuple[str, bool]:
        return (self.marker, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[str, bool]) -> None:
        self.marker = state[0]
        self.training = state[1]
        self.mapped = torch.from_file(self.marker, True, 8, dtype=torch.uint8)


class _CreatesMarker:
    """Pickles as a call of ``open(MARKER, "w")`` (``io.open``): a global no checkpoint needs."""

    def __reduce__(self):
        return (open, (MARKER, "w"))




def _saved(obj: object) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Our writers' LIF and ANN checkpoints, the NIR graph of the LIF network, and a TorchScript
    archive of ``MarkerModule`` saved with ``torch.jit.save``."""
    folder = tmp_path_factory.mktemp("hostile")
    torch.manual_seed(0)
    lif = LIFNetwork(ModelConfig(input_size=64, hidden=(8,), output_size=10, steps=STEPS,
                                 recurrent=True))
    save_checkpoint(lif, folder / "lif.pt", extra={"seed": 0, "history": [0.5, 0.25],
                                                    "options": {"rule": "bptt", "eps": None}})
    ann = AnnNetwork(AnnConfig(input_shape=(64,), layers=mlp_layers((8,), 10), n_classes=10))
    save_ann_checkpoint(ann, folder / "ann.pt", extra={"test_accuracy": 0.5})
    api.export(folder / "lif.pt", folder / "lif.nir")
    torch.jit.save(torch.jit.script(MarkerModule(MARKER)), str(folder / "script.pt"))
    return {"lif": folder / "lif.pt", "ann": folder / "ann.pt", "nir": folder / "lif.nir",
            "script": folder / "script.pt"}


def _refused_by_export(path: Path, tmp_path: Path, capsys, *, names: str) -> str:
    """``snn-deploy export path`` run in ``tmp_path``: exit 2, one line naming ``path`` and
    ``names``, no traceback, no output file, no marker file. Returns the line."""
    out = tmp_path / "out" / "m.nir"
    capsys.readouterr()
    assert main(["export", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("snn-deploy: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and str(path) in err and names in err, err
    assert not out.exists() and not (tmp_path / MARKER).exists()
    return err


# --------------------------------------------------------------------------------------------
# The torch bug, and what our own writers produce


def test_torch_load_runs_torchscript_despite_weights_only(files, tmp_path):
    """The torch 2.3 bug ``check_archive`` works around: ``torch.load(weights_only=True)`` hands
    an archive holding constants.pkl to ``torch.jit.load``, which runs the module's
    ``__setstate__`` (here: it creates a file). Run in a subprocess, so that this process never
    loads it. When this fails, torch refuses TorchScript under weights_only itself."""
    code = ("import torch, warnings; warnings.simplefilter('ignore');"
            f" torch.load({str(files['script'])!r}, weights_only=True)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / MARKER).exists(), (
        "torch.load(weights_only=True) no longer runs a TorchScript archive's __setstate__:"
        " torch fixed the bug (keep the member allow-list of check_archive all the same)")


def test_the_torchscript_archive_is_refused_before_torch_reads_it(files, tmp_path, capsys,
                                                                  monkeypatch):
    monkeypatch.chdir(tmp_path)
    names = "refused member 'script/code/"  # its first member that torch.save never writes
    with pytest.raises(InputFileError, match=names) as info:
        read_checkpoint(files["script"])
    assert str(files["script"]) in str(info.value) and "\n" not in str(info.value)
    _refused_by_export(files["script"], tmp_path, capsys, names=names)


def test_our_writers_make_only_allowed_members(files):
    """Every member our writers (and this torch's ``torch.save`` of a dict) write is allowed, and
    both checkpoint kinds pass every check. When the torch pin moves and this fails, the new
    torch writes members ``CHECKPOINT_MEMBERS`` does not know: check what they are first."""
    plain = set(read_records(_saved({"w": torch.zeros(2)})))
    assert plain == {"archive/data.pkl", "archive/byteorder", "archive/data/0", "archive/version",
                     "archive/.data/serialization_id"}, plain
    for kind in ("lif", "ann"):
        for name in read_records(files[kind].read_bytes()):
            assert CHECKPOINT_MEMBERS.fullmatch(name.split("/", 1)[1]), name
        assert read_checkpoint(files[kind])["kind"] == kind


# --------------------------------------------------------------------------------------------
# Archives that are not what torch.save writes


def _with(blob: bytes, extra: dict[str, bytes], *, compression: int = zipfile.ZIP_STORED) -> bytes:
    """The archive ``blob`` with the records ``extra`` added; "{}" in a name is its folder."""
    records = read_records(blob)
    folder = next(iter(records)).split("/", 1)[0]
    records.update({name.format(folder): data for name, data in extra.items()})
    return zip_records(records, compression=compression)


def _replaced_pickle(blob: bytes, payload_edit) -> bytes:
    """The archive ``blob`` with its data.pkl replaced by torch.save's pickle of the edited payload
    (its tensors keep their record names: torch numbers storages in the order it meets them)."""
    payload = torch.load(io.BytesIO(blob), weights_only=True)
    payload_edit(payload)
    fresh = read_records(_saved(payload))
    records = read_records(blob)
    name = next(n for n in records if n.endswith("/data.pkl"))
    records[name] = fresh["archive/data.pkl"]
    return zip_records(records)


def _encrypted_flag(blob: bytes) -> bytes:
    """``blob`` with general purpose bit 0 (encrypted) set in every member's local and central
    headers, data unchanged (zipfile cannot write it: it resets the flags)."""
    out = bytearray(blob)
    with zipfile.ZipFile(io.BytesIO(blob)) as z:
        at = z.start_dir
        for info in z.infolist():
            out[info.header_offset + 6] |= 0x1  # local header: flags at byte 6
            out[at + 8] |= 0x1  # central directory header: flags at byte 8
            at += 46 + sum(struct.unpack_from("<3H", blob, at + 28))  # name, extra, comment
    return bytes(out)


def _duplicate(blob: bytes) -> bytes:
    records = read_records(blob)
    name = next(n for n in records if n.endswith("/version"))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z, pytest.warns(UserWarning, match="Duplicate name"):
        for member, data in records.items():
            z.writestr(member, data)
        z.writestr(name, data=b"3\n")
    return buf.getvalue()


def _pickle_with(make) -> bytes:
    """An archive whose data.pkl is ``make()``'s protocol 2 pickle and whose records are none."""
    return zip_records({"x/data.pkl": pickle.dumps(make(), protocol=2), "x/version": b"3\n",
                 "x/byteorder": b"little"})


HOSTILE = [  # (case, make(lif checkpoint bytes) -> file bytes, what the message names)
    ("constants.pkl added", lambda b: _with(b, {"{}/constants.pkl": pickle.dumps(())}),
     "constants.pkl"),
    ("code/ added", lambda b: _with(b, {"{}/code/__torch__.py": b"x = 1\n"}), "code/__torch__.py"),
    ("extra/ added", lambda b: _with(b, {"{}/extra/notes.txt": b"hi"}), "extra/notes.txt"),
    ("a stray member", lambda b: _with(b, {"{}/data/0.bak": b"00"}), "data/0.bak"),
    ("a '..' member", lambda b: _with(b, {"{}/../evil": b"x"}), "../evil"),
    ("a member above the folder", lambda b: _with(b, {"../evil": b"x"}), "../evil"),
    ("an absolute member", lambda b: _with(b, {"/etc/evil": b"x"}), "/etc/evil"),
    ("a second folder", lambda b: _with(b, {"other/data.pkl": b"x"}), "other/data.pkl"),
    ("a NUL in a name", lambda b: _with(b, {"{}/data/9_py": b"x"}).replace(b"data/9_py",
                                                                          b"data/9\0py"),
     "name that torch reads"),
    ("a duplicate name", _duplicate, "duplicate name"),
    ("compressed records", lambda b: zip_records(read_records(b), compression=zipfile.ZIP_DEFLATED),
     "compressed"),
    ("encrypted records", _encrypted_flag, "encrypted"),
    ("a global that creates a file",
     lambda b: _replaced_pickle(b, lambda p: p["info"].update(x=_CreatesMarker())),
     f"global {open.__module__}.open"),
    ("a global in a plain payload", lambda b: _pickle_with(lambda: {"a": _CreatesMarker()}),
     f"global {open.__module__}.open"),
    ("a call of a storage type",
     lambda b: _pickle_with(lambda: {"a": _Reduce(torch.FloatStorage, (3,))}),
     "a call of torch.FloatStorage"),
    ("an object built with BUILD", lambda b: _pickle_with(lambda: {"a": _Reduce(
        torch._utils._rebuild_tensor_v2, (), state={"x": 1})}), "opcode BUILD"),
    ("a pickle larger than the bound",
     lambda b: _replaced_pickle(b, lambda p: p["info"].update(x="a" * PICKLE_MAX_BYTES)),
     f"more than the {PICKLE_MAX_BYTES}"),
    ("bytes after the pickle", lambda b: zip_records({k: v + b"junk" if k.endswith("data.pkl") else v
                                               for k, v in read_records(b).items()}),
     "bytes after the pickle's STOP"),
    ("a zip comment", lambda b: _comment(b), "zip directory"),
    ("text before the zip", lambda b: b"hello" + b, "not a torch zip archive"),
    ("another zip before the zip", lambda b: zip_records({"a": b"b"}) + b, "zip64 end records disagree"),
]


class _Reduce:
    """Pickles as ``func(*args)``, then BUILD with ``state`` when given."""

    def __init__(self, func, args: tuple, *, state: dict | None = None):
        self.func, self.args, self.state = func, args, state

    def __reduce__(self):
        return (self.func, self.args) if self.state is None else (self.func, self.args, self.state)


def _comment(blob: bytes) -> bytes:
    buf = io.BytesIO(blob)
    with zipfile.ZipFile(buf, "a") as z:
        z.comment = b"hello"
    return buf.getvalue()


@pytest.mark.parametrize("case, make, names", HOSTILE, ids=[c[0] for c in HOSTILE])
def test_hostile_checkpoints_are_refused_unread(files, tmp_path, capsys, monkeypatch, case, make,
                                                names):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "hostile.pt"
    path.write_bytes(make(files["lif"].read_bytes()))
    with pytest.raises(UserError) as info:
        read_checkpoint(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and names in message, message
    assert not (tmp_path / MARKER).exists()
    _refused_by_export(path, tmp_path, capsys, names=names)


def test_a_zip64_prefix_trick_is_refused(files, tmp_path):
    """Central directory offsets that only Python's prefix correction makes right: the end
    records must point at the directory right before them."""
    blob = bytearray(files["lif"].read_bytes())
    end = len(blob) - 22
    offset = struct.unpack_from("<Q", blob, end - 20 - 56 + 48)[0]
    struct.pack_into("<Q", blob, end - 20 - 56 + 48, offset - 1)  # zip64 directory offset
    path = tmp_path / "z.pt"
    path.write_bytes(bytes(blob))
    with pytest.raises(InputFileError, match="zip64 end records disagree|zip directory"):
        read_checkpoint(path)


def test_evaluate_and_convert_refuse_the_torchscript_archive(files, tmp_path, capsys,
                                                             monkeypatch):
    monkeypatch.chdir(tmp_path)
    for args in (["evaluate", str(files["script"]), "--limit", "4", "--json", "r.json"],
                 ["convert", str(files["script"]), "--out", "m.nir", "--steps", str(STEPS)]):
        capsys.readouterr()
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "refused member" in err, err
    assert sorted(os.listdir(tmp_path)) == []


# --------------------------------------------------------------------------------------------
# .npy inputs


def _npy_header(shape: tuple[int, ...], descr: str = "<f8") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False,
                                               "shape": shape})
    return buf.getvalue()


def _spikes(n: int = 64) -> np.ndarray:
    return (np.arange(STEPS * n).reshape(STEPS, n) % 3 == 0).astype(np.uint8)


NPY = [  # (case, file bytes, what the message says)
    ("a header claiming 10**12 elements", lambda: _npy_header((10**12,)), "8,000,000,000,000 bytes"),
    ("a header whose product overflows int64", lambda: _npy_header((2**40, 2**40, 2**40)),
     "but 0 bytes follow"),
    ("truncated data", lambda: _npy_bytes(_spikes())[:-10], "but 246 bytes follow"),
    ("an object array", lambda: _npy_bytes(np.array([{}, 1], dtype=object)), "dtype object"),
    ("a negative shape", lambda: _npy_header((-4, -64), "|u1") + bytes(256), "negative shape"),
    ("a header length of 4 GB", lambda: np.lib.format.magic(2, 0) + b"\xff\xff\xff\xff{",
     "header of 4,294,967,295 bytes"),
    ("not an array", lambda: b"hello", "not a readable .npy array"),
]


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=True)
    return buf.getvalue()


def _run_refuses(files, tmp_path, capsys, x: Path, names: str) -> None:
    out = tmp_path / "out.npy"
    capsys.readouterr()
    assert main(["run", str(files["nir"]), "--input", str(x), "--backend", "float",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("snn-deploy: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and str(x) in err and names in err, err
    assert not out.exists()


@pytest.mark.parametrize("case, make, names", NPY, ids=[c[0] for c in NPY])
def test_hostile_npy_files_are_refused_in_one_line(files, tmp_path, capsys, case, make, names):
    x = tmp_path / "x.npy"
    x.write_bytes(make())
    with pytest.raises(InputFileError) as info:
        api.load_npy(x)
    assert "\n" not in str(info.value) and names in str(info.value), str(info.value)
    _run_refuses(files, tmp_path, capsys, x, names)


def test_a_good_npy_runs_and_reads_as_numpy_does(files, tmp_path):
    x = tmp_path / "x.npy"
    for arr in (_spikes(), np.asfortranarray(_spikes().astype(">f4")), np.float32(1)):
        np.save(x, arr)
        got = api.load_npy(x)
        np.testing.assert_array_equal(got, np.load(x))
        assert got.dtype.isnative and got.flags.writeable
    np.save(x, _spikes())
    assert api.run(files["nir"], input_path=x, backend="float").output.shape == (STEPS, 10)


@contextlib.contextmanager
def _fifo(path: Path, *, release_after: float = 20.0) -> Iterator[Path]:
    """A FIFO at ``path``; should a reader block on it (the bug under test), a writer opens and
    closes it after ``release_after`` seconds, so that the test fails instead of hanging."""
    os.mkfifo(path)
    done = threading.Event()
    released = []

    def release() -> None:
        if not done.wait(release_after):
            with contextlib.suppress(OSError):
                os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
                released.append(True)

    thread = threading.Thread(target=release, daemon=True)
    thread.start()
    try:
        yield path
    finally:
        done.set()
        thread.join()
    assert not released, f"a reader blocked on the FIFO {path}"


def test_a_fifo_or_dev_zero_input_is_refused_unread(files, tmp_path, capsys):
    zero = tmp_path / "zero.npy"
    zero.symlink_to("/dev/zero")
    _run_refuses(files, tmp_path, capsys, zero, "not a regular file")
    with _fifo(tmp_path / "fifo.npy") as fifo:
        _run_refuses(files, tmp_path, capsys, fifo, "not a regular file")


@pytest.mark.parametrize("kind", ["fifo", "dev/zero", "10**12 elements"])
def test_deploy_refuses_a_hostile_calibration_file(files, tmp_path, capsys, kind):
    out = tmp_path / "m.deploy.h5"
    with contextlib.ExitStack() as stack:
        cal = tmp_path / "cal.npy"
        if kind == "fifo":
            stack.enter_context(_fifo(cal))
        elif kind == "dev/zero":
            cal.symlink_to("/dev/zero")
        else:
            cal.write_bytes(_npy_header((10**12, 64)))
        capsys.readouterr()
        assert main(["deploy", str(files["nir"]), "--profile", "loihi2", "--calibration", str(cal),
                     "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and str(cal) in err, err
    assert not out.exists()
