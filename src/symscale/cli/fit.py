"""`symscale fit`: scaling laws from any table of runs (N, D, loss; optionally C, H, arch, run, step).

Parses the flags into the fit menu's settings (`symscale.fit.menu.FitSettings`), calls the menu and prints;
the study calls the same menu, so `symscale fit STUDY/laws.csv --law all --group-by arch --bootstrap B
--seed S` with the study's B and S writes the study's fits.

Every group is fitted that can be: a law that is not possible for a group is one line saying why, and so is
a holdout check that is not possible for a group; the command fails only when no fit at all was possible.
The bootstrap draws a progress bar on a terminal (`--quiet`: none).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

from symscale.errors import SymscaleError

LAWS = ("sum", "frontier", "isoflop", "all")


def add_parser(subparsers) -> None:
    """Register the `symscale fit` subcommand and its options on `subparsers`."""
    p = subparsers.add_parser(
        "fit",
        help="fit scaling laws (sum law, compute frontier, IsoFLOP) to a CSV table, with bootstrap intervals",
        description=(
            "Fit scaling laws to a CSV of runs or evaluations. Columns: N (parameters), D (data seen: atoms or "
            "tokens), loss; optionally C (training FLOPs), H (device-hours), arch (group), run (run id: the "
            "bootstrap then resamples whole runs), step, run_fraction. The sum law L = E + A N^-alpha + B D^-beta "
            "uses Epoch AI's replication of Chinchilla's approach 3 by default (Huber 1e-3 on log loss, "
            "log-sum-exp predictor, 4,500 L-BFGS starts); the frontier is L = L_inf + F C^-gamma on the lower "
            "envelope of loss over compute; one L_inf policy for both (--l-inf; default zero, the reference study's). "
            "Example (the Chinchilla replication, E fitted): symscale fit "
            "tests/data/chinchilla_epoch_svg_extracted.csv --col N='Model Size' "
            "--derive D='{Training FLOP} / (6 * {N})' --drop-highest-loss 5 --l-inf free"
        ),
    )
    p.add_argument("table", help="CSV file (a study's laws.csv, or any table with a header row)")
    p.add_argument(
        "--law",
        choices=LAWS,
        default="sum",
        help="sum: L(N, D); frontier: L(C) on the lower envelope; isoflop: N_opt(C) from IsoFLOP parabolas; "
        "all: every law the columns allow, plus the allocation (default: sum)",
    )
    p.add_argument(
        "--group-by",
        default=None,
        help="fit each value of this column separately, e.g. arch; rows are split further by the options and "
        "mode columns where the table has them, as in a study (default: one group)",
    )
    p.add_argument(
        "--bootstrap",
        type=int,
        default=4000,
        help="bootstrap resamples for SEs and 95%% intervals; whole runs are resampled when a run column "
        "exists; the IsoFLOP fit uses at most 400 (default: 4000; 0 = no intervals)",
    )
    p.add_argument("--seed", type=int, default=42, help="seed of the bootstrap resamples (default: 42)")
    p.add_argument(
        "--method",
        choices=["huber-lse", "varpro"],
        default="huber-lse",
        help="sum-law method: huber-lse = Epoch AI's recipe; varpro = least squares on L with E, A, B solved "
        "linearly (NNLS) inside a search over alpha, beta (default: huber-lse)",
    )
    p.add_argument(
        "--l-inf",
        choices=["zero", "free"],
        default=None,
        help="the L_inf policy of every law: zero fixes the sum law's E and the frontier's L_inf at 0 (the "
        "reference study's choice); free fits both (Epoch AI's Chinchilla replication fits E: use free there) "
        "(default: zero)",
    )
    p.add_argument("--free-L-inf", action="store_true", help="the same as --l-inf free (kept for old commands)")
    p.add_argument(
        "--sensitivity",
        action="store_true",
        help="also fit the frontier, sum law and allocation under the other L_inf policy (a study does; "
        "at most 200 resamples for those)",
    )
    p.add_argument(
        "--loss",
        choices=["total", "force", "energy"],
        default="total",
        help="which L to fit: total (column loss), force (loss_force, the force term) or energy (loss_energy); "
        "refits a study's laws.csv on another term without retraining (default: total)",
    )
    p.add_argument(
        "--ema",
        type=float,
        default=0.0,
        help="smooth each run's loss curve by an exponential moving average (the weight of the past, 0 <= EMA "
        "< 1) before the frontier, as the paper did for GemNet-OC (default: 0, none)",
    )
    p.add_argument(
        "--x",
        choices=["C", "H"],
        default="C",
        help="frontier axis for --law frontier: C (training FLOPs) or H (device-hours) (default: C)",
    )
    p.add_argument(
        "--drop-fraction",
        type=float,
        default=None,
        help="drop the first fraction of each run's evaluations before the frontier, sum law and IsoFLOP fit "
        "(from the run_fraction column, else D / the run's largest D; no run column: no row is dropped) "
        "(default: 0.05, within the reference study's 1-10%%)",
    )
    p.add_argument(
        "--k",
        type=float,
        default=None,
        help="k in C = k N D (FLOPs per parameter per token or atom; 6 for transformers, 3 kappa here) for the "
        "allocation (default: the median of C / (N D) when C exists)",
    )
    p.add_argument(
        "--budget", type=float, default=None, help="report N*, D* and the loss at this compute budget, in FLOPs"
    )
    p.add_argument(
        "--col",
        action="append",
        default=[],
        metavar="NAME=COLUMN",
        help="use a file column as N, D, C, H, loss, run or arch, e.g. --col N='Model Size' (repeatable)",
    )
    p.add_argument(
        "--derive",
        action="append",
        default=[],
        metavar="NAME=EXPR",
        help="compute a column from others, e.g. D='{Training FLOP} / (6 * {N})' for tokens from FLOPs "
        "(numbers, {column}, + - * / ** and parentheses; repeatable, applied after --col)",
    )
    p.add_argument(
        "--drop-highest-loss",
        type=int,
        default=0,
        metavar="K",
        help="exclude the K highest-loss rows before fitting, as Epoch AI did with K = 5 (default: 0)",
    )
    p.add_argument(
        "--holdout-top-compute",
        type=float,
        default=None,
        metavar="F",
        help=(
            "extrapolation check (0 < F < 1): refit the sum law on the runs below the (1-F) quantile of compute "
            "(C, else 6 N D) and the frontier on the points below it, and report the relative prediction error "
            "on the held-out top-compute points (default: off)"
        ),
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="bootstrap worker processes (default: CPU count, at most 4; a bootstrap estimated under a few seconds "
        "runs in this process, where starting the pool would cost more than it saves)",
    )
    p.add_argument(
        "--json", dest="json_out", default=None, metavar="OUT", help="write all results as JSON (FitResult schema)"
    )
    p.add_argument("--quiet", action="store_true", help="no bootstrap progress bar (drawn only on a terminal anyway)")
    p.set_defaults(func=run)


def _pairs(items: list[str], flag: str) -> dict[str, str]:
    out = {}
    for item in items:
        if "=" not in item:
            raise SymscaleError.invalid(flag, item, "NAME=VALUE")
        name, value = item.split("=", 1)
        out[name.strip()] = value.strip().strip("'\"")
    return out


def settings_from(args: argparse.Namespace):
    """The fit menu's settings from the command line."""
    from symscale.fit.menu import AXES, DROP_FRACTION, LAWS, FitSettings

    laws = {"sum": ("sum",), "frontier": ("frontier",), "isoflop": ("isoflop",), "all": LAWS}[args.law]
    return FitSettings(
        laws=laws,
        axes=(args.x,) if args.law == "frontier" else AXES,
        group_by=args.group_by,
        bootstrap=args.bootstrap,
        seed=args.seed,
        drop_fraction=DROP_FRACTION if args.drop_fraction is None else args.drop_fraction,
        method=args.method,
        l_inf=_l_inf(args),
        loss=args.loss,
        ema=args.ema,
        sensitivity=args.sensitivity,
        k=args.k,
        budget=args.budget,
        drop_highest_loss=args.drop_highest_loss,
        workers=args.workers,
    )


