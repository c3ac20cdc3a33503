"""Domain exceptions shared by every stage.

Each one is a ``UserError``: bad input that the CLI reports as one line with exit status 2. Anything
else that escapes is an internal error (exit status 1).
"""

from __future__ import annotations


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
