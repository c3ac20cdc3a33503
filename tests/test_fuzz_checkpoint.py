"""Fuzzing of the checkpoint reader (``train.model.read_checkpoint`` and the model builders behind
it), through each command that reads a ``.pt``: ``export`` (a LIF checkpoint), ``evaluate`` (either
kind, via ``targets.load_target``) and ``convert`` (an ANN checkpoint).

A damaged checkpoint is refused with a UserError (one line, exit 2 at the CLI, no output file),
never another exception; what loads must also run. Inputs: mutations of real checkpoints
(truncation, bit flips, overwritten byte runs, drawn by hypothesis as in tests/test_fuzz.py), and
structured defects (wrong or missing keys, wrong tensor shapes and dtypes, NaN/Inf weights, absurd
sizes, files that are not torch archives, a plain pickle, a tensor claiming more bytes than its
record: a torch 2.3 bug, see ``test_torch_trusts_a_declared_storage_size``). Archives built to run
code or to be read differently by torch (TorchScript, extra members, hostile pickles) are in
tests/test_security_checkpoint.py."""

from __future__ import annotations

import copy
import io
import math
import pickle
import pickletools
import struct
import zipfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from snn_deploy import api
from snn_deploy.cli import main
from snn_deploy.convert import ann_api
from snn_deploy.errors import UserError
from snn_deploy.targets import load_target
from snn_deploy.train.ann import AnnConfig, AnnNetwork, mlp_layers, save_ann_checkpoint
from snn_deploy.train.model import LIFNetwork, ModelConfig, load_checkpoint, save_checkpoint

from tests.factories import EXAMPLES, damaged, mutations, read_records, zip_records

STEPS = 4


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    """Checkpoints as the writers make them: a recurrent 64-8-10 LIF network and a 64-8-10 ANN."""
    folder = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    lif = LIFNetwork(ModelConfig(input_size=64, hidden=(8,), output_size=10, steps=STEPS,
                                 recurrent=True))
    save_checkpoint(lif, folder / "lif.pt")
    ann = AnnNetwork(AnnConfig(input_shape=(64,), layers=mlp_layers((8,), 10), n_classes=10))
    save_ann_checkpoint(ann, folder / "ann.pt")
    return {kind: (folder / f"{kind}.pt").read_bytes() for kind in ("lif", "ann")}


def _one_line(exc: UserError) -> None:
    assert str(exc) and "\n" not in str(exc), repr(str(exc))


def _reads_or_refuses(path: Path, out: Path) -> str:
    """Every checkpoint reader on ``path``; what loads runs (forward pass, export, convert).
    Returns "refused" or the kind that loaded."""
    try:
        target = load_target(path)
    except UserError as exc:
        _one_line(exc)
        target = None
    for reader in (load_checkpoint, ann_api.load_ann):
        try:
            reader(path)
        except UserError as exc:
            _one_line(exc)
    if target is None:
        return "refused"
    x = torch.zeros(STEPS, 2, target.input_size)
    if target.checkpoint is not None:
        assert target.checkpoint(x).shape == (STEPS, 2, target.checkpoint.config.output_size)
        write = lambda: api.export(path, out)  # noqa: E731
    else:
        assert target.ann(x[0]).shape[0] == 2
        write = lambda: ann_api.convert(path, out=out, steps=STEPS,  # noqa: E731
                                        calibration_samples=16)
    try:
        write()
    except UserError as exc:
        _one_line(exc)
        assert not out.exists(), f"{out} left behind after: {exc}"
    return target.kind


# --------------------------------------------------------------------------------------------
# Mutated files


@pytest.mark.parametrize("kind", ["lif", "ann"])
@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.data_too_large])
@given(data=st.data())
def test_damaged_checkpoints_are_refused_or_run(originals, kind, data, tmp_path):
    blob = originals[kind]
    path = tmp_path / "m.pt"
    path.write_bytes(damaged(blob, data.draw(mutations(len(blob)))))
    out = tmp_path / "out.nir"
    out.unlink(missing_ok=True)
    _reads_or_refuses(path, out)


# --------------------------------------------------------------------------------------------
# Structured defects: torch archives that load, holding the wrong thing


