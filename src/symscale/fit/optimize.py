"""A batched L-BFGS: many independent smooth-ish minimisations (bootstrap resamples, grid starts) advanced
together with numpy, so the cost per iteration is one vectorised objective evaluation for all of them.

Each problem keeps its own curvature history and its own backtracking (Armijo) line search; a problem stops
when its objective no longer decreases by more than `ftol` relative (as L-BFGS-B's factr criterion does), its
gradient is below `gtol`, or after `max_iter` iterations. Written for the Huber objectives of `parametric`,
whose kinks make the relative-reduction test the one that ends most runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# fg(X [k, n], rows [k]) -> (f [k], G [k, n]): the objectives of problems `rows` at X
BatchObjective = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class BatchResult:
    """The end of S independent L-BFGS minimisations run side by side."""

    x: np.ndarray  # [S, n]
    fun: np.ndarray  # [S]
    iterations: np.ndarray  # [S]
    converged: np.ndarray  # [S] bool: stopped by a tolerance, not by max_iter


def batched_lbfgs(
    fg: BatchObjective,
    x0: np.ndarray,
    *,
    memory: int = 10,
    max_iter: int = 3000,
    ftol: float = 1e-13,
    gtol: float = 1e-10,
    patience: int = 3,
) -> BatchResult:
    """Minimise S problems at once from starts `x0` [S, n] with L-BFGS (two-loop recursion, `memory` pairs)
    and an Armijo backtracking line search; `fg(x, rows)` returns the objectives [k] and gradients [k, n]
    of the problems `rows` at `x` [k, n]. A problem stops when its objective changed by less than `ftol`
    (relative) for `patience` steps, its gradient's largest entry is below `gtol` or the line search finds no
    decrease (all three count as converged); otherwise it stops unconverged after `max_iter` steps."""
    x = np.array(x0, dtype=float)
    S, n = x.shape
    rows = np.arange(S)
    f, g = fg(x, rows)
    s_hist = np.zeros((memory, S, n))
    y_hist = np.zeros((memory, S, n))
    rho = np.zeros((memory, S))
    count = np.zeros(S, dtype=int)  # pairs stored per problem
    stall = np.zeros(S, dtype=int)
    iters = np.zeros(S, dtype=int)
    active = np.ones(S, dtype=bool)
    converged = np.zeros(S, dtype=bool)
    for _ in range(max_iter):
        idx = np.flatnonzero(active)
        if len(idx) == 0:
            break
        d = -_two_loop(g[idx], s_hist[:, idx], y_hist[:, idx], rho[:, idx], count[idx])
        slope = np.einsum("ij,ij->i", d, g[idx])
        bad = slope >= 0  # not a descent direction: restart from steepest descent
        if bad.any():
            d[bad] = -g[idx][bad]
            slope[bad] = -np.einsum("ij,ij->i", g[idx][bad], g[idx][bad])
            count[idx[bad]] = 0
        first = count[idx] == 0
        if first.any():  # unknown scale: a first step of length at most 0.1
            norm = np.linalg.norm(d[first], axis=1, keepdims=True)
            d[first] *= np.minimum(1.0, 0.1 / np.maximum(norm, 1e-300))
            slope[first] = np.einsum("ij,ij->i", d[first], g[idx][first])
        x_new, f_new, g_new, ok = _armijo(fg, x[idx], f[idx], d, slope, idx)
        s = x_new - x[idx]
        y = g_new - g[idx]
        sy = np.einsum("ij,ij->i", s, y)
        good = ok & (sy > 1e-300)
        slot = count[idx] % memory
        gi = idx[good]
        s_hist[slot[good], gi] = s[good]
        y_hist[slot[good], gi] = y[good]
        rho[slot[good], gi] = 1.0 / sy[good]
        count[gi] += 1
        reduction = (f[idx] - f_new) / np.maximum(np.maximum(np.abs(f[idx]), np.abs(f_new)), 1e-300)
        x[idx], f[idx], g[idx] = x_new, f_new, g_new
        iters[idx] += 1
        stall[idx] = np.where(reduction <= ftol, stall[idx] + 1, 0)
        done = (stall[idx] >= patience) | (np.abs(g_new).max(axis=1) < gtol) | ~ok
        converged[idx[done]] = True
        active[idx[done]] = False
    return BatchResult(x=x, fun=f, iterations=iters, converged=converged)


def _two_loop(g, s_hist, y_hist, rho, count) -> np.ndarray:
    """H g for each problem from its own (s, y) history (ring buffers; `count` pairs stored)."""
    memory = s_hist.shape[0]
    q = g.copy()
    alphas = np.zeros((memory, len(g)))
    order = []
    for back in range(memory):  # newest first
        slot = (count - 1 - back) % memory
        valid = back < np.minimum(count, memory)
        order.append((slot, valid))
        rows = np.arange(len(g))
        s, y, r = s_hist[slot, rows], y_hist[slot, rows], rho[slot, rows] * valid
        a = r * np.einsum("ij,ij->i", s, q)
        alphas[back] = a
        q -= a[:, None] * y
    newest = (count - 1) % memory
    rows = np.arange(len(g))
    s0, y0 = s_hist[newest, rows], y_hist[newest, rows]
    yy = np.einsum("ij,ij->i", y0, y0)
    gamma = np.where(count > 0, np.einsum("ij,ij->i", s0, y0) / np.maximum(yy, 1e-300), 1.0)
    r = q * gamma[:, None]
    for back in reversed(range(memory)):
        slot, valid = order[back]
        s, y, rr = s_hist[slot, rows], y_hist[slot, rows], rho[slot, rows] * valid
        b = rr * np.einsum("ij,ij->i", y, r)
        r += (alphas[back] - b)[:, None] * s
    return r


def _armijo(fg, x, f, d, slope, idx, c1: float = 1e-4, max_halvings: int = 40):
    """Backtracking from step 1 until f(x + t d) <= f + c1 t slope; returns (x, f, g, success)."""
    t = np.ones(len(x))
    x_out, f_out = x.copy(), f.copy()
    g_out = np.zeros_like(x)
    pending = np.arange(len(x))
    ok = np.zeros(len(x), dtype=bool)
    for _ in range(max_halvings):
        trial = x[pending] + t[pending, None] * d[pending]
        f_t, g_t = fg(trial, idx[pending])
        accept = f_t <= f[pending] + c1 * t[pending] * slope[pending]
        acc = pending[accept]
        x_out[acc], f_out[acc], g_out[acc] = trial[accept], f_t[accept], g_t[accept]
        ok[acc] = True
        pending = pending[~accept]
        if len(pending) == 0:
            break
        t[pending] *= 0.5
    if len(pending):  # no acceptable step: stay, with the gradient at the current point
        _, g_out[pending] = fg(x[pending], idx[pending])
    return x_out, f_out, g_out, ok
