"""Domain exceptions shared by every stage.

Each one is a ``UserError``: bad input that the CLI reports as one line with exit status 2. Anything
else that escapes is an internal error (exit status 1).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator


class UserError(Exception):
    """Bad input from the user: a missing or corrupt file, a wrong format, an impossible setting."""


class InputFileError(UserError):
    """A file is missing, unreadable, or not of the expected format."""


class UnsupportedNode(UserError):
    """A NIR graph holds nodes (or a topology) that the target cannot run."""


class ProfileError(UserError):
    """A hardware profile is unknown, unreadable or incomplete."""


class QuantizationError(UserError):
    """A graph cannot be represented in the profile's number formats."""


class BackendUnavailable(UserError):
    """A backend cannot run here (a missing package or device)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived. Raised like Ctrl-C's KeyboardInterrupt, so that everything that
    cleans up after Ctrl-C (Lava runtimes stopped, temporary files removed) runs for it too; the
    CLI then exits with 128 + the signal's number."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated(signum)


@contextlib.contextmanager
def terminate_raises(*, only_default: bool = False) -> Iterator[None]:
    """SIGTERM and SIGHUP raise ``Terminated`` inside the block (main thread only), so that they
    unwind it as Ctrl-C does instead of killing the process mid-way; the handlers before are
    restored afterwards. ``only_default``: leave alone a signal someone else handles already (a
    library run inside the CLI, whose own handlers stay)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, _raise_terminated)
                for signum in (signal.SIGTERM, signal.SIGHUP)
                if not only_default or signal.getsignal(signum) == signal.SIG_DFL}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def brief(value: object) -> str:
    """A value from a file as one short line for a message."""
    text = " ".join(repr(value).split())
    return text if len(text) <= 60 else text[:57] + "..."