def _payload(originals, kind: str, tmp_path: Path) -> dict:
    path = tmp_path / f"{kind}-orig.pt"
    path.write_bytes(originals[kind])
    return torch.load(path, weights_only=True)


DELETE = object()


def _set(where: str, value):
    """An edit of a payload: ``where`` is "key" or "key.subkey"; DELETE deletes it."""
    def edit(payload: dict) -> None:
        *parents, last = where.split(".")
        d = payload
        for part in parents:
            d = d[part]
        if value is DELETE:
            del d[last]
        else:
            d[last] = value
    return edit


def _first_weight(change):
    """Edit the first weight tensor: ``change(tensor) -> tensor``."""
    def edit(payload: dict) -> None:
        key = next(iter(payload["state_dict"]))
        payload["state_dict"][key] = change(payload["state_dict"][key].clone())
    return edit


def _poke(value: float):
    def change(t: torch.Tensor) -> torch.Tensor:
        t.view(-1)[0] = value
        return t
    return change


COMMON = [  # (case, edit) valid for both kinds
    ("no config", _set("config", DELETE)),
    ("no state_dict", _set("state_dict", DELETE)),
    ("config is a list", _set("config", [1, 2])),
    ("config is a number", _set("config", 3)),
    ("state_dict is a list", _set("state_dict", [1, 2])),
    ("a weight is a string", _first_weight(lambda t: "weights")),
    ("a weight is missing", lambda p: p["state_dict"].pop(next(iter(p["state_dict"])))),
    ("an extra weight", _set("state_dict.extra", torch.zeros(2))),
    ("a non-string weight key", lambda p: p["state_dict"].__setitem__(7, torch.zeros(2))),
    ("a weight transposed", _first_weight(lambda t: t.T.contiguous())),
    ("a weight of wrong shape", _first_weight(lambda t: torch.zeros(3, 3))),
    ("a weight flattened", _first_weight(lambda t: t.reshape(-1))),
    ("an int8 weight", _first_weight(lambda t: t.to(torch.int8))),
    ("a bool weight", _first_weight(lambda t: t > 0)),
    ("a complex weight", _first_weight(lambda t: t.to(torch.complex64))),
    ("a NaN weight", _first_weight(_poke(math.nan))),
    ("an Inf weight", _first_weight(_poke(math.inf))),
    ("a -Inf weight", _first_weight(_poke(-math.inf))),
    ("expanded weights claiming 5 GB", lambda p: _expanded(p)),
    ("unknown config key", _set("config.surprise", 1)),
    ("no format tag", _set("format", DELETE)),
    ("another format tag", _set("format", "something-else")),
    ("version 2", _set("version", 2)),
    ("version as text", _set("version", "1")),
    ("unknown kind", _set("kind", "transformer")),
    ("numeric kind", _set("kind", 3)),
]


def _expanded(payload: dict) -> None:
    """A 2**24-neuron hidden layer whose weights are one stored zero, expanded (stride 0) to the
    shapes the config asks for: torch loads it from a few KB; building the model would take 5 GB."""
    cfg = payload["config"]
    if "hidden" in cfg:
        cfg["hidden"] = [2**24]
        cfg["recurrent"] = False
    else:
        cfg["layers"] = ["linear:16777216", "relu", "linear:10"]
    with torch.device("meta"):
        model = (LIFNetwork(ModelConfig.from_dict(cfg)) if "hidden" in cfg
                 else AnnNetwork(AnnConfig.from_dict(cfg)))
    payload["state_dict"] = {k: torch.zeros(1).expand(v.shape) for k, v in model.state_dict().items()}


