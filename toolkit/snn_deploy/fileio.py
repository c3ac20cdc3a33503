"""Safe file boundaries: outputs checked before work and written atomically (complete or not at
all, several together or none), inputs read only when they are regular files of bounded size."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

from snn_deploy.errors import InputFileError, UserError

# A temporary output is named ".NAME.XXXXXXXX.tmp" next to NAME (tempfile.mkstemp): 14 bytes more.
_TMP_NAME_EXTRA = 14
# Files written inside ``all_or_nothing`` blocks, innermost last: (temporary, final) pairs and the
# folders the block created.
_PENDING: list[tuple[list[tuple[Path, Path]], list[Path]]] = []


def _nearest_existing(path: Path) -> Path:
    parent = path.parent
    while not os.path.lexists(parent):
        parent = parent.parent
    return parent


def check_writable(path: str | Path, *, inputs: Iterable[str | Path] = ()) -> None:
    """Refuse, before any work is done, an output path that cannot be written or must not be.

    Refused: a folder; an existing file that is not a regular file (a device such as /dev/null, a
    FIFO: replacing it would destroy it); the same file as one of the command's ``inputs``
    (writing it would destroy the input); a name too long for the file system; a folder this
    process cannot create files in (tried, not guessed from permission bits: root passes those).
    """
    path = Path(path)
    _check_name_lengths(path)
    if path.is_dir():
        raise UserError(f"cannot write {path}: it is a folder")
    if os.path.lexists(path):
        try:
            mode = os.stat(path).st_mode
        except OSError as exc:
            raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
        if not stat.S_ISREG(mode):
            raise UserError(f"cannot write {path}: it exists and is not a regular file (a device,"
                            " FIFO or socket); refused so that it is not replaced")
        for source in inputs:
            with contextlib.suppress(OSError):
                if os.path.samefile(path, source):
                    raise UserError(f"cannot write {path}: it is the input {source} of this command"
                                    " (writing it would destroy the input); choose another name")
    parent = _nearest_existing(path)
    if not parent.is_dir():
        raise UserError(f"cannot write {path}: {parent} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".snn-deploy-probe.", dir=parent)
    except OSError as exc:
        raise UserError(f"cannot write {path}: cannot create files in {parent}"
                        f" ({exc.strerror or exc})") from None
    os.close(fd)
    os.unlink(probe)


def _check_name_lengths(path: Path) -> None:
    """Refuse a path with a component too long for the file system (the output's own name also
    needs room for its temporary twin's), before anything stats it."""
    try:
        name_max = int(os.pathconf(".", "PC_NAME_MAX"))
    except (OSError, ValueError):
        name_max = 255
    parts = path.parts
    for i, part in enumerate(parts):
        extra = _TMP_NAME_EXTRA + 1 if i == len(parts) - 1 else 0
        size = len(os.fsencode(part))
        if size + extra > name_max:
            raise UserError(f"cannot write {part[:24]}...: a name of {size} bytes; this file"
                            f" system allows {name_max - extra} for it")


def _make_parents(path: Path) -> list[Path]:
    """Create the missing folders above ``path``; return those created, outermost first."""
    created = []
    parent = path.parent
    while not os.path.lexists(parent):
        created.append(parent)
        parent = parent.parent
    path.parent.mkdir(parents=True, exist_ok=True)
    return created[::-1]


@contextlib.contextmanager
def all_or_nothing() -> Iterator[None]:
    """Every file that ``atomic_path`` writes inside the block appears when the block succeeds, all
    together; if it fails (an error, Ctrl-C, SIGTERM), none does, and folders it created go too."""
    written: list[tuple[Path, Path]] = []
    created: list[Path] = []
    _PENDING.append((written, created))
    ok = False
    try:
        yield
        ok = True
    finally:
        _PENDING.remove((written, created))
        if ok:
            for tmp, path in written:
                os.replace(tmp, path)
        else:
            for tmp, _ in written:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            for folder in reversed(created):
                with contextlib.suppress(OSError):
                    folder.rmdir()  # only when empty


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto ``path`` only on success
    (inside ``all_or_nothing``: when the whole block succeeds)."""
    path = Path(path)
    check_writable(path)
    try:
        created = _make_parents(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
    os.close(fd)
    kept = False
    try:
        yield Path(tmp)
        if _PENDING:
            _PENDING[-1][0].append((Path(tmp), path))
            _PENDING[-1][1].extend(created)
            kept = True
        else:
            os.replace(tmp, path)
    finally:
        if not kept and os.path.exists(tmp):
            os.unlink(tmp)


def regular_input(path: str | Path, *, what: str = "file") -> Path:
    """``path`` as a regular file (symlinks followed), or one clear InputFileError: a folder, FIFO,
    device or socket is never read (a FIFO blocks the reader, /dev/zero never ends)."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise InputFileError(f"{what} not found: {path}") from None
    except OSError as exc:
        raise InputFileError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file (device, FIFO or socket)"
        raise InputFileError(f"{what} {path} is {kind}")
    return path


def read_bounded(path: str | Path, *, limit: int, what: str = "file") -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes; anything larger is refused unread."""
    path = regular_input(path, what=what)
    try:
        with path.open("rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise InputFileError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise InputFileError(f"{what} {path} is larger than {limit:,} bytes: refused")
    return data


def read_text_bounded(path: str | Path, *, limit: int, what: str = "file") -> str:
    """``read_bounded`` decoded as UTF-8, with one clear error for other bytes."""
    data = read_bounded(path, limit=limit, what=what)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputFileError(f"{what} {path} is not UTF-8 text") from None
