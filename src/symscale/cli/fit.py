"""`symscale fit`: scaling laws from any table of runs (N, D, loss; optionally C, H, arch, run, step)."""

from __future__ import annotations

import argparse
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
    p.add_argument("table", help="CSV file (a study's laws.csv, or any table)")
    p.add_argument("--law", choices=LAWS, default="sum", help="which law to fit (default sum; all = everything)")
    p.add_argument("--group-by", default=None, help="fit each value of this column separately (e.g. arch)")
    p.add_argument("--bootstrap", type=int, default=4000, help="bootstrap resamples (default 4000; 0 = none)")
    p.add_argument("--seed", type=int, default=42, help="bootstrap seed (default 42)")
    p.add_argument("--method", choices=["huber-lse", "varpro"], default="huber-lse", help="sum-law method")
    p.add_argument(
        "--fix-E", type=float, default=None, help="fix E of the sum law (0: the reference study's L_inf = 0)"
    )
    p.add_argument("--free-L-inf", action="store_true", help="frontier: fit L_inf instead of fixing it at 0")
    p.add_argument("--x", choices=["C", "H"], default="C", help="frontier axis: C (FLOPs) or H (device-hours)")
    p.add_argument("--drop-fraction", type=float, default=0.05, help="drop the first fraction of each run (0.05)")
    p.add_argument("--k", type=float, default=None, help="C = k N D for the allocation (default: fitted from C)")
    p.add_argument("--budget", type=float, default=None, help="report N*, D* at this compute budget (FLOPs)")
    p.add_argument(
        "--col", action="append", default=[], metavar="NAME=COLUMN", help="map a file column to N, D, loss, ..."
    )
    p.add_argument(
        "--derive",
        action="append",
        default=[],
        metavar="NAME=EXPR",
        help="compute a column, e.g. D='{Training FLOP} / (6 * {N})' (numbers, {column}, + - * / **)",
    )
    p.add_argument("--drop-highest-loss", type=int, default=0, help="exclude the K highest-loss rows (Epoch: 5)")
    p.add_argument(
        "--holdout-top-compute",
        type=float,
        default=None,
        metavar="F",
        help="fit on runs below the (1-F) compute quantile and report the prediction error on the rest",
    )
    p.add_argument("--workers", type=int, default=None, help="bootstrap worker processes (default: up to 4)")
    p.add_argument("--json", dest="json_out", default=None, help="write all results as JSON to this file")
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

    table = read_table(args.table, _pairs(args.col, "--col"), _pairs(args.derive, "--derive"))
    if args.drop_highest_loss:
        order = np.argsort(table["loss"], kind="stable")
        keep = np.zeros(len(table), dtype=bool)
        keep[order[: len(table) - args.drop_highest_loss]] = True
        table = table.select(keep)
    return table


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


def holdout(args, group: str, sub) -> dict:
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
        results += fit_group(args, group, sub)
        if args.holdout_top_compute:
            checks.append(holdout(args, group, sub))
    for r in results:
        print_result(r)
    for c in checks:
        print(
            f"[{c['group']}] holdout (top compute): fitted on {c['n_train']} points, predicted {c['n_test']}: "
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
