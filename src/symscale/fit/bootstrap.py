"""Non-parametric bootstrap: resampling units (whole runs where known, else single points) with replacement.

A resample is represented by integer weights per point (how many times each point was drawn), so a fit on
a resample is the same weighted fit as on the full data; `weights_for` builds them reproducibly from a seed.

Progress: inside `with reporting(callback):`, every bootstrap of a fit calls `callback(done, total)` with the
resamples refitted so far (0 when it starts, `total` when it ends), from `tracked` (a loop over resamples)
or `map_chunks` (after each chunk). The fits never print; the CLI's callback draws the bar.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextvars import ContextVar

import numpy as np

from symscale.errors import SymscaleError

Progress = Callable[[int, int], None]  # (resamples done, resamples of this bootstrap)
_progress: ContextVar[Progress | None] = ContextVar("bootstrap_progress", default=None)


@contextlib.contextmanager
def reporting(callback: Progress | None) -> Iterator[None]:
    """Within the block, every bootstrap reports `callback(done, total)` as its resamples are refitted."""
    token = _progress.set(callback)
    try:
        yield
    finally:
        _progress.reset(token)


def _report(done: int, total: int) -> None:
    callback = _progress.get()
    if callback is not None:
        callback(done, total)


def tracked(weights: np.ndarray) -> Iterator[np.ndarray]:
    """The resamples (rows of `weights`) one by one, each reported done once the loop comes back for the next."""
    _report(0, len(weights))
    for done, w in enumerate(weights, start=1):
        yield w
        _report(done, len(weights))


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


# seconds to start a pool of bootstrap workers and import the fit in each (measured 1-3.5 s on a 2-core machine:
# about 1 s from a plain process, 3.4 s from a study's process, with torch imported); a bootstrap that would take
# less than it serially saves nothing by going parallel
POOL_START_SECONDS = 2.0


def map_chunks(fn: Callable[[np.ndarray], np.ndarray], weights: np.ndarray, workers: int | None) -> np.ndarray:
    """Apply `fn` (a picklable function of a [k, n_points] weight block returning [k, ...]) to chunks of
    `weights` in worker processes, and stack the results in order.

    The chunks are the same whether they run here or in workers, so the result does not depend on where they
    ran (a refit is not bit-identical across chunkings: the batched optimizer advances a chunk's resamples
    together). They run in this process when the pool would not pay for its start: one resample is timed
    first, and a bootstrap estimated at less than `POOL_START_SECONDS` * workers / (workers - 1) serially
    (the point where the pool's start equals the time it saves) stays here."""
    workers = default_workers() if workers is None else max(1, int(workers))
    total = len(weights)
    _report(0, total)
    if workers == 1 or total < 8:
        out = fn(weights)
        _report(total, total)
        return out
    chunks = np.array_split(weights, workers * 4)
    if _serial_seconds(fn, weights) < POOL_START_SECONDS * workers / (workers - 1):
        return _in_process(fn, chunks, total)
    return _in_pool(fn, chunks, total, workers)


def _serial_seconds(fn: Callable[[np.ndarray], np.ndarray], weights: np.ndarray) -> float:
    """Estimated seconds of `fn` on all of `weights` in this process, from one resample (its result is not
    used: a chunk of one would change the chunking). Vectorised over a chunk, a resample costs less than alone,
    so this errs towards the pool."""
    t0 = time.perf_counter()
    fn(weights[:1])
    return (time.perf_counter() - t0) * len(weights)


def _in_process(fn: Callable[[np.ndarray], np.ndarray], chunks: list[np.ndarray], total: int) -> np.ndarray:
    parts, done = [], 0
    for chunk in chunks:
        parts.append(fn(chunk))
        done += len(chunk)
        _report(done, total)
    return np.concatenate(parts)


def _in_pool(fn: Callable[[np.ndarray], np.ndarray], chunks: list[np.ndarray], total: int, workers: int) -> np.ndarray:
    import multiprocessing as mp

    # forkserver, not fork: a fork of a process that holds threads (torch, a test runner, a progress bar) can
    # inherit a held lock and hang forever (seen in the test suite); the server forks from a clean process
    method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
    parts, done = [], 0
    # an executor, not multiprocessing.Pool: a worker that dies (killed, out of memory) breaks the pool and the
    # wait for its chunk ends with an error instead of lasting for ever
    with ProcessPoolExecutor(workers, mp_context=mp.get_context(method)) as pool:
        try:
            for chunk, part in zip(chunks, pool.map(fn, chunks), strict=True):  # in order, as each is ready
                parts.append(part)
                done += len(chunk)
                _report(done, total)
        except BrokenProcessPool:
            raise SymscaleError(
                "a bootstrap worker process died (killed, out of memory or crashed) before the intervals were "
                "computed; nothing was written: run the fit again"
            ) from None
    return np.concatenate(parts)
