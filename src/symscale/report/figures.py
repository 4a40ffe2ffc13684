"""The report's figures, drawn with matplotlib's object API (no pyplot state, Agg rendering) at 150 dpi.

Every function takes the study as read by `symscale.report.render.load_study` and an output folder, draws one
PNG and returns a `Figure`, or None when the study has no data for it. Scaling axes are logarithmic; each
family keeps one colour in every figure (`family_color`).

Symbols: N parameters, D atoms seen, C training FLOPs, H device-hours, L validation loss.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import cm, colormaps, colors, ticker
from matplotlib.figure import Figure as MplFigure

from symscale.report import reference, tables

DPI = 150
LOSS_LABEL = "validation loss L [force RMS units]"
AXIS_LABELS = {
    "C": "training compute C [FLOPs]",
    "H": "training time H [device-hours]",
    "N": "parameters N [count]",
    "D": "data seen D [atoms]",
}
FAMILY_COLORS = {"mpnn": "#d62728", "egnn": "#ff7f0e", "gemnet_oc": "#2ca02c", "esen": "#1f77b4"}
EXTRA_COLORS = ("#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
MODE_COLORS = {
    "architecture": "#222222",
    "augmentation": "#1f77b4",
    "symmetry_loss": "#d62728",
    "multi_epoch": "#2ca02c",
}
N_CMAP = "viridis"  # colour by N (learning curves, data scaling)
LEVEL_CMAP = "plasma"  # colour by a fixed D or C level


@dataclass(frozen=True)
class Figure:
    """A PNG written for the report."""

    key: str
    path: Path
    title: str
    caption: str


# ---------------------------------------------------------------- colours, labels, selections


def family_color(arch: str, archs: Sequence[str]) -> str:
    """The family's colour: fixed for the four paper families, then a stable pick for others."""
    if arch in FAMILY_COLORS:
        return FAMILY_COLORS[arch]
    others = [a for a in archs if a not in FAMILY_COLORS]
    return EXTRA_COLORS[others.index(arch) % len(EXTRA_COLORS)] if arch in others else "#7f7f7f"


def family_label(info: reference.FamilyInfo) -> str:
    """`MC-EGNN (E(3), ν=2, ℓ=1)`."""
    ell = "–" if info.l is None else info.l
    return f"{info.label} ({info.group}, ν={info.nu}, ℓ={ell})"


def select(laws: dict[str, np.ndarray], arch: str | None = None, mode: str | None = None) -> dict[str, np.ndarray]:
    """The rows of the laws table for one family and/or mode."""
    mask = np.ones(len(laws["loss"]), dtype=bool)
    if arch is not None:
        mask &= laws["arch"] == arch
    if mode is not None:
        mask &= laws["mode"] == mode
    return {k: v[mask] for k, v in laws.items()}


def _family_rows(data: Any, arch: str) -> dict[str, np.ndarray]:
    """The family's architecture-mode rows (all modes if it has no architecture-mode run)."""
    rows = select(data.laws, arch, tables.ARCHITECTURE)
    return rows if len(rows["loss"]) else select(data.laws, arch)


def _has_positive(data: Any, arch: str, *columns: str) -> bool:
    """Whether the family has at least one row where all `columns` are finite and positive."""
    rows = _family_rows(data, arch)
    return bool(_positive(*(rows[c] for c in columns)).any())


def _positive(*arrays: np.ndarray) -> np.ndarray:
    mask = np.ones(len(arrays[0]), dtype=bool)
    for a in arrays:
        mask &= np.isfinite(a) & (a > 0)
    return mask


