"""Non-parametric bootstrap: resampling units (whole runs where known, else single points) with replacement.

A resample is represented by integer weights per point (how many times each point was drawn), so a fit on
a resample is the same weighted fit as on the full data; `weights_for` builds them reproducibly from a seed.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np


def unit_index(n_points: int, runs: np.ndarray | None) -> tuple[np.ndarray, int]:
    """(unit of each point, number of units): one unit per distinct run id, or per point without runs."""
    if runs is None:
        return np.arange(n_points), n_points
    _, inverse = np.unique(np.asarray(runs).astype(str), return_inverse=True)
    return inverse, int(inverse.max()) + 1


def weights_for(n_points: int, runs: np.ndarray | None, n_resamples: int, seed: int) -> np.ndarray:
    """[n_resamples, n_points] integer weights: each resample draws as many units as there are, with
    replacement, and a point's weight is the number of times its unit was drawn."""
    units, n_units = unit_index(n_points, runs)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_units, size=(n_resamples, n_units))
    counts = np.zeros((n_resamples, n_units))
    np.add.at(counts, (np.repeat(np.arange(n_resamples), n_units), draws.ravel()), 1.0)
    return counts[:, units]


def default_workers() -> int:
    """Bootstrap worker processes when none are asked for: the CPU count, at most 4."""
    return max(1, min(4, os.cpu_count() or 1))


def map_chunks(fn: Callable[[np.ndarray], np.ndarray], weights: np.ndarray, workers: int | None) -> np.ndarray:
    """Apply `fn` (a picklable function of a [k, n_points] weight block returning [k, ...]) to chunks of
    `weights` in worker processes, and stack the results in order."""
    workers = default_workers() if workers is None else max(1, int(workers))
    if workers == 1 or len(weights) < 8:
        return fn(weights)
    import multiprocessing as mp

    chunks = np.array_split(weights, workers * 4)
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    with mp.get_context(method).Pool(workers) as pool:
        parts = pool.map(fn, chunks)
    return np.concatenate(parts)
