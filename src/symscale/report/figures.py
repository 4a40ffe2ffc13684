"""The report's figures, drawn with matplotlib's object API (no pyplot state, Agg rendering) at 150 dpi.

Every function takes the study as read by `symscale.report.render.load_study` and an output folder, draws one
figure, writes it as PNG (shown in the page), SVG and PDF (for a paper; linked from the page) and returns a
`Figure`, or None when the study has no data for it. Log-axis labels never repeat (`_DistinctLogLabels`);
fitted laws are drawn over the range they were fitted on only, and a law, parabola or minimum that cannot be
drawn says why on its panel. Scaling axes are logarithmic; each
family keeps one colour in every figure (`family_color`). Figures only draw: the fitted curves, the profiles
at fixed D or C, the IsoFLOP parabolas and the compute-optimal points come as typed values from
`symscale.fit` (frontier, parametric, profiles); a fit that was not possible is labelled with its reason.

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

from symscale.fit.frontier import frontier_curve, frontier_points
from symscale.fit.isoflop import isoflop_rows
from symscale.fit.parametric import sum_law
from symscale.fit.profiles import (
    AllocationPoints,
    allocation_points,
    fixed_levels,
    isoflop_budgets,
    isoflop_parabola,
    profile_at,
    run_indices,
)
from symscale.fit.results import FitResult, family_key
from symscale.fit.table import LawsTable
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


VECTOR_FORMATS = ("svg", "pdf")  # written beside every PNG


@dataclass(frozen=True)
class Figure:
    """A figure written for the report: the PNG at `path`, the same figure as SVG and PDF in `vectors`."""

    key: str
    path: Path
    title: str
    caption: str
    vectors: tuple[Path, ...] = ()


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
    """The rows of the laws table for one report row (a family with its options, `esen-l4`) and/or mode."""
    mask = np.ones(len(laws["loss"]), dtype=bool)
    if arch is not None:
        mask &= laws["family"] == arch
    if mode is not None:
        mask &= laws["mode"] == mode
    return {k: v[mask] for k, v in laws.items()}


def _family_rows(data: Any, arch: str) -> dict[str, np.ndarray]:
    """The family's architecture-mode rows (all modes if it has no architecture-mode run)."""
    rows = select(data.laws, arch, tables.ARCHITECTURE)
    return rows if len(rows["loss"]) else select(data.laws, arch)


def _isoflop_rows(data: Any, arch: str) -> LawsTable:
    """The family's rows the IsoFLOP profiles are built on (its largest data prefix, as the fit's)."""
    return isoflop_rows(LawsTable(_family_rows(data, arch)))


def _has_positive(data: Any, arch: str, *columns: str) -> bool:
    """Whether the family has at least one row where all `columns` are finite and positive."""
    rows = _family_rows(data, arch)
    return bool(_positive(*(rows[c] for c in columns)).any())


def _positive(*arrays: np.ndarray) -> np.ndarray:
    mask = np.ones(len(arrays[0]), dtype=bool)
    for a in arrays:
        mask &= np.isfinite(a) & (a > 0)
    return mask


def _log_norm(values: np.ndarray) -> colors.LogNorm:
    lo, hi = float(np.min(values)), float(np.max(values))
    return colors.LogNorm(lo / 1.5, hi * 1.5) if lo == hi else colors.LogNorm(lo, hi)


MAX_MINOR_LABELS = 6  # minor-tick labels on a log axis without two decades in view, at most


def _number(x: float, digits: int, plain: bool) -> str:
    """`x` with `digits` significant digits: plain (0.6, 1.475, 20) between 1e-3 and 1e4 on `plain` axes,
    else as m×10^e in mathtext (10^e alone for m = 1)."""
    if plain and 1e-3 <= abs(x) < 1e4:
        whole = max(1, math.floor(math.log10(abs(x))) + 1)  # 10 and 200 in full, never 1e+01
        return f"{x:.{max(digits, whole)}g}"
    mantissa, exponent = f"{x:.{max(1, digits) - 1}e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".") if "." in mantissa else mantissa
    power = f"10^{{{int(exponent)}}}"
    return f"${power}$" if mantissa == "1" else f"${mantissa}\\times{power}$"


