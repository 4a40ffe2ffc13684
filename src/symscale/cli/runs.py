"""`symscale runs STUDY`: the runs of a study and where each stands."""

from __future__ import annotations

import argparse
from pathlib import Path

from symscale.errors import SymscaleError


def add_parser(subparsers) -> None:
    """Register the `symscale runs` subcommand and its options on `subparsers`."""
    p = subparsers.add_parser(
        "runs",
        help="list a study's runs: status, N, D, last loss, FLOPs, device-hours",
        description=(
            "Show every run of a study directory, read from its run directories (catalogue.sqlite is not "
            "written): run id, family, width, prefix, status, N (parameters), D (atoms seen), last "
            "validation loss, C (FLOPs, measured) and H (device-hours)."
        ),
    )
    p.add_argument("study", type=Path, help="a study directory (the --dir of `symscale study`)")
    p.add_argument("--status", default=None, help="show only runs with this status (finished, failed, running, ...)")
    p.set_defaults(func=run)


def _num(x, fmt: str = ".3g") -> str:
    return "-" if x is None else format(x, fmt)


def run(args: argparse.Namespace) -> int:
    """Run `symscale runs` with the parsed `args`; returns the exit status."""
    from symscale.study.catalogue import Catalogue

    if not (args.study / "runs").is_dir():
        raise SymscaleError.invalid("study directory", str(args.study), "a directory with runs/ (from symscale study)")
    records = Catalogue(args.study).runs()
    if args.status:
        records = [r for r in records if r.status == args.status]
    head = (
        f"{'run':<28} {'arch':<10} {'width':>6} {'prefix':>6} {'status':<11} {'N':>9} {'D':>9} {'loss':>9} "
        f"{'FLOPs':>9} {'dev-h':>8}"
    )
    print(head)
    print("-" * len(head))
    for r in records:
        print(
            f"{r.run_id:<28} {r.arch or '-':<10} {_num(r.width, 'd'):>6} {_num(r.prefix, '.3g'):>6} {r.status:<11} "
            f"{_num(r.N):>9} {_num(r.D):>9} {_num(r.loss, '.4g'):>9} {_num(r.C):>9} {_num(r.H, '.2g'):>8}"
        )
    counts: dict[str, int] = {}
    for r in records:
        counts[r.status] = counts.get(r.status, 0) + 1
    print(f"{len(records)} runs: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    for r in records:
        if r.status == "failed":
            print(f"  failed {r.run_id}: {r.reason}")
    return 0
