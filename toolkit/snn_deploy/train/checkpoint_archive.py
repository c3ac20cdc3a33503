"""The checkpoint archive, vetted before torch opens it (train stage, reading side).

torch 2.3's ``torch.load(..., weights_only=True)`` hands any archive holding ``constants.pkl`` to
``torch.jit.load``, which ignores ``weights_only`` and runs the TorchScript module's
``__setstate__`` (tests/test_security_checkpoint.py shows it). So a checkpoint is accepted only
as the zip that ``torch.save`` writes for a dict of tensors and plain values, and its pickle only
with the opcodes and callables such a payload needs; everything else is refused unread.
"""

from __future__ import annotations

import collections
import dataclasses
import pickletools
import re
import struct
import zipfile
from pathlib import Path
from typing import BinaryIO

from snn_deploy.errors import InputFileError


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# The members torch 2.3's torch.save writes for a dict of tensors and primitives, all under one
# top-level folder (named after the file): the pickle, one record per storage, and metadata.
# Nothing else is read: "constants.pkl" and "code/" make torch.load run TorchScript; newer torch
# adds ".format_version" and ".storage_alignment", which test_our_writers_make_only_allowed_members
# (tests/test_security_checkpoint.py) reports when the torch pin moves.
CHECKPOINT_MEMBERS = re.compile(r"data\.pkl|data/[0-9]+|byteorder|version|\.data/serialization_id",
                                re.ASCII)
# Our data.pkl takes about 100 bytes per tensor plus config and info (818 bytes for a recurrent
# 64-8-10 LIF network, 844 for a 64-8-10 ANN): 4 MiB bounds what unpickling builds, far above that.
PICKLE_MAX_BYTES = 4 * 2**20
# The callables a checkpoint's pickle may call (REDUCE): what torch.save emits for a tensor and
# for its empty backward-hooks dict.
PICKLE_CALLABLES = frozenset({"torch._utils._rebuild_tensor_v2", "collections.OrderedDict"})
# Storage types, named in a tensor's persistent id (never called): floating point only, as
# ``load_weights`` refuses every other dtype anyway.
PICKLE_STORAGES = frozenset({"torch.FloatStorage", "torch.DoubleStorage", "torch.HalfStorage",
                             "torch.BFloat16Storage"})
# Opcodes that build plain data (None, bools, ints, floats, text, tuples, lists, dicts), mark
# the stack or use the memo: with GLOBAL and REDUCE, checked apart, every opcode torch.save's
# pickle (protocol 2) holds for our payloads. torch 2.3's weights-only unpickler refuses
# protocol 4 (FRAME) itself, so STACK_GLOBAL and MEMOIZE are never needed.
PICKLE_DATA_OPS = frozenset({
    "PROTO", "STOP", "MARK", "NONE", "NEWTRUE", "NEWFALSE", "BININT", "BININT1", "BININT2",
    "LONG1", "BINFLOAT", "BINUNICODE", "EMPTY_TUPLE", "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3",
    "EMPTY_LIST", "APPEND", "APPENDS", "EMPTY_DICT", "SETITEM", "SETITEMS", "BINPERSID", "BINPUT",
    "LONG_BINPUT", "BINGET", "LONG_BINGET"})
_ZIP_END = struct.Struct("<4s4H2LH")  # end of central directory record (APPNOTE 4.3.16)
_ZIP64_LOCATOR = struct.Struct("<4sLQL")  # zip64 end of central directory locator (4.3.15)
_ZIP64_END = struct.Struct("<4sQ2H2L4Q")  # zip64 end of central directory record (4.3.14)
_ZIP_ENCRYPTED, _ZIP_UTF8 = 0x1, 0x800  # general purpose flag bits 0 and 11 (APPNOTE 4.4.4)