class _DistinctLogLabels(ticker.Formatter):
    """Log-axis labels that never repeat: the decades in view are labelled; without two of them, up to
    `MAX_MINOR_LABELS` minor ticks are too (matplotlib's minor ticks become linear ones on a narrow range,
    1.470 1.472 ...); and every label of the axis gets as many significant digits as it takes for no two
    to read the same (1.47 1.475 1.48, not 1.47 1.47 1.48). One instance per axis and tick kind."""

    def __init__(self, minor: bool, plain: bool):
        self.minor, self.plain = minor, plain

    def _in_view(self, values: Sequence[float]) -> list[float]:
        lo, hi = sorted(self.axis.get_view_interval())
        return [float(v) for v in values if lo * (1 - 1e-9) <= v <= hi * (1 + 1e-9) and v > 0]

    def _labelled_minors(self, minors: Sequence[float], n_major: int) -> list[float]:
        if n_major >= 2:
            return []
        shown = self._in_view(minors)
        step = max(1, math.ceil(len(shown) / MAX_MINOR_LABELS))
        return shown[::step]

    def format_ticks(self, values: Sequence[float]) -> list[str]:
        majors = self._in_view(self.axis.get_majorticklocs())
        minors = self._labelled_minors(self.axis.get_minorticklocs(), len(majors))
        labelled = majors + minors
        digits = next(
            (d for d in range(1, 8) if len({_number(v, d, self.plain) for v in labelled}) == len(labelled)), 8
        )
        chosen = {round(v, 12) for v in (minors if self.minor else majors)}
        return [_number(float(v), digits, self.plain) if round(float(v), 12) in chosen else "" for v in values]

    def __call__(self, x: float, pos: int | None = None) -> str:  # the cursor read-out; ticks use format_ticks
        return _number(float(x), 4, self.plain)


def _log_axes(ax: Any, xlabel: str, ylabel: str = LOSS_LABEL) -> None:
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    plain_y = ylabel == LOSS_LABEL or "eV" in ylabel  # plain numbers (0.6, 1, 2) rather than 6x10^-1
    for axis, plain in ((ax.xaxis, False), (ax.yaxis, plain_y)):
        axis.set_major_formatter(_DistinctLogLabels(minor=False, plain=plain))
        axis.set_minor_formatter(_DistinctLogLabels(minor=True, plain=plain))
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


def save_figure(fig: MplFigure, out_dir: Path, key: str, title: str, caption: str) -> Figure:
    """Write `fig` as OUT/<key>.png and as SVG and PDF beside it, each through the one atomic writer (a figure
    cut short by a full disk leaves the previous one), and return the report's `Figure`."""
    from symscale.rundir import atomic_path

    path = Path(out_dir) / f"{key}.png"
    with atomic_path(path, suffix=".tmp.png") as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, metadata={"Software": None}, facecolor="white")
    vectors = tuple(Path(out_dir) / f"{key}.{ext}" for ext in VECTOR_FORMATS)
    for vector in vectors:  # no dates or tool names inside: the same study writes the same files
        ext = vector.suffix.lstrip(".")
        metadata = {"Creator": None, "Producer": None, "CreationDate": None} if ext == "pdf" else {}
        with atomic_path(vector, suffix=f".tmp.{ext}") as tmp:
            fig.savefig(tmp, format=ext, metadata={**metadata, **({"Date": None} if ext == "svg" else {})},
                        facecolor="white")  # fmt: skip
    return Figure(key, path, title, caption, vectors)


def _gamma_text(name: str, est: tables.Estimate | None) -> str:
    return f"{name} = {tables.fmt_estimate(est)}" if est is not None else f"{name}: not fitted"


# ---------------------------------------------------------------- 1. compute frontier


def _short(fit: FitResult) -> str:
    """`not possible: <reason>`, cut to fit a legend or a title."""
    text = tables.not_possible(fit)
    return text if len(text) <= 70 else text[:67] + "..."