def _l_inf(args: argparse.Namespace) -> str:
    if args.free_L_inf and args.l_inf == "zero":
        raise SymscaleError.invalid("--free-L-inf with --l-inf", args.l_inf, "one of them (--l-inf free)")
    return "free" if args.free_L_inf else (args.l_inf or "zero")


def required_columns(law: str, x: str) -> tuple[str, ...]:
    """The columns a single asked-for law needs (--law all: those of the sum law; the others are fitted
    where the table has their columns), checked first so that bad input is one error line."""
    return {"sum": ("N", "D", "loss"), "frontier": (x, "loss"), "isoflop": ("N", "C", "loss")}.get(
        law, ("N", "D", "loss")
    )


def holdouts(table, settings, top_fraction: float) -> list[dict[str, Any]]:
    """The holdout checks group by group; a group whose check is not possible gives one entry with its
    `error` instead of stopping the others (the highest-loss rows are dropped over the whole table first)."""
    from symscale.fit.menu import drop_highest, groups, holdout_checks, with_loss

    table, _ = drop_highest(with_loss(table, settings.loss), settings.drop_highest_loss)
    per_group = dataclasses.replace(settings, drop_highest_loss=0)
    out = []
    for group, rows in groups(table, settings.group_by):
        try:
            out += holdout_checks(rows, per_group, top_fraction)
        except SymscaleError as err:
            out.append({"group": group.label, "law": "holdout", "error": str(err)})
    return out