def lower_envelope(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Mask of the points on the lower envelope: lower loss than every point at smaller or equal x."""
    order = np.lexsort((y, x))
    running = np.minimum.accumulate(y[order])
    keep = np.zeros(len(x), dtype=bool)
    keep[order] = y[order] <= running
    keep[order[1:]] &= y[order][1:] < running[:-1]
    return keep


def _log_norm(values: np.ndarray) -> colors.LogNorm:
    lo, hi = float(np.min(values)), float(np.max(values))
    return colors.LogNorm(lo / 1.5, hi * 1.5) if lo == hi else colors.LogNorm(lo, hi)


class _PlainLogFormatter(ticker.LogFormatter):
    """Log-axis labels as plain numbers (0.6, 1, 20); matplotlib picks which minor ticks get one."""

    def _num_to_string(self, x: float, vmin: float, vmax: float) -> str:
        return f"{x:.3g}" if 1e-3 <= x < 1e4 else f"{x:.0e}"


def _log_axes(ax: Any, xlabel: str, ylabel: str = LOSS_LABEL) -> None:
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    # label minor ticks only where no decade is in view, so that 2x10^4 3x10^4 ... never crowd
    ax.xaxis.set_minor_formatter(ticker.LogFormatterSciNotation(labelOnlyBase=False, minor_thresholds=(0, 0.4)))
    if ylabel == LOSS_LABEL or "eV" in ylabel:  # plain numbers (0.6, 1, 2) rather than 6x10^-1
        ax.yaxis.set_major_formatter(_PlainLogFormatter())
        ax.yaxis.set_minor_formatter(_PlainLogFormatter(labelOnlyBase=False, minor_thresholds=(1.2, 0.5)))
    else:
        ax.yaxis.set_minor_formatter(ticker.LogFormatterSciNotation(labelOnlyBase=False, minor_thresholds=(0, 0.4)))
    ax.grid(True, which="major", alpha=0.3)
    ax.grid(True, which="minor", alpha=0.08)


def _grid(n: int, width: float = 5.4, height: float = 4.3) -> tuple[MplFigure, list[Any]]:
    ncols = n if n <= 3 else (2 if n == 4 else 3)
    nrows = math.ceil(n / ncols)
    fig = MplFigure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _legend_below(ax: Any) -> None:
    """One legend line per family under the panel, where it cannot hide data."""
    ax.legend(fontsize=8.5, loc="upper center", bbox_to_anchor=(0.5, -0.13), frameon=False)


def _title(ax: Any, data: Any, arch: str, extra: str = "") -> None:
    text = family_label(data.families[arch]) + (f"\n{extra}" if extra else "")
    ax.set_title(text, color=family_color(arch, data.archs), fontsize=10)


def _save(fig: MplFigure, out_dir: Path, key: str, title: str, caption: str) -> Figure:
    path = Path(out_dir) / f"{key}.png"
    fig.savefig(path, dpi=DPI, metadata={"Software": None}, facecolor="white")
    return Figure(key, path, title, caption)


def _gamma_text(name: str, est: tables.Estimate | None) -> str:
    return f"{name} = {tables.fmt_estimate(est)}" if est is not None else f"{name}: not fitted"


# ---------------------------------------------------------------- interpolation along learning curves


def _runs(rows: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Row indices of each run, ordered by D."""
    if len(rows["run"]) == 0:
        return []
    _, codes = np.unique(rows["run"].astype(str), return_inverse=True)
    order = np.lexsort((rows["D"], codes))  # by run, then by D
    starts = np.flatnonzero(np.diff(codes[order])) + 1
    return np.split(order, starts)


def _covers(rows: dict[str, np.ndarray], idx: np.ndarray, x_col: str, value: float) -> bool:
    x = rows[x_col][idx]
    x = x[np.isfinite(x) & (x > 0)]
    return len(x) >= 2 and x.min() <= value <= x.max()


def interpolate_at(
    rows: dict[str, np.ndarray], x_col: str, value: float, y_col: str = "loss"
) -> tuple[np.ndarray, np.ndarray]:
    """(N, y at x_col = value) per model size: log-log interpolation along each run's curve, geometric mean
    over the runs of one N that reach `value` (several data prefixes or seeds)."""
    found: dict[float, list[float]] = {}
    for idx in _runs(rows):
        if not _covers(rows, idx, x_col, value):
            continue
        ok = _positive(rows[x_col][idx], rows[y_col][idx])
        x, y = rows[x_col][idx][ok], rows[y_col][idx][ok]
        order = np.argsort(x)
        found.setdefault(float(rows["N"][idx[0]]), []).append(
            float(np.exp(np.interp(np.log(value), np.log(x[order]), np.log(y[order]))))
        )
    sizes = np.array(sorted(found))
    return sizes, np.array([np.exp(np.mean(np.log(found[n]))) for n in sizes])


def fixed_levels(rows: dict[str, np.ndarray], x_col: str, k: int, min_sizes: int = 3) -> list[float]:
    """Up to k values of x_col (log-spaced) reached by at least `min_sizes` model sizes (fewer if the family
    has fewer sizes, but at least 2)."""
    ok = _positive(rows[x_col])
    if ok.sum() < 2:
        return []
    n_sizes = len(set(rows["N"][np.isfinite(rows["N"])].tolist()))
    need = max(2, min(min_sizes, n_sizes))
    grid = np.geomspace(rows[x_col][ok].min(), rows[x_col][ok].max(), 40)[1:-1]
    eligible = [v for v in grid if len(interpolate_at(rows, x_col, v)[0]) >= need]
    if not eligible:
        return []
    picks = np.unique(np.linspace(0, len(eligible) - 1, min(k, len(eligible))).round().astype(int))
    return [float(eligible[i]) for i in picks]


def isoflop_optima(rows: dict[str, np.ndarray], budgets: Sequence[float]) -> list[tuple[float, float]]:
    """(C, N*) per compute budget: minimum of a parabola in log N fitted to the IsoFLOP profile, kept only
    when the profile curves upward and the minimum lies inside the sampled N."""
    out = []
    for budget in budgets:
        sizes, losses = interpolate_at(rows, "C", budget)
        if len(sizes) < 3:
            continue
        c2, c1, _ = np.polyfit(np.log(sizes), np.log(losses), 2)
        if c2 > 0 and np.log(sizes[0]) < -c1 / (2 * c2) < np.log(sizes[-1]):
            out.append((budget, float(np.exp(-c1 / (2 * c2)))))
    return out


def flops_per_param_atom(rows: dict[str, np.ndarray]) -> float | None:
    """k in C = k N D (3 kappa), the median of C / (N D) over the family's evaluations."""
    ok = _positive(rows["C"], rows["N"], rows["D"])
    return float(np.median(rows["C"][ok] / (rows["N"][ok] * rows["D"][ok]))) if ok.any() else None


def _budgets(data: Any, arch: str, rows: dict[str, np.ndarray], k: int) -> list[float]:
    """The IsoFLOP fit's budgets when it recorded them, else up to k log-spaced budgets of the report's own."""
    iso = tables.find_fit(data.fits, arch, "isoflop")
    budgets = ((iso or {}).get("settings") or {}).get("budgets")
    return [float(b) for b in budgets] if budgets else fixed_levels(rows, "C", k)


# ---------------------------------------------------------------- 1. compute frontier


def _frontier_points(x: np.ndarray, y: np.ndarray, fit: dict | None) -> tuple[np.ndarray, np.ndarray]:
    """The points the frontier fit used (it drops the start of each run), else the lower envelope of all."""
    extra = (fit or {}).get("extra") or {}
    if fit and fit.get("ok") and extra.get("frontier_x"):
        return np.asarray(extra["frontier_x"], float), np.asarray(extra["frontier_loss"], float)
    env = lower_envelope(x, y)
    return x[env], y[env]


def _draw_frontier(ax: Any, rows: dict, axis: str, color: str, label: str, fit: dict | None) -> bool:
    ok = _positive(rows[axis], rows["loss"])
    if not ok.any():
        return False
    x, y = rows[axis][ok], rows["loss"][ok]
    ax.scatter(x, y, s=7, color=color, alpha=0.18, linewidths=0)
    fx, fy = _frontier_points(x, y, fit)
    ax.scatter(fx, fy, s=24, color=color, edgecolors="black", linewidths=0.4, zorder=3)
    gamma = tables.estimate(fit, "gamma")
    if gamma is None:
        reason = "not possible" if fit is not None else "not fitted"
        ax.plot([], [], color=color, lw=2, ls=":", label=f"{label}: γ {reason}")
        return True
    grid = np.geomspace(x.min(), x.max(), 200)
    curve = (tables.estimate(fit, "L_inf") or tables.Estimate(0.0)).value + fit["params"]["F"] * grid**-gamma.value
    ax.plot(grid, curve, color=color, lw=2, label=f"{label}: γ = {tables.fmt_estimate(gamma)}")
    return True


def frontier_figure(data: Any, out_dir: Path, mode: str = tables.ARCHITECTURE) -> Figure | None:
    """Validation loss against training FLOPs (left) and device-hours (right): every evaluation faint, the
    lower envelope bold, the fitted law L = L_inf + F x^-gamma as a line with gamma and its 95% interval."""
    fig = MplFigure(figsize=(13.5, 5.2 + 0.22 * len(data.archs)), layout="constrained")
    axes = fig.subplots(1, 2)
    drawn = False
    for ax, axis, law in ((axes[0], "C", "frontier_C"), (axes[1], "H", "frontier_H")):
        for arch in data.archs:
            rows = select(data.laws, arch, mode)
            color, label = family_color(arch, data.archs), family_label(data.families[arch])
            fit = tables.find_fit(data.fits, arch, law, mode)
            drawn |= _draw_frontier(ax, rows, axis, color, label, fit)
        if ax.has_data():
            _log_axes(ax, AXIS_LABELS[axis])
            _legend_below(ax)
        ax.set_title(f"Compute frontier against {'training FLOPs' if axis == 'C' else 'device-hours'}")
    if not drawn:
        return None
    caption = (
        "Validation loss against training compute, one colour per family. Faint: every evaluation of every run; "
        "bold: the compute frontier (lower envelope, as used by the fit); line: the fitted law "
        "L = L∞ + F·x^(−γ), γ with its 95% interval in the legend. Left in FLOPs, right in device-hours."
    )
    return _save(fig, out_dir, "frontier", "Compute frontier", caption)


# ---------------------------------------------------------------- 2. learning curves


def learning_curves_figure(data: Any, out_dir: Path) -> Figure | None:
    """Loss against atoms seen, one panel per family, one line per run coloured by N."""
    archs = [a for a in data.archs if _has_positive(data, a, "D", "loss")]
    if not archs:
        return None
    fig, axes = _grid(len(archs))
    for ax, arch in zip(axes, archs):
        rows = _family_rows(data, arch)
        sizes = rows["N"][np.isfinite(rows["N"]) & (rows["N"] > 0)]
        norm = _log_norm(sizes) if len(sizes) else colors.LogNorm(1, 10)
        cmap = colormaps[N_CMAP]
        for idx in _runs(rows):
            ok = _positive(rows["D"][idx], rows["loss"][idx])
            n = rows["N"][idx[0]]
            color = cmap(norm(n)) if np.isfinite(n) and n > 0 else "grey"
            ax.plot(rows["D"][idx][ok], rows["loss"][idx][ok], color=color, lw=1.3, marker="o", ms=2.5)
        _log_axes(ax, AXIS_LABELS["D"])
        fig.colorbar(cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="N [parameters]")
        _title(ax, data, arch)
    caption = "Learning curves: validation loss against atoms seen, one line per run, coloured by parameter count N."
    return _save(fig, out_dir, "learning_curves", "Learning curves", caption)


# ---------------------------------------------------------------- 3./4. parameter and data scaling


def sum_law(fit: dict | None, N: np.ndarray | float, D: np.ndarray | float) -> np.ndarray | None:
    """L(N, D) = E + A N^-alpha + B D^-beta from a sum-law fit, or None when the fit is missing."""
    if fit is None or not fit.get("ok"):
        return None
    p = fit["params"]
    return p.get("E", 0.0) + p["A"] * np.asarray(N, float) ** -p["alpha"] + p["B"] * np.asarray(D, float) ** -p["beta"]


def _sum_fit_title(fit: dict | None, name: str) -> str:
    if fit is None:
        return "sum law: not fitted"
    if not fit.get("ok"):
        return "sum law: not possible"
    return _gamma_text(name, tables.estimate(fit, name.replace("α", "alpha").replace("β", "beta")))


def parameter_scaling_figure(data: Any, out_dir: Path) -> Figure | None:
    """Loss against N at a few fixed D (interpolated along the learning curves), with the sum-law fit."""
    archs = [a for a in data.archs if fixed_levels(_family_rows(data, a), "D", 3)]
    if not archs:
        return None
    fig, axes = _grid(len(archs))
    cmap = colormaps[LEVEL_CMAP]
    for ax, arch in zip(axes, archs):
        rows = _family_rows(data, arch)
        fit = tables.find_fit(data.fits, arch, "sum")
        levels = fixed_levels(rows, "D", 3)
        n_grid = np.geomspace(np.nanmin(rows["N"]), np.nanmax(rows["N"]), 100)
        for i, level in enumerate(levels):
            color = cmap(0.1 + 0.75 * i / max(1, len(levels) - 1))
            sizes, losses = interpolate_at(rows, "D", level)
            ax.plot(sizes, losses, "o", color=color, ms=6, label=f"D = {level:.2g} atoms")
            curve = sum_law(fit, n_grid, level)
            if curve is not None:
                ax.plot(n_grid, curve, color=color, lw=1.6)
        _log_axes(ax, AXIS_LABELS["N"])
        ax.legend(fontsize=8, title="points: runs; lines: sum law", title_fontsize=8)
        _title(ax, data, arch, _sum_fit_title(fit, "α"))
    caption = (
        "Parameter scaling: loss against parameter count at fixed data seen (each run's learning curve "
        "interpolated to that D), with the fitted sum law L = E + A·N^(−α) + B·D^(−β) at the same D."
    )
    return _save(fig, out_dir, "parameter_scaling", "Parameter scaling", caption)


def data_scaling_figure(data: Any, out_dir: Path) -> Figure | None:
    """Loss against D for each N (faint: every evaluation; bold: each run's end), with the sum-law fit."""
    archs = [a for a in data.archs if _has_positive(data, a, "D", "N")]
    if not archs:
        return None
    fig, axes = _grid(len(archs))
    cmap = colormaps[N_CMAP]
    for ax, arch in zip(axes, archs):
        rows = _family_rows(data, arch)
        fit = tables.find_fit(data.fits, arch, "sum")
        ok = _positive(rows["D"], rows["N"], rows["loss"])
        norm = _log_norm(rows["N"][ok])
        d_grid = np.geomspace(rows["D"][ok].min(), rows["D"][ok].max(), 100)
        for n in sorted(set(rows["N"][ok].tolist())):
            color = cmap(norm(n))
            mine = ok & (rows["N"] == n)
            ax.scatter(rows["D"][mine], rows["loss"][mine], s=7, color=color, alpha=0.3, linewidths=0)
            ends = [idx[-1] for idx in _runs({k: v[mine] for k, v in rows.items()})]
            ax.scatter(rows["D"][mine][ends], rows["loss"][mine][ends], s=30, color=color, edgecolors="black", lw=0.4)
            curve = sum_law(fit, n, d_grid)
            if curve is not None:
                ax.plot(d_grid, curve, color=color, lw=1.4)
        _log_axes(ax, AXIS_LABELS["D"])
        fig.colorbar(cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="N [parameters]")
        _title(ax, data, arch, _sum_fit_title(fit, "β"))
    caption = (
        "Data scaling: loss against atoms seen for each model size (colour: N). Faint: every evaluation; bold: "
        "the end of each run (one per data prefix); lines: the fitted sum law at that N."
    )
    return _save(fig, out_dir, "data_scaling", "Data scaling", caption)


# ---------------------------------------------------------------- 5. IsoFLOP and compute-optimal allocation


def isoflop_figure(data: Any, out_dir: Path) -> Figure | None:
    """IsoFLOP profiles: loss against N at fixed training FLOPs, with a parabola in log N and its minimum."""
    levels_of = {a: _budgets(data, a, _family_rows(data, a), 5) for a in data.archs}
    archs = [a for a in data.archs if levels_of[a]]
    if not archs:
        return None
    fig, axes = _grid(len(archs))
    cmap = colormaps[LEVEL_CMAP]
    for ax, arch in zip(axes, archs):
        rows = _family_rows(data, arch)
        levels = levels_of[arch]
        for i, budget in enumerate(levels):
            color = cmap(0.1 + 0.75 * i / max(1, len(levels) - 1))
            sizes, losses = interpolate_at(rows, "C", budget)
            ax.plot(sizes, losses, "o-", color=color, ms=5, lw=1, label=f"C = {budget:.2g} FLOPs")
            _draw_parabola(ax, sizes, losses, color)
        _log_axes(ax, AXIS_LABELS["N"])
        ax.legend(fontsize=8)
        _title(ax, data, arch, "IsoFLOP profiles (★: minimum of the parabola in log N)")
    caption = (
        "IsoFLOP profiles: loss against parameter count at fixed training FLOPs (learning curves interpolated to "
        "each budget; the budgets of the IsoFLOP fit where it recorded them). Dashed: a parabola in log N; star: "
        "its minimum, the compute-optimal N*."
    )
    return _save(fig, out_dir, "isoflop", "IsoFLOP profiles", caption)


def _draw_parabola(ax: Any, sizes: np.ndarray, losses: np.ndarray, color: Any) -> None:
    if len(sizes) < 3:
        return
    c2, c1, c0 = np.polyfit(np.log(sizes), np.log(losses), 2)
    grid = np.linspace(np.log(sizes[0]), np.log(sizes[-1]), 60)
    ax.plot(np.exp(grid), np.exp(np.polyval([c2, c1, c0], grid)), "--", color=color, lw=0.9, alpha=0.8)
    if c2 > 0 and grid[0] < -c1 / (2 * c2) < grid[-1]:
        x = -c1 / (2 * c2)
        ax.plot(np.exp(x), np.exp(np.polyval([c2, c1, c0], x)), "*", color=color, ms=13, mec="black", mew=0.5)


@dataclass(frozen=True)
class _Allocation:
    """A family's compute-optimal points (C, N*, D*) and the fitted law N*(C), D*(C) drawn through them."""

    points: np.ndarray  # [n_budgets, 3]: C [FLOPs], N*, D* [atoms]
    law: Any  # C -> (N*, D*), or None when no fit is available
    a: tables.Estimate | None
    b: tables.Estimate | None
    source: str


def _sum_law_optimum(q: dict, k: float) -> Any:
    """C -> (N*, D*) minimising A N^-alpha + B D^-beta at N D = C / k (closed form, see symscale.fit)."""
    G = (q["alpha"] * q["A"] / (q["beta"] * q["B"])) ** (1 / (q["alpha"] + q["beta"]))
    a = q["beta"] / (q["alpha"] + q["beta"])

    def law(C: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n_star = G * (C / k) ** a
        return n_star, C / k / n_star

    return law


def _allocation(data: Any, arch: str) -> _Allocation | None:
    """From the IsoFLOP fit (its vertices and N* = G C^a), else from the report's parabola minima with the sum
    law's closed form N* = G (C/k)^(beta/(alpha+beta)); D* = C / (k N*) with k = C / (N D) of the family."""
    rows = _family_rows(data, arch)
    k = flops_per_param_atom(rows)
    if k is None:
        return None
    iso = tables.find_fit(data.fits, arch, "isoflop")
    extra = (iso or {}).get("extra") or {}
    if iso and iso.get("ok") and extra.get("budgets"):
        c, n = np.asarray(extra["budgets"], float), np.asarray(extra["N_opt"], float)
        G, a_fit = iso["params"]["G"], iso["params"]["a"]
        law = lambda C: (G * C**a_fit, C / (k * G * C**a_fit))
        a, b = tables.estimate(iso, "a"), tables.estimate(iso, "b")
        return _Allocation(np.column_stack([c, n, c / (k * n)]), law, a, b, "IsoFLOP fit")
    optima = isoflop_optima(rows, _budgets(data, arch, rows, 8))
    if not optima:
        return None
    c, n = np.array(optima).T
    a, b = tables.sum_law_allocation(data.fits, arch)
    fit = tables.find_fit(data.fits, arch, "sum")
    law = _sum_law_optimum(fit["params"], k) if fit is not None and fit.get("ok") else None
    return _Allocation(np.column_stack([c, n, c / (k * n)]), law, a, b, "sum law")


def compute_optimal_figure(data: Any, out_dir: Path) -> Figure | None:
    """N*(C) and D*(C): the IsoFLOP vertices with the fitted laws and their exponents a and b."""
    found = {arch: _allocation(data, arch) for arch in data.archs}
    found = {arch: v for arch, v in found.items() if v is not None}
    if not found:
        return None
    fig = MplFigure(figsize=(13.5, 4.8 + 0.22 * len(found)), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, col, name in ((axes[0], 1, "a"), (axes[1], 2, "b")):
        for arch, alloc in found.items():
            color, label = family_color(arch, data.archs), family_label(data.families[arch])
            ax.plot(alloc.points[:, 0], alloc.points[:, col], "o", color=color, ms=6)
            est = alloc.a if name == "a" else alloc.b
            text = f"{label}: {_gamma_text(name, est)} ({alloc.source})"
            if alloc.law is None:
                ax.plot([], [], "o", color=color, label=text)
                continue
            c = np.geomspace(alloc.points[:, 0].min() / 1.5, alloc.points[:, 0].max() * 1.5, 50)
            ax.plot(c, alloc.law(c)[col - 1], color=color, lw=1.8, label=text)
        ylabel = "compute-optimal parameters N* [count]" if col == 1 else "compute-optimal data D* [atoms]"
        _log_axes(ax, AXIS_LABELS["C"], ylabel)
        _legend_below(ax)
        ax.set_title(f"Compute-optimal {'model size N*(C) ~ C^a' if col == 1 else 'data D*(C) ~ C^b'}")
    caption = (
        "Compute-optimal allocation: points are the IsoFLOP minima (those of the IsoFLOP fit when it succeeded, "
        "else the report's), D* = C/(k N*) with k = C/(N D) of the family; lines are the fitted laws (IsoFLOP "
        "fit, else the closed form of the sum law). The paper finds a ≈ b ≈ 0.5 for every family."
    )
    return _save(fig, out_dir, "compute_optimal", "Compute-optimal allocation", caption)


# ---------------------------------------------------------------- 6. symmetry modes


def _equivariance_points(data: Any, arch: str) -> list[tuple[str, float, np.ndarray, np.ndarray]]:
    """(mode, N, D [atoms], equivariance error of forces [eV/Å]) per run that recorded it."""
    out = []
    for r in data.runs:
        lines = data.metrics.get(r.run_id, [])
        pts = [(m.get("atoms_seen"), m.get("equivariance_error_forces")) for m in lines if r.arch == arch]
        pts = [(float(d), float(e)) for d, e in pts if d is not None and e is not None and d > 0 and e > 0]
        if pts and r.N:
            d, e = np.array(pts).T
            out.append((r.mode, float(r.N), d, e))
    return out


def _draw_equivariance(ax_n: Any, ax_d: Any, points: list) -> None:
    if not points:
        for ax in (ax_n, ax_d):
            ax.text(0.5, 0.5, "no equivariance error recorded", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
        return
    label = "force equivariance error [eV/Å]"
    for mode, n, d, e in points:
        color = MODE_COLORS.get(mode, "#7f7f7f")
        ax_n.plot(n, e[-1], "o", color=color, ms=6)
        ax_d.plot(d, e, color=color, lw=1, alpha=0.7)
    for mode in dict.fromkeys(p[0] for p in points):
        ax_n.plot([], [], "o", color=MODE_COLORS.get(mode, "#7f7f7f"), label=mode)
    ax_n.legend(fontsize=8)
    _log_axes(ax_n, AXIS_LABELS["N"], label)
    _log_axes(ax_d, AXIS_LABELS["D"], label)
    ax_n.set_title("at the end of each run")
    ax_d.set_title("along training")


def modes_figure(data: Any, out_dir: Path) -> Figure | None:
    """Per family with several symmetry modes: frontier per mode, equivariance error against N and D."""
    archs = [a for a in data.archs if len(set(select(data.laws, a)["mode"].tolist())) > 1]
    if not archs:
        return None
    fig = MplFigure(figsize=(16, 4.6 * len(archs)), layout="constrained")
    axes = fig.subplots(len(archs), 3, squeeze=False)
    for row, arch in zip(axes, archs):
        rows = select(data.laws, arch)
        for mode in dict.fromkeys(rows["mode"].tolist()):
            fit = tables.find_fit(data.fits, arch, "frontier_C", mode)
            _draw_frontier(row[0], select(rows, mode=mode), "C", MODE_COLORS.get(mode, "#7f7f7f"), mode, fit)
        _log_axes(row[0], AXIS_LABELS["C"])
        row[0].legend(fontsize=8)
        _title(row[0], data, arch, "compute frontier per symmetry mode")
        _draw_equivariance(row[1], row[2], _equivariance_points(data, arch))
    caption = (
        "Symmetry modes: the compute frontier of each family trained with its architecture alone, with rotation "
        "augmentation, with a symmetry loss or for many epochs (colour: mode); and the force equivariance error "
        "of the models against N and along training."
    )
    return _save(fig, out_dir, "symmetry_modes", "Symmetry modes", caption)