def _draw_frontier(ax: Any, rows: dict, axis: str, color: str, label: str, fit: FitResult | None) -> bool:
    ok = _positive(rows[axis], rows["loss"])
    if not ok.any():
        return False
    x, y = rows[axis][ok].astype(float), rows["loss"][ok].astype(float)
    ax.scatter(x, y, s=10, color=color, alpha=0.45, linewidths=0)  # every evaluation: visible, under the frontier
    fx, fy = frontier_points(fit, x, y)
    ax.scatter(fx, fy, s=24, color=color, edgecolors="black", linewidths=0.4, zorder=3)
    gamma, curve = tables.estimate(fit, "gamma"), frontier_curve(fit)  # over the frontier's range only
    if gamma is None:
        reason = _short(fit) if fit is not None else "not fitted"
        ax.plot([], [], color=color, lw=2, ls=":", label=f"{label}: γ {reason}")
        return True
    if curve is None:  # a fits file that does not record the frontier's points: no range to draw the law over
        text = f"{label}: γ = {tables.fmt_estimate(gamma)} (law not drawn: the fit records no frontier range)"
        ax.plot([], [], color=color, lw=2, ls=":", label=text)
        return True
    ax.plot(*curve, color=color, lw=2, label=f"{label}: γ = {tables.fmt_estimate(gamma)}")
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
        "L = L∞ + F·x^(−γ) over the frontier's range, γ with its 95% interval in the legend. Left in FLOPs, "
        "right in device-hours."
    )
    return save_figure(fig, out_dir, "frontier", "Compute frontier", caption)


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
        for idx in run_indices(LawsTable(rows)):
            ok = _positive(rows["D"][idx], rows["loss"][idx])
            n = rows["N"][idx[0]]
            color = cmap(norm(n)) if np.isfinite(n) and n > 0 else "grey"
            ax.plot(rows["D"][idx][ok], rows["loss"][idx][ok], color=color, lw=1.3, marker="o", ms=2.5)
        _log_axes(ax, AXIS_LABELS["D"])
        fig.colorbar(cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="N [parameters]")
        _title(ax, data, arch)
    caption = "Learning curves: validation loss against atoms seen, one line per run, coloured by parameter count N."
    return save_figure(fig, out_dir, "learning_curves", "Learning curves", caption)


# ---------------------------------------------------------------- 3./4. parameter and data scaling


def _sum_curve(fit: FitResult | None, N: np.ndarray | float, D: np.ndarray | float) -> np.ndarray | None:
    """The fitted sum law at (N, D), or None without a successful fit."""
    return sum_law(fit.params, N, D) if fit is not None and fit.ok else None


def _fitted_grid(fit: FitResult | None, axis: str, values: np.ndarray, n: int = 100) -> np.ndarray:
    """A log grid over the values of `axis` (N or D) the sum law was fitted on (its recorded range, within
    the data's), so that the law is never drawn beyond its points; the data's range for older fits."""
    values = np.asarray(values, dtype=float)
    lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
    span = (fit.extra.get(f"{axis}_range") if fit is not None else None) or [lo, hi]
    lo, hi = max(lo, float(span[0])), min(hi, float(span[1]))
    return np.geomspace(lo, hi, n) if 0 < lo < hi else np.array([])


def _within(fit: FitResult | None, axis: str, value: float) -> bool:
    """Whether `value` of `axis` lies in the sum law's fitted range (True for fits that record none)."""
    span = fit.extra.get(f"{axis}_range") if fit is not None else None
    return span is None or float(span[0]) * (1 - 1e-9) <= value <= float(span[1]) * (1 + 1e-9)


def _sum_fit_title(fit: FitResult | None, name: str) -> str:
    if fit is None:
        return "sum law: not fitted"
    if not fit.ok:
        return f"sum law: {_short(fit)}"
    return _gamma_text(name, tables.estimate(fit, name.replace("α", "alpha").replace("β", "beta")))


