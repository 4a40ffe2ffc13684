"""Everything a study's report needs from its laws table, per group, never raising on a group that is too
small: each impossible fit comes back as `FitResult(ok=False, reason=...)`."""

from __future__ import annotations

import logging

import numpy as np

from symscale.errors import SymscaleError
from symscale.fit.allocation import allocation
from symscale.fit.frontier import fit_frontier, run_fractions
from symscale.fit.isoflop import fit_isoflop
from symscale.fit.parametric import fit_sum_law
from symscale.fit.results import FitResult
from symscale.fit.table import LawsTable

log = logging.getLogger(__name__)


def _guarded(law: str, fn, *args, **kwargs) -> FitResult:
    """`fn(*args, **kwargs)`, or a failed `FitResult` saying why when the fit is not possible."""
    group = kwargs.get("group") or getattr(args[0], "group", "all")
    try:
        return fn(*args, **kwargs)
    except SymscaleError as err:
        log.info("%s fit for %s not possible: %s", law, group, err)
        return FitResult.failed(group, law, str(err))


def study_groups(table: LawsTable, group_by: str | None) -> list[tuple[str, LawsTable]]:
    """Groups to fit: one per value of `group_by`; with a `mode` column, the "architecture" rows of each
    group keep its plain name and every other symmetry mode becomes its own group "<arch>/<mode>", so that
    augmentation or symmetry-loss runs never mix into a family's own laws."""
    groups = table.groups(group_by if group_by and group_by in table else None)
    if "mode" not in table:
        return groups
    out = []
    for name, sub in groups:
        for mode, part in sub.groups("mode"):
            out.append((name if mode == "architecture" else f"{name}/{mode}", part))
    return out


def fitted_k(table: LawsTable) -> float:
    """k in C = k N D, as the median of C / (N D) over the table (3 kappa for a family)."""
    return float(np.median(table["C"] / (table["N"] * table["D"])))


def fit_laws_table(
    table: LawsTable,
    *,
    group_by: str | None = "arch",
    bootstrap: int = 1000,
    seed: int = 42,
    k_per_group: dict[str, float] | None = None,
    drop_fraction: float = 0.05,
    workers: int | None = None,
) -> list[FitResult]:
    """frontier_C, frontier_H (when H exists), sum, isoflop and allocation per group."""
    results: list[FitResult] = []
    for group, sub in study_groups(table, group_by):
        runs = sub["run"] if "run" in sub else None
        fraction = sub["fraction"] if "fraction" in sub else None
        common = dict(
            runs=runs, fraction=fraction, drop_fraction=drop_fraction, bootstrap=bootstrap, seed=seed, group=group
        )
        frontier = None
        for axis in ("C", "H"):
            if axis in sub:
                fit = _guarded(f"frontier_{axis}", fit_frontier, sub[axis], sub["loss"], axis=axis, **common)
                results.append(fit)
                frontier = fit if axis == "C" else frontier
        late = run_fractions(runs, sub["D"], fraction) >= drop_fraction
        s = sub.select(late)
        sum_fit = _guarded(
            "sum",
            fit_sum_law,
            s["N"],
            s["D"],
            s["loss"],
            runs=s["run"] if "run" in s else None,
            bootstrap=bootstrap,
            seed=seed,
            workers=workers,
            group=group,
        )
        results.append(sum_fit)
        if "C" in sub:
            results.append(
                _guarded(
                    "isoflop",
                    fit_isoflop,
                    s["N"],
                    s["C"],
                    s["loss"],
                    runs=s["run"] if "run" in s else None,
                    bootstrap=min(bootstrap, 400),
                    seed=seed,
                    group=group,
                )
            )
            k = (k_per_group or {}).get(group) or fitted_k(sub)
            budget = float(np.max(sub["C"]))
            results.append(_guarded("allocation", allocation, sum_fit, k, budget=budget, frontier_fit=frontier))
    return results
