"""The `symscale` command: one thin module per subcommand (parse, call the library, print).

Each subcommand module defines `add_parser(subparsers)`, which registers its parser and sets `func`
(a callable taking the parsed namespace and returning an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

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