def parameter_scaling_figure(data: Any, out_dir: Path) -> Figure | None:
    """Loss against N at a few fixed D (interpolated along the learning curves), with the sum-law fit."""
    archs = [a for a in data.archs if fixed_levels(LawsTable(_family_rows(data, a)), "D", 3)]
    if not archs:
        return None
    fig, axes = _grid(len(archs))
    cmap = colormaps[LEVEL_CMAP]
    for ax, arch in zip(axes, archs):
        rows = _family_rows(data, arch)
        fit = tables.find_fit(data.fits, arch, "sum")
        levels = fixed_levels(LawsTable(rows), "D", 3)
        n_grid = _fitted_grid(fit, "N", rows["N"][_positive(rows["N"])])
        for i, level in enumerate(levels):
            color = cmap(0.1 + 0.75 * i / max(1, len(levels) - 1))
            profile = profile_at(LawsTable(rows), "D", level)
            ax.plot(profile.N, profile.loss, "o", color=color, ms=6, label=f"D = {level:.2g} atoms")
            curve = _sum_curve(fit, n_grid, level) if _within(fit, "D", level) and len(n_grid) else None
            if curve is not None:
                ax.plot(n_grid, curve, color=color, lw=1.6)
        _log_axes(ax, AXIS_LABELS["N"])
        ax.legend(fontsize=8, title="points: runs; lines: sum law", title_fontsize=8)
        _title(ax, data, arch, _sum_fit_title(fit, "α"))
    caption = (
        "Parameter scaling: loss against parameter count at fixed data seen (each run's learning curve "
        "interpolated to that D), with the fitted sum law L = E + A·N^(−α) + B·D^(−β) at the same D."
    )
    return save_figure(fig, out_dir, "parameter_scaling", "Parameter scaling", caption)


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
        d_grid = _fitted_grid(fit, "D", rows["D"][ok])
        for n in sorted(set(rows["N"][ok].tolist())):
            color = cmap(norm(n))
            mine = ok & (rows["N"] == n)
            ax.scatter(rows["D"][mine], rows["loss"][mine], s=7, color=color, alpha=0.3, linewidths=0)
            ends = [idx[-1] for idx in run_indices(LawsTable({k: v[mine] for k, v in rows.items()}))]
            ax.scatter(rows["D"][mine][ends], rows["loss"][mine][ends], s=30, color=color, edgecolors="black", lw=0.4)
            curve = _sum_curve(fit, n, d_grid) if _within(fit, "N", n) and len(d_grid) else None
            if curve is not None:
                ax.plot(d_grid, curve, color=color, lw=1.4)
        _log_axes(ax, AXIS_LABELS["D"])
        fig.colorbar(cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="N [parameters]")
        _title(ax, data, arch, _sum_fit_title(fit, "β"))
    caption = (
        "Data scaling: loss against atoms seen for each model size (colour: N). Faint: every evaluation; bold: "
        "the end of each run (one per data prefix); lines: the fitted sum law at that N."
    )
    return save_figure(fig, out_dir, "data_scaling", "Data scaling", caption)


# ---------------------------------------------------------------- 5. IsoFLOP and compute-optimal allocation


