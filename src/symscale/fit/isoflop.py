"""IsoFLOP profiles (Chinchilla's approach 2): for each compute budget, the loss of every run at that budget
(interpolated along its learning curve in log C), a parabola of log L in log N whose vertex is the
loss-optimal N at that budget, and the power law N_opt = G C^a through the vertices.

Departure from Chinchilla, who trained every size to every budget: the profiles come from one-epoch learning
curves, so a budget sees only the sizes whose curve reaches it (the smallest near its end, the largest near its
start), and a minimum counts only when it is interior to those sizes. Schedule-free training has no schedule
tied to the run's length, which is what makes an intermediate evaluation stand for a shorter run.

The profiles come from the runs on the study's largest data prefix (`isoflop_rows`): Chinchilla's profiles
assume one pool of data that no run exhausts, and a run on a smaller nested prefix is a different pool (a
multi-epoch run repeats it), so at one budget its loss is not that of the same size on the full pool. On the
quickstart, averaging the 10%-prefix runs into the profiles (as one size, mean log L) turned MC-EGNN's
a = 0.616 [0.413, 0.771] into an unresolved 0.187."""

from __future__ import annotations

import numpy as np

from symscale.errors import SymscaleError
from symscale.fit.bootstrap import tracked, unit_index, weights_for
from symscale.fit.results import FitResult, summarize
from symscale.fit.table import LawsTable


def isoflop_rows(rows: LawsTable) -> LawsTable:
    """The rows of the largest data prefix (all rows without a prefix column): those the profiles are built on."""
    if "prefix" not in rows or not len(rows):
        return rows
    prefix = np.asarray(rows["prefix"], dtype=float)
    return rows.select(prefix == np.nanmax(prefix)) if np.isfinite(prefix).any() else rows


def _curves(N, C, loss, runs) -> list[tuple[float, np.ndarray, np.ndarray]]:
    """(N, log C sorted, log loss) per run."""
    units, n = unit_index(len(N), runs)
    out = []
    for u in range(n):
        sel = units == u
        order = np.argsort(C[sel])
        out.append((float(N[sel][0]), np.log(C[sel][order]), np.log(loss[sel][order])))
    return out


def default_budgets(C, runs, n_budgets: int = 8, min_models: int = 3) -> np.ndarray:
    """Log-spaced budgets over the compute range where at least `min_models` runs have a learning curve (each
    run covers C from its first kept evaluation to its last), so that every budget has a profile to look at.

    A run of one epoch covers C only from its first evaluation to its end (a factor of about 1/first-fraction),
    and the runs of a ladder end at compute a hundredfold apart: budgets that every run covers (the largest first
    evaluation to the smallest end) do not exist then. Each budget's profile is over the runs that reach it;
    its minimum counts only when interior to them (`_vertices`)."""
    units, n = unit_index(len(C), runs)
    finals = np.array([C[units == u].max() for u in range(n)])
    firsts = np.array([C[units == u].min() for u in range(n)])
    grid = np.geomspace(firsts.min(), finals.max(), 512)
    covered = ((firsts[None, :] <= grid[:, None]) & (grid[:, None] <= finals[None, :])).sum(axis=1)
    enough = grid[covered >= min(min_models, n)]
    lo, hi = (enough.min(), enough.max()) if len(enough) else (finals.min(), finals.max())
    return np.geomspace(lo, hi, n_budgets)


def _profile(curves, log_c: float) -> tuple[np.ndarray, np.ndarray]:
    """(log N, log L) at budget exp(log_c) over the runs that reach it, sorted by N; runs of one N (seeds, data
    prefixes) averaged in log L, so that each size is one point of the profile."""
    at: dict[float, list[float]] = {}
    for n, lc, ll in curves:
        if lc[0] <= log_c <= lc[-1]:
            at.setdefault(float(np.log(n)), []).append(float(np.interp(log_c, lc, ll)))
    log_n = np.array(sorted(at))
    return log_n, np.array([np.mean(at[x]) for x in log_n])


def _edge(log_l: np.ndarray, min_models: int) -> str | None:
    """Why a profile has no bracketed minimum: "few" (under `min_models` sizes), "low" or "high" (the best size is
    the smallest or the largest of those that reach the budget); None when its best size is interior."""
    if len(log_l) < min_models:
        return "few"
    best = int(np.argmin(log_l))
    return "low" if best == 0 else "high" if best == len(log_l) - 1 else None


def _vertices(curves, budgets, min_models: int = 3, window: int = 2) -> np.ndarray:
    """log N_opt per budget (NaN where there is no interior minimum or too few models). The parabola is
    fitted to the best model and its `window` neighbours on each side in N, where the profile is parabolic."""
    out = np.full(len(budgets), np.nan)
    for b, c in enumerate(np.log(budgets)):
        log_n, log_l = _profile(curves, c)
        if _edge(log_l, min_models) is not None:
            continue  # too few sizes, or the optimum at an edge of the sizes that reach this budget: not bracketed
        best = int(np.argmin(log_l))
        sel = slice(max(0, best - window), best + window + 1)
        k2, k1, _ = np.polyfit(log_n[sel], log_l[sel], 2)
        vertex = -k1 / (2 * k2) if k2 > 0 else np.nan
        if log_n[sel].min() <= vertex <= log_n[sel].max():
            out[b] = vertex
    return out


def _edges(curves, budgets, min_models: int = 3) -> str:
    """Where the loss-optimal size sat at the budgets without an interior minimum, as a clause for an error."""
    edges = [_edge(_profile(curves, c)[1], min_models) for c in np.log(budgets)]
    low, high = edges.count("low"), edges.count("high")
    parts = []
    if low:
        parts.append(f"at {low} the smallest size reaching the budget is best (narrower widths or more data per run)")
    if high:
        parts.append(f"at {high} the largest is best (wider widths)")
    return "; ".join(parts) or "add widths around the optimum"


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
            f"({int(np.isfinite(vertices).sum())} of {len(budgets)}); {_edges(curves, budgets)}"
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
