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
    rel = np.abs(predicted - observed) / observed
    return {
        "n_test": int(len(observed)),
        "mean_abs_rel_error": float(rel.mean()),
        "max_abs_rel_error": float(rel.max()),
    }