LIF_CONFIG = [  # config.<key> = value, a LIF checkpoint
    *((f"input_size={v!r}", "input_size", v) for v in (0, -1, 10**9, "64", 2.5, None, True)),
    *((f"hidden={v!r}", "hidden", v) for v in ([], [-3], [0], [10**9], [2**40], "ab", 5, [[8]],
                                               [8.0])),
    *((f"output_size={v!r}", "output_size", v) for v in (0, -2, 10**10)),
    *((f"{k}={v!r}", k, v) for k in ("dt", "tau_syn", "tau_mem")
      for v in (0.0, -1e-3, math.nan, math.inf, "x")),
    *((f"v_th={v!r}", "v_th", v) for v in (math.nan, -math.inf, "a")),
    *((f"steps={v!r}", "steps", v) for v in (0, -5, "a", 3.5)),
    *((f"{k}={v!r}", k, v) for k in ("encoding", "dataset", "decoder") for v in (3, None)),
    ("decoder='nope'", "decoder", "nope"),
    ("recurrent='yes'", "recurrent", "yes"),
    ("decoder_beta=nan", "decoder_beta", math.nan),
]
LIF_MISSING = ["input_size", "output_size"]  # the config keys without a default
ANN_CONFIG = [
    *((f"input_shape={v!r}", "input_shape", v) for v in ([], [0], [-1], [10**9], "ab", 5, [8, 8])),
    *((f"layers={v!r}", "layers", v) for v in ([], ["linear:-1"], ["linear:1000000000"], "abc", 5,
                                               ["conv:8:3"], ["linear:8", "relu"], ["magic:3"])),
    *((f"n_classes={v!r}", "n_classes", v) for v in (0, -1, 10**9, "a", 3)),
]
ANN_MISSING = ["input_shape", "layers", "n_classes"]

CASES = [*((f"lif {c}", "lif", e) for c, e in COMMON), *((f"ann {c}", "ann", e) for c, e in COMMON),
         *((f"lif config {c}", "lif", _set(f"config.{k}", v)) for c, k, v in LIF_CONFIG),
         *((f"lif config without {k}", "lif", _set(f"config.{k}", DELETE)) for k in LIF_MISSING),
         *((f"ann config {c}", "ann", _set(f"config.{k}", v)) for c, k, v in ANN_CONFIG),
         *((f"ann config without {k}", "ann", _set(f"config.{k}", DELETE)) for k in ANN_MISSING)]


@pytest.mark.parametrize("case, kind, edit", CASES, ids=[c[0] for c in CASES])
def test_defective_checkpoints_are_refused(originals, tmp_path, case, kind, edit):
    payload = copy.deepcopy(_payload(originals, kind, tmp_path))
    edit(payload)
    path = tmp_path / "bad.pt"
    torch.save(payload, path)
    with pytest.raises(UserError) as info:
        load_target(path)
    _one_line(info.value)
    reader = load_checkpoint if kind == "lif" else ann_api.load_ann
    with pytest.raises(UserError) as info:
        reader(path)
    _one_line(info.value)


# --------------------------------------------------------------------------------------------
# Files that are not torch archives, and archives that lie about their sizes




MARK = 4099  # the numel of the tensor whose declared size is then changed (unique in the pickle)


def _claiming(numel: int) -> bytes:
    """A checkpoint whose one tensor ``w`` declares ``numel`` float32 elements in its pickle while
    its record holds MARK: torch.save's archive with the pickle's two MARK integers (storage size
    and tensor size) rewritten."""
    buf = io.BytesIO()
    torch.save({"format": "snn-deploy-checkpoint", "version": 1, "kind": "lif",
                "w": torch.zeros(MARK)}, buf)
    records = read_records(buf.getvalue())
    name = next(n for n in records if n.endswith("data.pkl"))
    pkl = records[name]
    hits = [pos for op, arg, pos in pickletools.genops(pkl) if op.name == "BININT2" and arg == MARK]
    assert len(hits) == 2, hits
    for pos in reversed(hits):
        pkl = pkl[:pos] + b"J" + struct.pack("<i", numel) + pkl[pos + 3:]
    records[name] = pkl
    return zip_records(records)


HUGE = 2**30  # float32 elements: 4 GB


def test_torch_trusts_a_declared_storage_size(tmp_path):
    """The torch 2.3 bug the reader works around (by loading with mmap=True): a plain
    ``torch.load(weights_only=True)`` hands back a tensor of the pickle's declared size over a
    record of 16 KB; reading it reads past the buffer (a segfault, measured). Only its size is
    looked at here. When this fails, torch checks the size itself."""
    path = tmp_path / "claims.pt"
    path.write_bytes(_claiming(HUGE))
    w = torch.load(path, weights_only=True)["w"]
    assert w.numel() == HUGE and w.untyped_storage().nbytes() > 100 * path.stat().st_size