def print_holdout(c: dict[str, Any]) -> None:
    """Print one group's top-compute holdout check (or why it was not possible) in one line."""
    if "error" in c:
        print(f"[{c['group']}] holdout (top compute): not possible: {c['error']}")
        return
    print(
        f"[{c['group']}] {c['law']} holdout (top compute): fitted on {c['n_train']} points, "
        f"predicted {c['n_test']}: "
        f"mean |rel. error| {c['mean_abs_rel_error']:.3%}, max {c['max_abs_rel_error']:.3%}"
    )


def fit_with_bar(table, settings, quiet: bool) -> list:
    """`fit_table` with the bootstrap's progress drawn as a bar on stderr (on a terminal, unless `quiet`)."""
    from symscale.cli import progress_bar
    from symscale.fit.bootstrap import reporting
    from symscale.fit.menu import fit_table

    with progress_bar(None, "bootstrap", quiet=quiet or settings.bootstrap == 0, unit="resamples") as bar:

        def advance(done: int, total: int) -> None:
            if done == 0 or bar.total != total:
                bar.reset(total=total)
            bar.update(done - bar.n)

        with reporting(advance):
            return fit_table(table, settings)


def run(args: argparse.Namespace) -> int:
    """Run `symscale fit` with the parsed `args`; returns the exit status."""
    from symscale import __version__
    from symscale.cli import check_output_path, write_output
    from symscale.fit.table import read_table

    if args.json_out:  # before the fits: a bad --json costs nothing
        check_output_path(args.json_out, "the fits")
    settings = settings_from(args)
    table = read_table(args.table, _pairs(args.col, "--col"), _pairs(args.derive, "--derive"))
    table.require(*required_columns(args.law, args.x))
    results = fit_with_bar(table, settings, args.quiet)
    checks = holdouts(table, settings, args.holdout_top_compute) if args.holdout_top_compute else []
    for r in results:
        print_result(r)
    if not any(r.ok for r in results):
        reasons = "; ".join(dict.fromkeys(r.reason or "no reason given" for r in results))
        raise SymscaleError(f"no fit was possible on {args.table}: {reasons}")
    failed = [r for r in results if not r.ok]
    if failed:
        print(f"{len(results) - len(failed)} of {len(results)} fits done; {len(failed)} not possible (lines above)")
    for c in checks:
        print_holdout(c)
    if args.json_out:
        doc = {
            "fits": [r.to_dict() for r in results],
            "holdout": checks,
            "table": str(args.table),
            "symscale_version": __version__,
        }
        write_output(args.json_out, json.dumps(doc, indent=2), "the fits")
        print(f"wrote {args.json_out}")
    return 0


def print_result(r) -> None:
    """Print one fit result as the lines `symscale fit` shows."""
    variant = f", sensitivity: {r.variant}" if r.variant else ""
    if not r.ok:  # one line: which law of which group, and why
        print(f"[{r.group}] {r.law}{f' ({variant[2:]})' if variant else ''}: not possible: {r.reason}")
        return
    policy = f"L_inf {r.settings['l_inf']}, L = {r.settings.get('loss', 'total')}" if "l_inf" in r.settings else ""
    print(f"[{r.group}] {r.law} ({r.method}; {r.n_points} points, {r.n_excluded} excluded; {policy}{variant})")
    for block, se, ci in ((r.params, r.se, r.ci95), (r.derived, r.derived_se, r.derived_ci95)):
        for name, value in block.items():
            interval = f"  95% CI [{ci[name][0]:.4g}, {ci[name][1]:.4g}]" if name in ci else ""
            if name in r.unresolved:  # a degenerate interval is not printed as numbers
                interval = f"  95% CI unresolved: {r.unresolved[name]}"
            error = f"  SE {se[name]:.4g}" if name in se and name not in r.unresolved else ""
            print(f"  {name:<10} {value:12.6g}{error}{interval}")
    if not r.converged:
        print(f"  warning: optimizer did not report convergence ({r.message})")