def isoflop_figure(data: Any, out_dir: Path) -> Figure | None:
    """IsoFLOP profiles: loss against N at fixed training FLOPs, with a parabola in log N and its minimum."""
    levels_of = {
        a: isoflop_budgets(tables.find_fit(data.fits, a, "isoflop"), _isoflop_rows(data, a), 5) for a in data.archs
    }
    archs = [a for a in data.archs if levels_of[a]]
    if not archs:
        return None
    fig, axes = _grid(len(archs))
    cmap = colormaps[LEVEL_CMAP]
    for ax, arch in zip(axes, archs):
        rows = _isoflop_rows(data, arch)
        levels = levels_of[arch]
        stars = 0
        for i, budget in enumerate(levels):
            color = cmap(0.1 + 0.75 * i / max(1, len(levels) - 1))
            profile = profile_at(rows, "C", budget)
            why = _draw_parabola(ax, isoflop_parabola(profile), color, len(profile.N))
            stars += why is None
            label = f"C = {budget:.2g} FLOPs" + (f": {why}" if why else "")  # the reason, on the panel
            ax.plot(profile.N, profile.loss, "o-", color=color, ms=5, lw=1, label=label)
        _log_axes(ax, AXIS_LABELS["N"])
        ax.legend(fontsize=8.5, loc="upper center", bbox_to_anchor=(0.5, -0.19), frameon=False)  # under the label
        _title(ax, data, arch, "IsoFLOP profiles" + (" (★: minimum of the parabola in log N)" if stars else ""))
    caption = (
        "IsoFLOP profiles: loss against parameter count at fixed training FLOPs (learning curves interpolated to "
        "each budget; the budgets of the IsoFLOP fit where it recorded them). Dashed: a parabola in log N; star: "
        "its minimum, the compute-optimal N*. A budget reached by fewer than 3 sizes has no parabola; one whose "
        "loss still falls at the largest size (or whose parabola opens downwards) has no minimum inside the "
        "sizes; the legend says which."
    )
    return save_figure(fig, out_dir, "isoflop", "IsoFLOP profiles", caption)


def _draw_parabola(ax: Any, parabola: Any, color: Any, n_sizes: int) -> str | None:
    """Draw the parabola and its minimum; None when both were drawn, else why not (for the panel)."""
    if parabola is None:
        return f"no parabola ({n_sizes} sizes, need 3)"
    ax.plot(*parabola.curve(), "--", color=color, lw=1.2, alpha=0.9)
    if parabola.N_opt is None:
        return "no minimum inside the sizes"
    ax.plot(parabola.N_opt, parabola.loss_opt, "*", color=color, ms=14, mec="black", mew=0.6, zorder=4)
    return None


def _allocation(data: Any, arch: str) -> tuple[AllocationPoints, Any, Any] | None:
    """The family's compute-optimal points with the exponents (a, b) shown beside them: the IsoFLOP fit's,
    else those the sum law implies."""
    iso, fit = tables.find_fit(data.fits, arch, "isoflop"), tables.find_fit(data.fits, arch, "sum")
    points = allocation_points(_isoflop_rows(data, arch), iso, fit)
    if points is None:
        return None
    if points.source == "isoflop":
        return points, tables.estimate(iso, "a"), tables.estimate(iso, "b")
    return (points, *tables.sum_law_allocation(data.fits, arch))


_SOURCE = {"isoflop": "IsoFLOP fit", "sum": "sum law"}


