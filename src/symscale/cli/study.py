"""`symscale study`: run a grid of runs (a spec file or a preset) on an executor, then fit and report."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from symscale.errors import SymscaleError

EPILOG = """examples:
  symscale study quickstart                 # the built-in study on this machine (CPU, < 30 min)
  symscale study quickstart --dry-run       # the run table with N, D, FLOPs and the wall time predicted
                                            # from a few steps per family timed here; nothing is trained
  symscale study embedded                   # the larger built-in study (about 3 hours on 2 cores)
  symscale study depth                      # loss against depth at a fixed parameter budget per family
  symscale study paper --data /path/to/omol25/train --val-data /path/to/omol25/val --dry-run
  symscale study my_spec.yaml --executor ray --workers 4
"""


def add_parser(subparsers) -> None:
    """Register the `symscale study` subcommand and its options on `subparsers`."""
    p = subparsers.add_parser(
        "study",
        help="run a study: a grid of runs, then fits and a report (start here: symscale study quickstart)",
        description=(
            "Run every run of a study that is not done yet, on an executor, then export laws.csv, fit the "
            "scaling laws (fits.json) and write the report. Rerunning is safe: finished runs are skipped, "
            "interrupted runs resume from their checkpoints, failed runs stay failed unless --retry-failed; "
            "on a finished study only the fits and the report are refreshed."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "spec",
        help="a study spec YAML file, or a preset: quickstart, quickstart-smoke, embedded, depth, paper, extended",
    )
    p.add_argument("--dir", type=Path, default=None, help="study directory (default: ./studies/<spec name>)")
    p.add_argument(
        "--data",
        default=None,
        help="dataset path (file or folder; required by the paper preset: OMol25 train .aselmdb "
        "folder); replaces the spec's dataset",
    )
    p.add_argument(
        "--val-data",
        default=None,
        help="separate validation data (file or folder; the paper preset: OMol25's validation split); "
        "replaces the spec's dataset.val_path (default: validation carved out of the training data)",
    )
    p.add_argument(
        "--executor",
        choices=("local", "slurm", "ray"),
        default=None,
        help="where runs execute (default: the spec's executor.kind; quickstart: local, paper: slurm)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="local executor: number of worker processes, each with cores/workers torch threads; ray: runs "
        "in flight at once (default: the spec's executor.workers; ray: as the cluster's resources allow); "
        "refused with slurm (one job per run: executor.slurm.max_running)",
    )
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a study-level progress bar on stderr: runs done, FLOPs done, ETA (default: on when stderr is a terminal)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the run table with N, D (atoms), estimated FLOPs 3*kappa*N*D and wall time (from a few "
        "training steps of each family timed on this machine), then stop",
    )
    p.add_argument(
        "--no-calibrate",
        action="store_true",
        help="with --dry-run: time from the spec's estimate.flops_per_second instead of timing a few real "
        "training steps of each family on this machine (faster, and wrong by several times between families)",
    )
    p.add_argument(
        "--retry-failed",
        action="store_true",
        help="rerun failed runs (resuming from their last checkpoint) instead of leaving them failed",
    )
    p.add_argument("--no-report", action="store_true", help="skip the report after the fits")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run `symscale study` with the parsed `args`; returns the exit status."""
    from symscale.report.render import write_report
    from symscale.study.runner import format_estimates, format_wall_time, run_study
    from symscale.study.slurm import SLURM_NO_WORKERS
    from symscale.study.spec import load_spec
    from symscale.study.tuning import estimate_sweeps, format_sweeps

    overrides: dict[str, Any] = {}
    if args.data is not None:
        overrides["dataset"] = {"path": str(Path(args.data).resolve()), "builtin": None}
    if args.val_data is not None:
        if not Path(args.val_data).exists():
            raise SymscaleError(f"validation data not found: {args.val_data} (--val-data)")
        overrides.setdefault("dataset", {})["val_path"] = str(Path(args.val_data).resolve())
    if args.no_report:
        overrides["report"] = False
    if args.workers is not None and args.workers < 1:
        raise SymscaleError.invalid("--workers", args.workers, "an integer >= 1")
    spec = load_spec(args.spec, overrides=overrides)
    if args.workers is not None and (args.executor or spec.executor.kind) == "slurm":
        raise SymscaleError.invalid("--workers", args.workers, SLURM_NO_WORKERS)
    no_data = spec.dataset.path is not None and "${" in spec.dataset.path
    no_val = spec.dataset.val_path is not None and "${" in spec.dataset.val_path
    if args.dry_run:
        reference = 1e18 if spec.name == "paper" else None
        print(
            f"study {spec.name} ({spec.source}), dry run"
            + (" (no --data: sizes from the spec's size_hint)" if no_data else "")
            + ":"
        )
        paths = None if no_data or spec.dataset.path is None else [spec.dataset.path]
        stages, grid = estimate_sweeps(spec, paths, calibrate=not args.no_calibrate)
        print(format_sweeps(stages))
        print(format_estimates(grid, reference_flops=reference))
        print(format_wall_time(spec, stages, grid))
        return 0
    if no_data:
        raise SymscaleError(
            f"the {spec.name} study needs its data: symscale study {args.spec} --data PATH "
            "(a folder of OMol25 .aselmdb files, e.g. omol25/train)"
        )
    if no_val:
        raise SymscaleError(
            f"the {spec.name} study validates on separate data: symscale study {args.spec} --val-data PATH "
            "(e.g. the neutral OMol25 validation split, omol25/val)"
        )
    study_dir = args.dir or Path("studies") / spec.name
    result = run_study(
        spec,
        study_dir,
        kind=args.executor,
        workers=args.workers,
        retry_failed=args.retry_failed,
        out=lambda line: print(line, flush=True),
        progress=args.progress,
        reporter=write_report,
    )
    return 0 if result.failed == 0 and result.pending == 0 else 1
