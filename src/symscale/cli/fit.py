"""`symscale fit`: scaling laws from any table of runs (N, D, loss; optionally C, H, arch, run, step)."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np

from symscale.errors import SymscaleError

LAWS = ("sum", "frontier", "isoflop", "all")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "fit",
        help="fit scaling laws (sum law, compute frontier, IsoFLOP) to a CSV table, with bootstrap intervals",
        description=(
            "Fit scaling laws to a CSV of runs or evaluations. Columns: N (parameters), D (data seen: atoms or "
            "tokens), loss; optionally C (training FLOPs), H (device-hours), arch (group), run (run id: the "
            "bootstrap then resamples whole runs), step, fraction. The sum law L = E + A N^-alpha + B D^-beta "
            "uses Epoch AI's replication of Chinchilla's approach 3 by default (Huber 1e-3 on log loss, "
            "log-sum-exp predictor, 4,500 L-BFGS starts); the frontier is L = L_inf + F C^-gamma on the lower "
            "envelope of loss over compute. Example (the Chinchilla replication): symscale fit "
            "tests/data/chinchilla_epoch_svg_extracted.csv --col N='Model Size' "
            "--derive D='{Training FLOP} / (6 * {N})' --drop-highest-loss 5"
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
        "--group-by", default=None, help="fit each value of this column separately, e.g. arch (default: one group)"
    )
    p.add_argument(
        "--bootstrap",
        type=int,
        default=4000,
        help="bootstrap resamples for SEs and 95%% intervals; whole runs are resampled when a run column "
        "exists (default: 4000; 0 = no intervals)",
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
        "--fix-E",
        type=float,
        default=None,
        help="fix E of the sum law, in loss units (0: the reference study's L_inf = 0; default: fitted)",
    )
    p.add_argument(
        "--free-L-inf", action="store_true", help="frontier: fit L_inf instead of fixing it at 0 (default: 0)"
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
        default=0.05,
        help="drop the first fraction of each run's evaluations before the frontier (from the fraction column, "
        "else x / the run's largest x) (default: 0.05)",
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
        "--workers", type=int, default=None, help="bootstrap worker processes (default: CPU count, at most 4)"
    )
    p.add_argument(
        "--json", dest="json_out", default=None, metavar="OUT", help="write all results as JSON (FitResult schema)"
    )
    p.set_defaults(func=run)


def _pairs(items: list[str], flag: str) -> dict[str, str]:
    out = {}
    for item in items:
        if "=" not in item:
            raise SymscaleError.invalid(flag, item, "NAME=VALUE")
        name, value = item.split("=", 1)
        out[name.strip()] = value.strip().strip("'\"")
    return out


def load(args: argparse.Namespace):
    from symscale.fit.table import read_table

    if args.bootstrap < 0:
        raise SymscaleError.invalid("--bootstrap", args.bootstrap, "0 or a positive number of resamples")
    table = read_table(args.table, _pairs(args.col, "--col"), _pairs(args.derive, "--derive"))
    if not 0 <= args.drop_highest_loss < len(table):
        raise SymscaleError.invalid("--drop-highest-loss", args.drop_highest_loss, f"0 <= K < {len(table)} rows")
    if args.drop_highest_loss:
        table.require("loss")
        order = np.argsort(table["loss"], kind="stable")
        keep = np.zeros(len(table), dtype=bool)
        keep[order[: len(table) - args.drop_highest_loss]] = True
        dropped = table.select(~keep)
        table = table.select(keep)
        args.dropped = dropped  # counted into each group's n_excluded
    return table


def with_dropped(args, group: str, results: list) -> list:
    """Count the rows removed by --drop-highest-loss into the n_excluded of the group's fits."""
    dropped = getattr(args, "dropped", None)
    if dropped is None:
        return results
    n = len(dropped) if not args.group_by else int((dropped[args.group_by].astype(str) == group).sum())
    return [
        dataclasses.replace(
            r, n_excluded=r.n_excluded + n, settings={**r.settings, "drop_highest_loss": args.drop_highest_loss}
        )
        for r in results
    ]


