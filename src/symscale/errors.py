"""The project's exception for user mistakes.

A `SymscaleError` says what was wrong, what was received and what was expected. The CLI prints it as one
line and exits non-zero; it never shows a traceback for it. Anything else is a bug and keeps its traceback,
except a fault of the file system that is the user's to fix (disk full, quota, read-only, permission
denied): the CLI and the study recognise it anywhere in an exception's chain (`filesystem_fault`) and say
it in one line.
"""

from __future__ import annotations

import errno
import io
import os
import sqlite3


class SymscaleError(ValueError):
    """A user-facing error: bad input, a missing file, an invalid configuration."""

    @classmethod
    def invalid(cls, what: str, got: object, expected: str) -> SymscaleError:
        """`invalid('width', 0, 'an integer >= 1')` -> "invalid width: got 0, expected an integer >= 1"."""
        return cls(f"invalid {what}: got {got!r}, expected {expected}")


# errno of the file-system faults that are a user's to fix, and how the one line names them
FILESYSTEM_ERRNOS = {
    errno.ENOSPC: "no space left on device (disk full)",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}
# SQLite's codes for the same faults (a catalogue or an ASE .db on a full or read-only disk)
_SQLITE_CODES = {13: "database or disk is full", 8: "read-only database", 3: "permission denied"}


def filesystem_fault(err: BaseException | None, doing: str = "while writing") -> str | None:
    """The one line for a file-system fault anywhere in `err`'s chain (disk full, quota, read-only file
    system, permission denied), naming the path and, from `doing`, what was being written; None for
    anything else (a bug keeps its traceback)."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        line = _one_fault(err, doing)
        if line is not None:
            return line
        err = err.__cause__ or err.__context__
    return None


def _one_fault(err: BaseException, what: str) -> str | None:
    if isinstance(err, OSError) and err.errno in FILESYSTEM_ERRNOS:
        reason = FILESYSTEM_ERRNOS[err.errno]
        filename = err.filename if err.filename is not None else _open_file_in(err.__traceback__)
        if filename is None:
            return f"{reason} {what} (the error does not name the file)"
        paths = f"{filename}" + (f" -> {err.filename2}" if err.filename2 else "")
        verb = "access" if err.errno in (errno.EACCES, errno.EPERM) else "write"
        return f"{reason}: cannot {verb} {paths} ({what})"  # the cause first: it survives a cut reason
    if isinstance(err, sqlite3.Error) and getattr(err, "sqlite_errorcode", None) in _SQLITE_CODES:
        return f"an SQLite database: {err} ({what}; {_SQLITE_CODES[err.sqlite_errorcode]})"
    text = str(err)
    if type(err).__module__ == "lmdb" and (
        type(err).__name__ in ("DiskError", "ReadonlyError")
        or any(os.strerror(code) in text for code in FILESYSTEM_ERRNOS)
    ):
        return f"an LMDB file: {text} ({what})"
    torch_write = "PytorchStreamWriter" in text or ("inline_container.cc" in text and "Reader" not in text)
    if isinstance(err, RuntimeError) and torch_write:  # torch.save on a full disk (no errno reaches Python)
        where = _open_file_in(err.__traceback__)
        return f"torch could not write {where or 'a file'} ({what}: {text.splitlines()[0]}); is the disk full?"
    return None


def _open_file_in(tb) -> str | None:
    """The name of the open file that a write failed on, found among the locals of the innermost frames of
    the traceback (a write() on an open file raises an OSError that names no file); None if none holds one."""
    frames = []
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    for frame in reversed(frames[-_FRAMES_SEARCHED:]):
        for value in frame.f_locals.values():
            name = getattr(value, "name", None) if isinstance(value, io.IOBase) else None
            if isinstance(name, str) and not name.startswith("<"):  # not <stderr> and the like
                return name
    return None


_FRAMES_SEARCHED = 6  # the write that failed, and the few library frames around it
