"""Extrapolation check: fit on the runs below a compute quantile, predict the rest, report the error."""

from __future__ import annotations

import numpy as np

from symscale.errors import SymscaleError
from symscale.fit.table import LawsTable


def split_by_compute(table: LawsTable, top_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(train mask, test mask): test = the units (runs, else points) whose compute is in the top fraction."""
    if not 0 < top_fraction < 1:
        raise SymscaleError.invalid("holdout fraction", top_fraction, "a number between 0 and 1")
    C = table["C"] if "C" in table else 6.0 * table["N"] * table["D"]
    if "run" in table:
        runs = table["run"]
        run_c = {r: C[runs == r].max() for r in set(runs.tolist())}
        per_point = np.array([run_c[r] for r in runs])
    else:
        per_point = C
    cut = np.quantile(per_point, 1 - top_fraction)
    test = per_point > cut
    return ~test, test


def prediction_errors(predicted: np.ndarray, observed: np.ndarray) -> dict[str, float]:
    """Number of held-out points and the mean and largest |predicted - observed| / observed over them."""
    rel = np.abs(predicted - observed) / observed
    return {
        "n_test": int(len(observed)),
        "mean_abs_rel_error": float(rel.mean()),
        "max_abs_rel_error": float(rel.max()),
    }


def sum_holdout(
    table: LawsTable, top_fraction: float, method: str = "huber-lse", fix_E: float | None = None
) -> dict[str, float]:
    """Fit the sum law (no bootstrap) on the runs below the compute cut of `split_by_compute` and compare its
    prediction with the losses of the held-out top-compute runs."""
    from symscale.fit.parametric import fit_sum_law, sum_law

    train, test = split_by_compute(table, top_fraction)
    if not test.any() or train.sum() < 6:
        raise SymscaleError(f"holdout ({table.source}): too few points on one side of the compute split")
    t = table.select(train)
    fit = fit_sum_law(t["N"], t["D"], t["loss"], method=method, fix_E=fix_E, bootstrap=0)
    predicted = sum_law(fit.params, table["N"][test], table["D"][test])
    return {"n_train": int(train.sum()), **prediction_errors(predicted, table["loss"][test])}


def frontier_holdout(
    x, loss, *, runs=None, fraction=None, top_fraction: float, drop_fraction: float = 0.05, free_l_inf=False
) -> dict[str, float]:
    """Fit the frontier on the points with x below the (1 - top_fraction) quantile of x, and compare its
    prediction with the frontier points of the full data above that cut (the extrapolation a user relies on)."""
    from symscale.fit.frontier import compute_frontier, fit_frontier, run_fractions

    if not 0 < top_fraction < 1:
        raise SymscaleError.invalid("holdout fraction", top_fraction, "a number between 0 and 1")
    x, loss = np.asarray(x, dtype=float), np.asarray(loss, dtype=float)
    cut = np.quantile(x, 1 - top_fraction)
    envelope = compute_frontier(x, loss, runs=runs, fraction=fraction, drop_fraction=drop_fraction)
    test = envelope[x[envelope] > cut]
    if len(test) == 0:
        raise SymscaleError(f"holdout: no frontier point above the compute cut {cut:.4g}")
    train = x <= cut
    fit = fit_frontier(
        x[train],
        loss[train],
        runs=None if runs is None else np.asarray(runs)[train],
        fraction=run_fractions(runs, x, fraction)[train],  # fractions of the full runs, not the cut ones
        drop_fraction=drop_fraction,
        free_l_inf=free_l_inf,
        bootstrap=0,
    )
    from symscale.fit.frontier import frontier_law

    predicted = frontier_law(fit.params, x[test])
    return {"n_train": fit.n_points, "cut": float(cut), **prediction_errors(predicted, loss[test])}
