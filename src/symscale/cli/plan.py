"""`symscale plan`: the compute-optimal model and data size at a budget, from fitted sum laws.

Beside N*, D* and the predicted loss it prints their 95% intervals (percentiles over the sum law's bootstrap
parameter sets that fits.json keeps, `symscale.fit.parametric.PLAN_SAMPLES`), and one warning line for each
of the budget C, N* and D* that lies outside the range the law was fitted on (N, D, and C = k N D over the
fitted points), saying by how many decades: beyond it the plan is an extrapolation.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from symscale.errors import SymscaleError


def add_parser(subparsers) -> None:
    """Register the `symscale plan` subcommand and its options on `subparsers`."""
    p = subparsers.add_parser(
        "plan",
        help="compute-optimal N*, D* and predicted loss at a FLOP budget, from a fits JSON",
        description=(
            "Read the JSON written by `symscale fit --json` or a study's fits.json and print, per group, the "
            "compute-optimal parameter count N*, data size D* (atoms or tokens) and the predicted loss at a "
            "compute budget C (FLOPs), using the sum law and C = k N D."
        ),
    )
    p.add_argument("--fits", required=True, help="fits JSON (symscale fit --json, or a study's fits.json)")
    p.add_argument("--budget", required=True, type=float, help="training compute budget in FLOPs, e.g. 1e18")
    p.add_argument("--arch", default=None, help="only this group (default: all groups with a sum law)")
    p.add_argument("--k", type=float, default=None, help="C = k N D (default: the fit's k, else 6)")
    p.set_defaults(func=run)


def read_fits(path: Path) -> list:
    """The typed fit results of a fits JSON (a fit with a null or infinite coefficient is read as failed)."""
    from symscale.fit.results import FitResult

    if not path.is_file():
        raise SymscaleError(f"fits file {str(path)!r} does not exist")
    try:
        fits = json.loads(path.read_text())["fits"]
        return [FitResult.from_dict(f) for f in fits]
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
        raise SymscaleError(f"fits file {str(path)!r} is not a symscale fits JSON (no 'fits' list)") from None


def run(args: argparse.Namespace) -> int:
    """Run `symscale plan` with the parsed `args`; returns the exit status."""
    from symscale.fit.allocation import compute_optimal

    path = Path(args.fits)
    fits = read_fits(path)
    if not args.budget > 0:
        raise SymscaleError.invalid("--budget", args.budget, "a positive number of FLOPs")
    fits = [f for f in fits if not f.variant]  # the study's own fits, not the L_inf sensitivity ones
    sums = {f.group: f for f in fits if f.law == "sum"}
    ks = {f.group: f.settings.get("k") for f in fits if f.law == "allocation" and f.ok}
    if args.arch is not None:
        if args.arch not in sums:
            raise SymscaleError(f"no sum-law fit for {args.arch!r} in {path}; groups: {', '.join(sums) or 'none'}")
        sums = {args.arch: sums[args.arch]}
    if not any(f.ok for f in sums.values()):
        reasons = "; ".join(f"{g}: {f.reason}" for g, f in sums.items())
        raise SymscaleError(f"{path} holds no successful sum-law fit" + (f" ({reasons})" if reasons else ""))
    print(f"compute budget C = {args.budget:.3g} FLOPs")
    print(f"{'group':<12} {'k':>8} {'N*':>12} {'D*':>12} {'loss*':>10}")
    warnings = []
    for group, fit in sums.items():
        if not fit.ok:
            print(f"{group:<12} not possible: {fit.reason}")
            continue
        k = args.k or ks.get(group) or 6.0
        n, d, loss = compute_optimal(fit.params, args.budget, k)
        print(f"{group:<12} {k:8.3g} {float(n):12.4g} {float(d):12.4g} {float(loss):10.4g}")
        intervals = plan_intervals(fit, args.budget, k)
        if intervals:
            shown = "  ".join(f"{name} [{lo:.3g}, {hi:.3g}]" for name, (lo, hi) in intervals.items())
            print(f"{'':<12} 95% CI  {shown}")
        warnings += range_warnings(group, fit, args.budget, k, float(n), float(d))
    for line in warnings:
        print(line)
    return 0


def plan_intervals(fit, budget: float, k: float) -> dict[str, tuple[float, float]]:
    """95% percentile intervals of N*, D*, loss* at `budget` over the fit's kept bootstrap parameter sets
    ({} when the fits file keeps none: no bootstrap, or written before plans had intervals)."""
    from symscale.fit.allocation import compute_optimal

    kept = fit.extra.get("bootstrap_params") or {}
    if not kept or any(name not in kept for name in ("A", "B", "alpha", "beta")):
        return {}
    params = {name: np.array([np.nan if v is None else v for v in values], float) for name, values in kept.items()}
    params.setdefault("E", np.zeros_like(params["A"]))
    out = {}
    for name, values in zip(("N*", "D*", "loss*"), compute_optimal(params, budget, k), strict=True):
        finite = values[np.isfinite(values)]
        if len(finite) >= 10:
            lo, hi = np.percentile(finite, [2.5, 97.5])
            out[name] = (float(lo), float(hi))
    return out


def range_warnings(group: str, fit, budget: float, k: float, n_star: float, d_star: float) -> list[str]:
    """One warning line per quantity (C, N*, D*) outside the fitted range, with the distance in decades."""
    extra = fit.extra
    if not all(key in extra for key in ("N_range", "D_range", "ND_range")):
        return [f"warning: [{group}] the fits file records no fitted range (refit it) to check extrapolation"]
    checks = (
        ("the budget C", budget, [k * v for v in extra["ND_range"]], "C"),
        ("N*", n_star, extra["N_range"], "N"),
        ("D*", d_star, extra["D_range"], "D"),
    )
    out = []
    for name, value, (lo, hi), axis in checks:
        if not value > 0 or lo <= value <= hi:
            continue
        side, edge = ("above the largest", hi) if value > hi else ("below the smallest", lo)
        decades = abs(math.log10(value / edge))
        out.append(
            f"warning: [{group}] {name} = {value:.3g} is {decades:.2g} decades {side} fitted {axis} ({edge:.3g}): "
            "an extrapolation"
        )
    return out
