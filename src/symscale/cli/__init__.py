"""The `symscale` command: one thin module per subcommand (parse, call the library, print).

Each subcommand module defines `add_parser(subparsers)`, which registers its parser and sets `func`
(a callable taking the parsed namespace and returning an exit code).

Errors: a `SymscaleError` is printed as one line (exit 2). So is a file-system fault that is the user's to
fix, in any command: disk full, quota exceeded, read-only file system, permission denied, as an OSError,
an SQLite or LMDB error, or torch's failed checkpoint write, anywhere in the exception's chain
(`filesystem_error`); the line names the path (from the error, else the open file of the failed write).
Anything else keeps its traceback. `write_output` writes a user's output file (`--json`) atomically
(`symscale.rundir.atomic_file`); `progress_bar` is the bar of long commands (eval, md, the fit bootstrap): on
stderr, off when stderr is not a terminal or with `--quiet`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from pathlib import Path

from symscale import __version__
from symscale.errors import SymscaleError, filesystem_fault

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
    """The `symscale` argument parser with one subcommand per module of COMMANDS."""
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
    """Run the command line `argv` (default: sys.argv); returns the exit status (a user error: one line, 2)."""
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


def progress_bar(total: int | None, desc: str, *, quiet: bool = False, unit: str = "it"):
    """A tqdm bar on stderr for a long command, drawn only when stderr is a terminal and not `quiet`
    (a disabled bar accepts the same calls and prints nothing)."""
    from tqdm import tqdm

    enabled = not quiet and bool(getattr(sys.stderr, "isatty", lambda: False)())
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=not enabled, dynamic_ncols=True)


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


def filesystem_error(err: BaseException | None, command: str) -> str | None:
    """The one line for a file-system fault anywhere in `err`'s chain (`symscale.errors.filesystem_fault`),
    saying which command was writing; None for anything else."""
    return filesystem_fault(err, f"while `symscale {command}` was writing")