def fit_group(args, group: str, sub) -> list:
    from symscale.fit import allocation, fit_frontier, fit_isoflop, fit_sum_law

    runs = sub["run"] if "run" in sub else None
    fraction = sub["fraction"] if "fraction" in sub else None
    out = []
    if args.law in ("sum", "all"):
        sub.require("N", "D", "loss")
        s = fit_sum_law(
            sub["N"],
            sub["D"],
            sub["loss"],
            runs=runs,
            method=args.method,
            fix_E=args.fix_E,
            bootstrap=args.bootstrap,
            seed=args.seed,
            workers=args.workers,
            group=group,
        )
        out.append(s)
        k = args.k or (float(np.median(sub["C"] / (sub["N"] * sub["D"]))) if "C" in sub else None)
        if k:
            out.append(allocation(s, k, budget=args.budget))
    if args.law in ("frontier", "all"):
        axes = [args.x] if args.law == "frontier" else [a for a in ("C", "H") if a in sub]
        for axis in axes:
            sub.require(axis, "loss")
            out.append(
                fit_frontier(
                    sub[axis],
                    sub["loss"],
                    runs=runs,
                    fraction=fraction,
                    drop_fraction=args.drop_fraction,
                    free_l_inf=args.free_L_inf,
                    bootstrap=args.bootstrap,
                    seed=args.seed,
                    axis=axis,
                    group=group,
                )
            )
    if args.law in ("isoflop", "all"):
        sub.require("N", "C", "loss")
        out.append(
            fit_isoflop(
                sub["N"],
                sub["C"],
                sub["loss"],
                runs=runs,
                bootstrap=min(args.bootstrap, 1000),
                seed=args.seed,
                group=group,
            )
        )
    return out


def holdout(args, group: str, sub) -> list[dict]:
    """Extrapolation checks for the laws asked for: the sum law and/or the frontier."""
    out = []
    if args.law in ("sum", "all"):
        out.append(holdout_sum(args, group, sub))
    if args.law in ("frontier", "all"):
        from symscale.fit.holdout import frontier_holdout

        axes = [args.x] if args.law == "frontier" else [a for a in ("C", "H") if a in sub]
        for axis in axes:
            sub.require(axis, "loss")
            check = frontier_holdout(
                sub[axis],
                sub["loss"],
                runs=sub["run"] if "run" in sub else None,
                fraction=sub["fraction"] if "fraction" in sub else None,
                top_fraction=args.holdout_top_compute,
                drop_fraction=args.drop_fraction,
                free_l_inf=args.free_L_inf,
            )
            out.append({"group": group, "law": f"frontier_{axis}", **check})
    return out


def holdout_sum(args, group: str, sub) -> dict:
    from symscale.fit import fit_sum_law
    from symscale.fit.holdout import prediction_errors, split_by_compute

    train, test = split_by_compute(sub, args.holdout_top_compute)
    if not test.any() or train.sum() < 6:
        raise SymscaleError(f"holdout ({group}): too few points on one side of the compute split")
    t = sub.select(train)
    fit = fit_sum_law(t["N"], t["D"], t["loss"], method=args.method, fix_E=args.fix_E, bootstrap=0, group=group)
    p = fit.params
    N, D = sub["N"][test], sub["D"][test]
    predicted = p["E"] + p["A"] * N ** -p["alpha"] + p["B"] * D ** -p["beta"]
    return {
        "group": group,
        "law": "sum",
        "n_train": int(train.sum()),
        **prediction_errors(predicted, sub["loss"][test]),
    }


def run(args: argparse.Namespace) -> int:
    from symscale import __version__

    table = load(args)
    if args.group_by and args.group_by not in table:
        raise SymscaleError(f"--group-by {args.group_by}: no such column in {args.table}")
    results, checks = [], []
    for group, sub in table.groups(args.group_by):
        results += with_dropped(args, group, fit_group(args, group, sub))
        if args.holdout_top_compute:
            checks += holdout(args, group, sub)
    for r in results:
        print_result(r)
    for c in checks:
        print(
            f"[{c['group']}] {c['law']} holdout (top compute): fitted on {c['n_train']} points, "
            f"predicted {c['n_test']}: "
            f"mean |rel. error| {c['mean_abs_rel_error']:.3%}, max {c['max_abs_rel_error']:.3%}"
        )
    if args.json_out:
        doc = {
            "fits": [r.to_dict() for r in results],
            "holdout": checks,
            "table": str(args.table),
            "symscale_version": __version__,
        }
        tmp = Path(args.json_out + ".tmp")
        tmp.write_text(json.dumps(doc, indent=2))
        tmp.replace(args.json_out)
        print(f"wrote {args.json_out}")
    return 0


def print_result(r) -> None:
    print(f"[{r.group}] {r.law} ({r.method}; {r.n_points} points, {r.n_excluded} excluded)")
    if not r.ok:
        print(f"  not fitted: {r.reason}")
        return
    for block, se, ci in ((r.params, r.se, r.ci95), (r.derived, r.derived_se, r.derived_ci95)):
        for name, value in block.items():
            interval = f"  95% CI [{ci[name][0]:.4g}, {ci[name][1]:.4g}]" if name in ci else ""
            error = f"  SE {se[name]:.4g}" if name in se else ""
            print(f"  {name:<10} {value:12.6g}{error}{interval}")
    if not r.converged:
        print(f"  warning: optimizer did not report convergence ({r.message})")
