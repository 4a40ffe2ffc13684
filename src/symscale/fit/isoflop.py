"""IsoFLOP profiles (Chinchilla's approach 2): for each compute budget, the loss of every run at that budget
(interpolated along its learning curve in log C), a parabola of log L in log N whose vertex is the
loss-optimal N at that budget, and the power law N_opt = G C^a through the vertices."""

from __future__ import annotations

import numpy as np

from symscale.errors import SymscaleError
from symscale.fit.bootstrap import tracked, unit_index, weights_for
from symscale.fit.results import FitResult, summarize


def _curves(N, C, loss, runs) -> list[tuple[float, np.ndarray, np.ndarray]]:
    """(N, log C sorted, log loss) per run."""
    units, n = unit_index(len(N), runs)
    out = []
    for u in range(n):
        sel = units == u
        order = np.argsort(C[sel])
        out.append((float(N[sel][0]), np.log(C[sel][order]), np.log(loss[sel][order])))
    return out


def default_budgets(C, runs, n_budgets: int = 5) -> np.ndarray:
    """Log-spaced budgets between the largest first evaluation and the median final compute of the runs."""
    units, n = unit_index(len(C), runs)
    finals = np.array([C[units == u].max() for u in range(n)])
    firsts = np.array([C[units == u].min() for u in range(n)])
    lo, hi = max(firsts.max(), finals.min()), np.median(finals)
    if not hi > lo:
        lo, hi = finals.min(), finals.max()
    return np.geomspace(lo, hi, n_budgets)


def _vertices(curves, budgets, min_models: int = 3, window: int = 2) -> np.ndarray:
    """log N_opt per budget (NaN where there is no interior minimum or too few models). The parabola is
    fitted to the best model and its `window` neighbours on each side in N, where the profile is parabolic."""
    out = np.full(len(budgets), np.nan)
    for b, c in enumerate(np.log(budgets)):
        pts = sorted((np.log(n), np.interp(c, lc, ll)) for n, lc, ll in curves if lc[0] <= c <= lc[-1])
        if len({p[0] for p in pts}) < min_models:
            continue
        log_n, log_l = np.array(pts).T
        best = int(np.argmin(log_l))
        if best == 0 or best == len(pts) - 1:
            continue  # the optimum is at the edge of the ladder: not bracketed
        sel = slice(max(0, best - window), best + window + 1)
        k2, k1, _ = np.polyfit(log_n[sel], log_l[sel], 2)
        vertex = -k1 / (2 * k2) if k2 > 0 else np.nan
        if log_n[sel].min() <= vertex <= log_n[sel].max():
            out[b] = vertex
    return out


def _law(budgets, vertices) -> tuple[float, float]:
    ok = np.isfinite(vertices)
    if ok.sum() < 2:
        return np.nan, np.nan
    a, log_g = np.polyfit(np.log(budgets[ok]), vertices[ok], 1)
    return float(a), float(np.exp(log_g))


def fit_isoflop(
    N, C, loss, *, runs, budgets=None, bootstrap: int = 4000, seed: int = 42, group: str = "all"
) -> FitResult:
    """Fit N_opt(C) = G C^a through IsoFLOP vertices; D_opt = C / (k N_opt) gives b = 1 - a."""
    N, C, loss = (np.asarray(v, dtype=float) for v in (N, C, loss))
    if runs is None:
        raise SymscaleError(f"isoflop ({group}): needs a run column (learning curves per run)")
    curves = _curves(N, C, loss, runs)
    budgets = default_budgets(C, runs) if budgets is None else np.asarray(budgets, dtype=float)
    vertices = _vertices(curves, budgets)
    a, G = _law(budgets, vertices)
    if not np.isfinite(a):
        raise SymscaleError(
            f"isoflop ({group}): fewer than 2 budgets have an interior loss minimum over N "
            f"({int(np.isfinite(vertices).sum())} of {len(budgets)}); add widths around the optimum"
        )
    samples = {}
    if bootstrap > 0:
        draws = []
        for w in tracked(weights_for(len(N), runs, bootstrap, seed)):
            sub = np.flatnonzero(w > 0)
            draws.append(_law(budgets, _vertices(_curves(N[sub], C[sub], loss[sub], np.asarray(runs)[sub]), budgets)))
        arr = np.array(draws)
        samples = {"a": arr[:, 0], "G": arr[:, 1]}
    se, ci = summarize(samples) if samples else ({}, {})
    ok = np.isfinite(vertices)
    return FitResult(
        group=group,
        law="isoflop",
        params={"a": a, "G": G},
        se=se,
        ci95=ci,
        derived={"b": 1.0 - a},
        derived_se={"b": se["a"]} if "a" in se else {},
        derived_ci95={"b": [1 - ci["a"][1], 1 - ci["a"][0]]} if "a" in ci else {},
        n_points=int(ok.sum()),
        n_excluded=int((~ok).sum()),
        method="parabola of log L in log N per budget, least squares of log N_opt on log C",
        settings={"budgets": budgets.tolist(), "bootstrap": bootstrap, "seed": seed},
        extra={"budgets": budgets[ok].tolist(), "N_opt": np.exp(vertices[ok]).tolist()},
        samples=samples,
    )
