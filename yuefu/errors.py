"""Errors that yuefu reports to a person: each says in one line what went wrong and, where it can, what to do.

Everything a user can cause (a wrong argument, a missing model, a bad checkpoint or audio file) raises a
:class:`YuefuError` subclass. The CLI prints ``str(error)`` on one line, without a traceback, and exits with the
class's ``exit_code``; anything else that escapes is a bug in yuefu and keeps its traceback.
"""

from __future__ import annotations


class YuefuError(Exception):
    """Base of every user-facing yuefu error."""

    exit_code: int = 1

    def __init__(self, message: str) -> None:
        # One line, whatever the caller passed: the CLI prints it as is.
        super().__init__(" ".join(part.strip() for part in str(message).splitlines() if part.strip()))

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class InvalidArgumentError(YuefuError, ValueError):
    """An argument has a value yuefu cannot use (also a ValueError, for callers that catch those)."""

    exit_code = 2


class ModelNotFoundError(YuefuError):
    """A model name or path that is neither a local folder/file nor a known hub id."""

    exit_code = 3


class CheckpointError(YuefuError):
    """A checkpoint that is missing, truncated, corrupt, of an unknown layout, or refused as unsafe."""

    exit_code = 4


class AudioFileError(YuefuError):
    """An audio file that cannot be read or written."""

    exit_code = 5


__all__ = ["AudioFileError", "CheckpointError", "InvalidArgumentError", "ModelNotFoundError", "YuefuError"]