def check_archive(path: Path) -> None:
    """Refuse, before torch opens it, any file but a zip of what ``torch.save`` writes for a dict:
    the members of ``CHECKPOINT_MEMBERS`` under one folder, stored (not compressed or encrypted),
    no duplicates, CRCs intact, a ``data.pkl`` under ``PICKLE_MAX_BYTES`` that
    ``_refused_in_pickle`` accepts, and a central directory that Python's zipfile and torch's
    miniz find in the same place (no prefix, no comment), so both read the same members."""
    size = path.stat().st_size
    try:
        with path.open("rb") as f:
            if f.read(4) != b"PK\x03\x04":  # torch's own test for its format, before the legacy one
                raise InputFileError(f"{path} is not a readable snn-deploy checkpoint: not a torch"
                                     " zip archive")
            _check_zip_end(f, size, path)
        with zipfile.ZipFile(path) as archive:
            _check_members(archive, size, path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError,
            struct.error, UnicodeDecodeError) as exc:
        raise InputFileError(f"{path} is not a readable snn-deploy checkpoint:"
                             f" {first_line(exc)}") from None


def _check_zip_end(f: BinaryIO, size: int, path: Path) -> None:
    """The end records sit at the very end (no comment) and the central directory right before
    them (no prefix): where Python's zipfile and miniz (torch) both look, so they agree."""
    if size < _ZIP_END.size:
        raise InputFileError(f"{path} is not a readable snn-deploy checkpoint: truncated zip")
    f.seek(size - _ZIP_END.size)
    sig, disk, cd_disk, n_disk, n, cd_size, cd_offset, comment = _ZIP_END.unpack(f.read(_ZIP_END.size))
    end = size - _ZIP_END.size
    locator_at = end - _ZIP64_LOCATOR.size
    if locator_at >= 0:
        f.seek(locator_at)
        lsig, _, zip64_at, _ = _ZIP64_LOCATOR.unpack(f.read(_ZIP64_LOCATOR.size))
        if lsig == b"PK\x06\x07":
            f.seek(zip64_at)
            (sig64, _, _, _, disk, cd_disk, n_disk, n64, cd_size64,
             cd_offset64) = _ZIP64_END.unpack(f.read(_ZIP64_END.size))
            if sig64 != b"PK\x06\x06" or zip64_at != locator_at - _ZIP64_END.size or \
                    n not in (n64, 0xFFFF) or cd_size not in (cd_size64, 0xFFFFFFFF) or \
                    cd_offset not in (cd_offset64, 0xFFFFFFFF):
                raise InputFileError(f"{path} is not a readable snn-deploy checkpoint: its zip64"
                                     " end records disagree")
            n, cd_size, cd_offset, end = n64, cd_size64, cd_offset64, zip64_at
    if sig != b"PK\x05\x06" or comment or disk or cd_disk or n_disk != n or \
            cd_offset + cd_size != end:
        raise InputFileError(f"{path} is not a readable snn-deploy checkpoint: its zip directory"
                             " is not where torch.save puts it (a comment, a prefix or a split"
                             " archive)")


def _check_members(archive: zipfile.ZipFile, size: int, path: Path) -> None:
    """Every member's name, flags and size checked (``_member_problem``) before any is read, then
    every CRC verified and data.pkl's contents checked (``_refused_in_pickle``)."""
    infos = archive.infolist()
    folder = infos[0].filename.split("/", 1)[0] if infos else ""
    counts = collections.Counter(info.filename for info in infos)
    one_encoding = len({info.flag_bits & _ZIP_UTF8 for info in infos}) == 1
    for info in infos:
        why = _member_problem(info, folder=folder, size=size, duplicate=counts[info.filename] > 1,
                              one_encoding=one_encoding)
        if why is not None:
            raise InputFileError(f"{path} is not a readable snn-deploy checkpoint: refused member"
                                 f" {info.orig_filename!r}: {why}")
    pkl: bytes | None = None
    for info in infos:
        with archive.open(info) as member:  # checks the local header's name, and the CRC at EOF
            if info.filename != f"{folder}/data.pkl":
                while member.read(2**20):
                    pass
                continue
            pkl = member.read()
        refused = _refused_in_pickle(pkl)
        if refused is not None:
            raise InputFileError(f"{path} is not a readable snn-deploy checkpoint: refused member"
                                 f" {info.filename!r}: it holds {refused}, which a weights-only"
                                 " checkpoint never needs")
    if pkl is None:
        raise InputFileError(f"{path} is not a readable snn-deploy checkpoint: no data.pkl")