def _bomb() -> bytes:
    """A torch archive whose data record is 64 MB of zeros, deflated to a few dozen KB."""
    blob = _claiming(2**24)
    records = read_records(blob)
    data = next(n for n in records if n.endswith("/data/0"))
    records[data] = bytes(4 * 2**24)
    return zip_records(records, compression=zipfile.ZIP_DEFLATED)


NOT_CHECKPOINTS = [
    ("empty", lambda o: b""),
    ("text", lambda o: b"hello world\n"),
    ("plain pickle of a payload", lambda o: pickle.dumps({"format": "snn-deploy-checkpoint",
                                                          "version": 1, "config": {}})),
    ("zip that is not a torch archive", lambda o: zip_records({"hello.txt": b"hi"})),
    ("torch archive without its pickle",
     lambda o: zip_records({k: v for k, v in read_records(o["lif"]).items() if not k.endswith("data.pkl")})),
    ("torch archive without its data",
     lambda o: zip_records({k: v for k, v in read_records(o["lif"]).items() if "/data/" not in k})),
    ("a NIR file renamed .pt", lambda o: b"\x89HDF\r\n\x1a\n" + bytes(200)),
    ("a tensor claiming 4 GB over a 16 KB record", lambda o: _claiming(HUGE)),
    ("a record inflating to 64 MB", lambda o: _bomb()),
    ("a tensor payload", lambda o: _saved(torch.zeros(3))),
    ("a list payload", lambda o: _saved([1, 2, 3])),
]


def _saved(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


@pytest.mark.parametrize("case, make", NOT_CHECKPOINTS, ids=[c[0] for c in NOT_CHECKPOINTS])
def test_files_that_are_not_checkpoints_are_refused(originals, tmp_path, case, make):
    path = tmp_path / "bad.pt"
    path.write_bytes(make(originals))
    for reader in (load_target, load_checkpoint, ann_api.load_ann):
        with pytest.raises(UserError) as info:
            reader(path)
        _one_line(info.value)


# --------------------------------------------------------------------------------------------
# The commands


CLI_CASES = [  # a sample of the classes above, through `snn-deploy export|evaluate|convert`
    ("truncated", lambda o: o["lif"][: len(o["lif"]) // 2]),
    ("plain pickle", lambda o: pickle.dumps({"a": 1})),
    ("claims 4 GB", lambda o: _claiming(HUGE)),
    ("zip bomb", lambda o: _bomb()),
    ("NaN weight", "nan"),
    ("absurd hidden size", "huge"),
    ("missing state_dict", "nostate"),
]


@pytest.mark.parametrize("case, make", CLI_CASES, ids=[c[0] for c in CLI_CASES])
@pytest.mark.parametrize("command", ["export", "evaluate", "convert"])
def test_commands_refuse_a_bad_checkpoint_in_one_line(originals, tmp_path, capsys, case, make,
                                                      command):
    path = tmp_path / "bad.pt"
    if callable(make):
        path.write_bytes(make(originals))
    else:
        kind = "ann" if command == "convert" else "lif"
        payload = copy.deepcopy(_payload(originals, kind, tmp_path))
        key = next(iter(payload["state_dict"]))
        if make == "nan":
            payload["state_dict"][key].view(-1)[0] = math.nan
        elif make == "huge":
            payload["config"].update({"hidden": [10**9]} if kind == "lif" else
                                      {"layers": ["linear:1000000000", "relu", "linear:10"]})
        else:
            del payload["state_dict"]
        torch.save(payload, path)
    out = tmp_path / "out"
    out.mkdir()
    args = {"export": ["export", path, "--out", out / "m.nir"],
            "evaluate": ["evaluate", path, "--limit", "4", "--json", out / "r.json"],
            "convert": ["convert", path, "--out", out / "m.nir", "--steps", str(STEPS)]}[command]
    capsys.readouterr()
    assert main([str(a) for a in args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("snn-deploy: error: ") and err.count("\n") == 1, err
    assert str(path) in err, err
    assert list(out.iterdir()) == []
