"""`symscale report STUDY_DIR [--out DIR] [--loss total|force|energy]`: write the study's report (HTML, Markdown
and PNG figures), on the total validation loss or, refitted without retraining, on one of its terms."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    """Register the `symscale report` subcommand and its options on `subparsers`."""
    p = subparsers.add_parser(
        "report",
        help="write a study's report: figures and tables beside the paper's numbers",
        description=(
            "Read a study directory (laws.csv, fits.json, runs/<id>/run.json, status.json, metrics.jsonl, "
            "spec.yaml) and write report.html (one self-contained file, figures embedded, opens offline), "
            "report.md and the PNG figures (150 dpi). Missing pieces are reported inside the report: without "
            "laws.csv the table is rebuilt from the runs' metrics; without fits.json no fits are shown and the "
            "report prints the `symscale fit` command that makes them (the report itself never fits)."
        ),
    )
    p.add_argument("study_dir", metavar="STUDY_DIR", help="the study directory (as written by `symscale study`)")
    p.add_argument(
        "--out",
        metavar="DIR",
        default=None,
        help="folder for report.html, report.md and the PNGs (default: STUDY_DIR/report)",
    )
    p.add_argument(
        "--loss",
        choices=["total", "force", "energy"],
        default="total",
        help="which L to present: total, force (the force term) or energy (the energy term). For force or "
        "energy the study's laws.csv is refitted on that term with its spec's fit settings (fits-<loss>.json, "
        "by the fit menu; no retraining) when that file is missing or older than laws.csv, and the report goes "
        "to STUDY_DIR/report-<loss> (default: total)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run `symscale report` with the parsed `args`; returns the exit status."""
    from symscale.report.render import write_report

    path = write_report(args.study_dir, args.out, loss=args.loss)
    print(f"report: {path}")
    print(f"        {path.with_suffix('.md')} and the figures beside it")
    return 0