def _member_problem(info: zipfile.ZipInfo, *, folder: str, size: int, duplicate: bool,
                    one_encoding: bool) -> str | None:
    """Why the archive member ``info`` is refused, or None. ``folder``: the first member's top-level
    folder, torch's archive name; ``size``: the file's."""
    name = info.filename
    if duplicate:
        return "a duplicate name"
    if info.orig_filename != name or not one_encoding:  # a NUL, or names in two encodings
        return "a name that torch reads differently"
    if folder in ("", ".", "..") or "\\" in folder or not folder.isprintable() or \
            not name.startswith(f"{folder}/"):
        return "not inside the archive's one folder"
    if not CHECKPOINT_MEMBERS.fullmatch(name[len(folder) + 1:]):
        return "not a member of a weights-only torch.save checkpoint (TorchScript or other code)"
    if info.flag_bits & _ZIP_ENCRYPTED:
        return "encrypted"
    if info.compress_type != zipfile.ZIP_STORED:
        return "compressed (torch.save stores its records)"
    if info.file_size > size:
        return f"{info.file_size} bytes, more than the file's {size}"
    if name.endswith("/data.pkl") and info.file_size > PICKLE_MAX_BYTES:
        return f"{info.file_size} bytes, more than the {PICKLE_MAX_BYTES} a checkpoint's pickle needs"
    return None


@dataclasses.dataclass(frozen=True)
class _Global:
    """A GLOBAL's result on the simulated pickle stack."""

    ref: str


_MARK, _VALUE = object(), object()  # a MARK and any other object, on the simulated stack


def _refused_in_pickle(pkl: bytes) -> str | None:
    """What in the pickle ``pkl`` a checkpoint payload does not need ("global os.system",
    "opcode BUILD", ...), or None. The stack and memo are simulated with stand-ins, so each REDUCE
    is known to call one of ``PICKLE_CALLABLES``; every other global must be one of
    ``PICKLE_STORAGES``."""
    stack: list[object] = []
    memo: dict[int, object] = {}
    end = -1
    try:
        for op, arg, pos in pickletools.genops(pkl):
            end = pos
            if op.name == "GLOBAL":
                ref = str(arg).replace(" ", ".")
                if ref not in PICKLE_CALLABLES | PICKLE_STORAGES:
                    return f"global {ref}"
                stack.append(_Global(ref))
            elif op.name == "REDUCE":
                stack.pop()
                func = stack.pop()
                if not isinstance(func, _Global) or func.ref not in PICKLE_CALLABLES:
                    return f"a call of {func.ref if isinstance(func, _Global) else 'a non-global'}"
                stack.append(_VALUE)
            elif op.name not in PICKLE_DATA_OPS:
                return f"opcode {op.name}"
            elif op.name in ("BINPUT", "LONG_BINPUT"):
                memo[int(arg)] = stack[-1]
            elif op.name in ("BINGET", "LONG_BINGET"):
                stack.append(memo[int(arg)])
            else:  # the opcode's stack effect, as pickletools describes it
                before = op.stack_before
                if pickletools.markobject in before:
                    while stack.pop() is not _MARK:
                        pass
                    before = before[:before.index(pickletools.markobject)]
                if len(stack) < len(before):
                    return "a malformed pickle (stack underflow)"
                del stack[len(stack) - len(before):]
                stack.extend(_MARK if item is pickletools.markobject else _VALUE
                             for item in op.stack_after)
    except (ValueError, IndexError, KeyError) as exc:  # truncated, stack underflow, unknown memo
        return f"a malformed pickle ({first_line(exc)})"
    if end != len(pkl) - 1:
        return "bytes after the pickle's STOP"
    return None


