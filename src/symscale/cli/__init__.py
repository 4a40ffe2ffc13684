"""The `symscale` command: one thin module per subcommand (parse, call the library, print).

Each subcommand module defines `add_parser(subparsers)`, which registers its parser and sets `func`
(a callable taking the parsed namespace and returning an exit code).

Errors: a `SymscaleError` is printed as one line (exit 2). So is a file-system fault that is the user's to
fix, in any command: disk full, quota exceeded, read-only file system, permission denied, as an OSError,
an SQLite or LMDB error, or torch's failed checkpoint write, anywhere in the exception's chain
(`filesystem_error`); the line names the path (from the error, else the open file of the failed write).
Anything else keeps its traceback. `write_output` writes a user's output file (`--json`) atomically
(`symscale.rundir.atomic_file`).
"""

from __future__ import annotations

import argparse
import errno
import importlib
import io
import logging
import os
import sqlite3
import sys
from pathlib import Path

from symscale import __version__
from symscale.errors import SymscaleError

# module name under symscale.cli, in the order `symscale --help` lists them
COMMANDS = [
    "data",
    "models",
    "flops",
    "train",
    "tune_lr",
    "study",
    "runs",
    "fit",
    "plan",
    "report",
    "eval",
    "md",
    "export",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="symscale",
        description=(
            "Scaling laws and symmetry for neural force fields: generate or read molecular data, train "
            "model families along the symmetry staircase (mpnn, egnn, gemnet_oc, esen), run studies, "
            "fit scaling laws and write reports. Start with `symscale study quickstart`."
        ),
    )
    parser.add_argument("--version", action="version", version=f"symscale {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"symscale.cli.{name}")
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except SymscaleError as err:
        print(f"symscale {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"symscale {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # a full, read-only or forbidden disk is the user's to fix: one line, no traceback
        message = filesystem_error(err, args.command)
        if message is None:
            raise
        print(f"symscale {args.command}: error: {message}", file=sys.stderr)
        return 2


def write_output(path: str | os.PathLike, text: str, what: str) -> Path:
    """Write a user's output file (`--json` and the like) atomically: a unique temporary file beside `path`,
    fsync, rename. A missing folder, a full or read-only disk is a `SymscaleError` naming `path` and `what`;
    an existing `path` is then left as it was and nothing is left behind."""
    path = check_output_path(path, what)
    from symscale.rundir import atomic_file

    try:
        with atomic_file(path) as fh:
            fh.write(text)
    except OSError as err:
        raise SymscaleError(f"cannot write {what} to {path}: {err.strerror or err}; {_left(path)}") from None
    return path


def check_output_path(path: str | os.PathLike, what: str) -> Path:
    """`path` as a Path when a file can be written there (its folder exists, it is not a folder); else a
    `SymscaleError` naming `what`. Commands call it before their work so that a bad path costs nothing."""
    path = Path(path)
    if not path.parent.is_dir():
        raise SymscaleError(f"cannot write {what} to {path}: folder {path.parent} does not exist")
    if path.is_dir():
        raise SymscaleError(f"cannot write {what} to {path}: it is a folder, expected a file path")
    return path


def _left(path: Path) -> str:
    return f"{path} left as it was" if path.exists() else "nothing written"


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


def filesystem_error(err: BaseException, command: str) -> str | None:
    """The one line for a file-system fault anywhere in `err`'s chain (disk full, quota, read-only file
    system, permission denied), naming the path and what was being written; None for anything else."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        line = _one_fault(err, command)
        if line is not None:
            return line
        err = err.__cause__ or err.__context__
    return None


def _one_fault(err: BaseException, command: str) -> str | None:
    what = f"while `symscale {command}` was writing"
    if isinstance(err, OSError) and err.errno in FILESYSTEM_ERRNOS:
        reason = FILESYSTEM_ERRNOS[err.errno]
        filename = err.filename if err.filename is not None else _open_file_in(err.__traceback__)
        if filename is None:
            return f"{reason} {what} (the error does not name the file)"
        paths = f"{filename}" + (f" -> {err.filename2}" if err.filename2 else "")
        verb = "access" if err.errno in (errno.EACCES, errno.EPERM) else "write"
        return f"cannot {verb} {paths}: {reason} ({what})"
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
