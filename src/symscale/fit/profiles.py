"""Profiles across model sizes, read off the learning curves: the loss of each N at a fixed D or C, the IsoFLOP
parabola through such a profile, and the compute-optimal points (C, N*, D*) a figure draws.

These are what the report's scaling and allocation figures show; they live here so that the report only
draws typed values. Each run's curve is interpolated in log-log space (linear in log x, log L); runs of one N
that reach the level (several data prefixes or seeds) are combined by their geometric mean. The parabola is
the same least-squares fit of log L on log N that `symscale.fit.isoflop` uses per budget, over the whole
profile here (the fit uses a window around the minimum); only its minimum inside the sampled N counts.

Symbols: N parameters, D atoms seen, C training FLOPs, L validation loss, k in C = k N D.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from symscale.fit.results import FitResult
from symscale.fit.table import LawsTable


def _positive(*arrays: np.ndarray) -> np.ndarray:
    mask = np.ones(len(arrays[0]), dtype=bool)
    for a in arrays:
        a = np.asarray(a, dtype=float)
        mask &= np.isfinite(a) & (a > 0)
    return mask


def run_indices(rows: LawsTable) -> list[np.ndarray]:
    """Row indices of each run of `rows` (columns run, D), each ordered by D."""
    if len(rows) == 0:
        return []
    _, codes = np.unique(np.asarray(rows["run"]).astype(str), return_inverse=True)
    order = np.lexsort((np.asarray(rows["D"], float), codes))  # by run, then by D
    return np.split(order, np.flatnonzero(np.diff(codes[order])) + 1)


@dataclass(frozen=True)
class Profile:
    """The loss of each model size at one level of D (atoms) or C (FLOPs)."""

    level: float
    N: np.ndarray  # [n_sizes], increasing
    loss: np.ndarray  # [n_sizes]


def profile_at(rows: LawsTable, x_col: str, level: float, y_col: str = "loss") -> Profile:
    """The profile at `x_col` = `level` over the runs whose curve spans it (columns N, run, D, x_col, y_col)."""
    found: dict[float, list[float]] = {}
    for idx in run_indices(rows):
        ok = _positive(rows[x_col][idx], rows[y_col][idx])
        x, y = np.asarray(rows[x_col][idx][ok], float), np.asarray(rows[y_col][idx][ok], float)
        if len(x) < 2 or not x.min() <= level <= x.max():
            continue
        order = np.argsort(x)
        value = np.exp(np.interp(np.log(level), np.log(x[order]), np.log(y[order])))
        found.setdefault(float(rows["N"][idx[0]]), []).append(float(value))
    sizes = np.array(sorted(found))
    return Profile(level, sizes, np.array([np.exp(np.mean(np.log(found[n]))) for n in sizes]))


def fixed_levels(rows: LawsTable, x_col: str, k: int, min_sizes: int = 3) -> list[float]:
    """Up to `k` log-spaced values of `x_col` reached by at least `min_sizes` model sizes (fewer if the
    family has fewer sizes, but at least 2)."""
    ok = _positive(rows[x_col])
    if ok.sum() < 2:
        return []
    n = np.asarray(rows["N"], float)
    need = max(2, min(min_sizes, len(set(n[np.isfinite(n)].tolist()))))
    x = np.asarray(rows[x_col][ok], float)
    grid = np.geomspace(x.min(), x.max(), 40)[1:-1]
    eligible = [v for v in grid if len(profile_at(rows, x_col, v).N) >= need]
    if not eligible:
        return []
    picks = np.unique(np.linspace(0, len(eligible) - 1, min(k, len(eligible))).round().astype(int))
    return [float(eligible[i]) for i in picks]


@dataclass(frozen=True)
class Parabola:
    """log L = c2 (log N)^2 + c1 log N + c0 through an IsoFLOP profile, and its minimum when it has one
    inside the sampled N (None otherwise)."""

    coefficients: tuple[float, float, float]  # c2, c1, c0
    N_range: tuple[float, float]
    N_opt: float | None
    loss_opt: float | None

    def curve(self, n: int = 60) -> tuple[np.ndarray, np.ndarray]:
        """(N, L) on a log grid over the sampled N."""
        grid = np.linspace(np.log(self.N_range[0]), np.log(self.N_range[1]), n)
        return np.exp(grid), np.exp(np.polyval(self.coefficients, grid))


def isoflop_parabola(profile: Profile) -> Parabola | None:
    """The parabola of log L in log N through a profile of at least 3 sizes, or None."""
    if len(profile.N) < 3:
        return None
    log_n = np.log(profile.N)
    c2, c1, c0 = (float(c) for c in np.polyfit(log_n, np.log(profile.loss), 2))
    n_range = (float(profile.N[0]), float(profile.N[-1]))
    vertex = -c1 / (2 * c2) if c2 > 0 else math.nan  # a parabola that opens downwards has no minimum
    if not log_n[0] < vertex < log_n[-1]:
        return Parabola((c2, c1, c0), n_range, None, None)
    return Parabola((c2, c1, c0), n_range, math.exp(vertex), float(np.exp(np.polyval([c2, c1, c0], vertex))))


def flops_per_param_atom(rows: LawsTable) -> float | None:
    """k in C = k N D (3 kappa), the median of C / (N D) over the rows, or None without a usable row."""
    ok = _positive(rows["C"], rows["N"], rows["D"])
    if not ok.any():
        return None
    C, N, D = (np.asarray(rows[c][ok], float) for c in ("C", "N", "D"))
    return float(np.median(C / (N * D)))


def isoflop_budgets(iso: FitResult | None, rows: LawsTable, k: int) -> list[float]:
    """The IsoFLOP fit's budgets when it recorded them, else up to `k` log-spaced budgets of the rows' own."""
    budgets = (iso.settings.get("budgets") if iso is not None else None) or []
    return [float(b) for b in budgets] if budgets else fixed_levels(rows, "C", k)


@dataclass(frozen=True)
class AllocationPoints:
    """Compute-optimal points (C, N*, D*) of a family and the law N*(C) = G C^a through them, D* = C/(k N*).

    `source` is "isoflop" (the IsoFLOP fit's vertices and law) or "sum" (the profiles' parabola minima and
    the sum law's closed form); G and a are None when no law is available."""

    C: np.ndarray  # [n_budgets], FLOPs
    N_star: np.ndarray  # [n_budgets]
    D_star: np.ndarray  # [n_budgets], atoms
    k: float
    source: str
    G: float | None = None
    a: float | None = None

    def curve(self, C: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """(N*, D*) along the law at compute `C`, or None without a law."""
        if self.G is None or self.a is None:
            return None
        n_star = self.G * np.asarray(C, float) ** self.a
        return n_star, np.asarray(C, float) / (self.k * n_star)


def allocation_points(
    rows: LawsTable, iso: FitResult | None, sum_fit: FitResult | None, n_budgets: int = 8
) -> AllocationPoints | None:
    """From the IsoFLOP fit (its vertices and N* = G C^a) when it succeeded, else from the parabola minima of
    the profiles with the sum law's N* = G_s (C/k)^(beta/(alpha+beta)); None when neither gives a point."""
    k = flops_per_param_atom(rows)
    if k is None:
        return None
    if iso is not None and iso.ok and iso.extra.get("budgets"):
        c, n = np.asarray(iso.extra["budgets"], float), np.asarray(iso.extra["N_opt"], float)
        return AllocationPoints(c, n, c / (k * n), k, "isoflop", iso.params["G"], iso.params["a"])
    optima = [
        (budget, p.N_opt)
        for budget in isoflop_budgets(iso, rows, n_budgets)
        if (p := isoflop_parabola(profile_at(rows, "C", budget))) is not None and p.N_opt is not None
    ]
    if not optima:
        return None
    c, n = (np.array(v) for v in zip(*optima))
    G, a = _sum_law_allocation_law(sum_fit, k)
    return AllocationPoints(c, n, c / (k * n), k, "sum", G, a)


def _sum_law_allocation_law(sum_fit: FitResult | None, k: float) -> tuple[float | None, float | None]:
    """(G, a) of N* = G C^a minimising A N^-alpha + B D^-beta at N D = C / k (see symscale.fit.allocation)."""
    if sum_fit is None or not sum_fit.ok:
        return None, None
    q = sum_fit.params
    ratio, total = q["alpha"] * q["A"] / (q["beta"] * q["B"]), q["alpha"] + q["beta"]
    if not ratio > 0 or not total > 0:  # a sum law with a negative exponent has no compute-optimal size
        return None, None
    a = q["beta"] / total
    G = ratio ** (1 / total)
    return float(G * k**-a), float(a)


def profiles(rows: LawsTable, x_col: str, levels: Sequence[float]) -> list[Profile]:
    """The profile at each of `levels` of `x_col`."""
    return [profile_at(rows, x_col, level) for level in levels]