def compute_optimal_figure(data: Any, out_dir: Path) -> Figure | None:
    """N*(C) and D*(C): the IsoFLOP vertices with the fitted laws and their exponents a and b."""
    found = {arch: _allocation(data, arch) for arch in data.archs}
    found = {arch: v for arch, v in found.items() if v is not None}
    if not found:
        return None
    fig = MplFigure(figsize=(13.5, 4.8 + 0.22 * len(found)), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, col, name in ((axes[0], 1, "a"), (axes[1], 2, "b")):
        for arch, (points, a, b) in found.items():
            color, label = family_color(arch, data.archs), family_label(data.families[arch])
            ax.plot(points.C, points.N_star if col == 1 else points.D_star, "o", color=color, ms=6)
            text = f"{label}: {_gamma_text(name, a if name == 'a' else b)} ({_SOURCE[points.source]})"
            c = np.geomspace(points.C.min(), points.C.max(), 50)  # over the minima it was fitted to, no further
            curve = points.curve(c)
            if curve is None:
                ax.plot([], [], "o", color=color, label=text)
                continue
            ax.plot(c, curve[col - 1], color=color, lw=1.8, label=text)
        ylabel = "compute-optimal parameters N* [count]" if col == 1 else "compute-optimal data D* [atoms]"
        _log_axes(ax, AXIS_LABELS["C"], ylabel)
        _legend_below(ax)
        ax.set_title(f"Compute-optimal {'model size N*(C) ~ C^a' if col == 1 else 'data D*(C) ~ C^b'}")
    caption = (
        "Compute-optimal allocation: points are the IsoFLOP minima (those of the IsoFLOP fit when it succeeded, "
        "else the report's), D* = C/(k N*) with k = C/(N D) of the family; lines are the fitted laws (IsoFLOP "
        "fit, else the closed form of the sum law). The paper finds a ≈ b ≈ 0.5 for every family."
    )
    return save_figure(fig, out_dir, "compute_optimal", "Compute-optimal allocation", caption)


# ---------------------------------------------------------------- 6. symmetry modes


def _equivariance_points(data: Any, arch: str) -> list[tuple[str, float, np.ndarray, np.ndarray]]:
    """(mode, N, D [atoms], equivariance error of forces [meV/Å]) per run that recorded it."""
    out = []
    for r in data.runs:
        lines = data.metrics.get(r.run_id, [])
        pts = [
            (m.get("atoms_seen"), m.get("equivariance_error_forces"))
            for m in lines
            if family_key(r.arch or "", r.options) == arch
        ]
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
    label = "force equivariance error [meV/Å]"  # metrics.jsonl records it in meV/Å (train.evaluation)
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
    return save_figure(fig, out_dir, "symmetry_modes", "Symmetry modes", caption)


# ---------------------------------------------------------------- 7. the lmax ablation


def lmax_rows(data: Any) -> list[tuple[int, str]]:
    """(lmax, report row) of the rows of one family that differ in lmax (the first family with two or
    more), ordered by lmax; empty when no family has rows at two lmax."""
    by_arch: dict[str, dict[int, str]] = {}
    for key in data.archs:
        info = data.families[key]
        if isinstance(info.l, int) and info.arch:
            by_arch.setdefault(info.arch, {}).setdefault(info.l, key)
    for rows in by_arch.values():
        if len(rows) >= 2:
            return sorted(rows.items())
    return []


def lmax_figure(data: Any, out_dir: Path) -> Figure | None:
    """The paper's lmax ablation: the compute-frontier exponent gamma (95% interval) against lmax for the rows
    of one family at two or more lmax (eSEN lmax 2 and 4), the paper's values beside; None without them."""
    rows = lmax_rows(data)
    if not rows:
        return None
    fig = MplFigure(figsize=(5.6, 4.4), layout="constrained")
    ax = fig.subplots()
    drawn = False
    for lmax, key in rows:
        est = tables.estimate(tables.find_fit(data.fits, key, "frontier_C"), "gamma")
        color = family_color(key, data.archs)
        if est is not None:
            drawn = True
            if est.has_interval:
                yerr = [[est.value - est.lo], [est.hi - est.value]]
                ax.errorbar(
                    [lmax], [est.value], yerr=yerr, fmt="o", color=color, capsize=4, label=data.families[key].label
                )
            else:
                why = f" ({est.unresolved})" if est.unresolved else " (no interval)"
                ax.plot([lmax], [est.value], "o", mfc="none", color=color, label=data.families[key].label + why)
        paper = reference.paper_value(key, "gamma_flops")
        if paper is not None:
            ax.plot([lmax], [paper], "x", color="black", ms=8, label="paper" if lmax == rows[0][0] else None)
    if not drawn:
        return None
    ax.set_xticks([lmax for lmax, _ in rows])
    ax.set_xlabel("lmax (tensor order of the features)")
    ax.set_ylabel("compute-frontier exponent γ_C")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("γ against lmax")
    caption = (
        "The lmax ablation as in the paper: the compute-frontier exponent γ (FLOPs, 95% interval) of the same "
        f"family at each lmax; crosses: the paper's values (eSEN: γ ≈ {reference.PAPER_ESEN_LMAX2_GAMMA} at lmax 2, "
        f"{reference.PAPER['esen'].gamma_flops} at lmax 4; approximate). An open marker: no interval resolves it."
    )
    return save_figure(fig, out_dir, "lmax", "γ against lmax", caption)
