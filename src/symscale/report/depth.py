"""The report's depth section: the table and the figure of a study's depth sweep (depth-fits.json).

Presents `symscale.fit.depth.DepthFit`s as read by `read_depth_fits`; fits nothing. The table gives, per
family, each depth with its width, N and final validation loss, and the optimal depth d* with its 95% bootstrap
interval; the figure draws L against depth (log axes) with the fitted parabola in log depth and d* marked.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib import ticker
from matplotlib.figure import Figure as MplFigure

from symscale.fit.depth import DepthFit
from symscale.report import tables
from symscale.report.figures import EXTRA_COLORS, FAMILY_COLORS, LOSS_LABEL, Figure, save_figure


def optimum_text(fit: DepthFit) -> str:
    """d* and its interval, "at the edge" when it is a bound: `3.4 [2.6, 4.5]`."""
    lo, hi = fit.interval
    text = f"{fit.optimal_depth:.2g} [{lo:.2g}, {hi:.2g}]"
    if fit.at_edge:
        bound = ">=" if fit.optimal_depth >= max(fit.depths) else "<="
        text = f"{bound} {fit.optimal_depth:.2g} (edge of the measured depths)"
    return text


def depth_table(fits: Sequence[DepthFit], left_out: Sequence[str] = ()) -> tables.Table:
    """One row per family and depth: width, N, runs, final L; the family's first row carries d*."""
    rows = []
    for fit in fits:
        for i, depth in enumerate(fit.depths):
            first = i == 0
            rows.append(
                (
                    fit.label if first else "",
                    str(depth),
                    str(fit.widths[i]),
                    tables.fmt_count(fit.num_parameters[i]),
                    str(fit.n_runs[i]),
                    tables.fmt(fit.losses[i]) + (" (lowest)" if depth == fit.best_measured else ""),
                    optimum_text(fit) if first else "",
                )
            )
    notes = [
        "Each depth at the width whose N is closest to the family's budget; L is the final validation loss "
        "(mean over seeds). d*: the minimum of a parabola in ln(depth) fitted to ln L, with a 95% bootstrap "
        "interval (symscale.fit.depth)."
    ]
    if left_out:
        notes.append(f"Not fitted (fewer than 3 finished depths): {', '.join(left_out)}.")
    columns = ("family", "depth", "width", "N", "runs", "final L", "optimal depth d* [95%]")
    return tables.Table("depth", "Final loss and optimal depth per family", columns, tuple(rows), tuple(notes))


def depth_figure(fits: Sequence[DepthFit], out_dir: Path) -> Figure | None:
    """L against depth per family with the fitted parabola and d*; None without fits."""
    if not fits:
        return None
    fig = MplFigure(figsize=(6.4, 4.6), layout="constrained")
    ax = fig.subplots()
    for i, fit in enumerate(fits):
        color = FAMILY_COLORS.get(fit.arch, EXTRA_COLORS[i % len(EXTRA_COLORS)])
        grid = np.geomspace(min(fit.depths), max(fit.depths), 100)
        ax.plot(fit.depths, fit.losses, "o", color=color, label=f"{fit.label}: d* = {optimum_text(fit)}")
        ax.plot(grid, fit.predict(grid), "-", color=color, alpha=0.7)
        ax.axvspan(*fit.interval, color=color, alpha=0.08)
        ax.plot([fit.optimal_depth], fit.predict(fit.optimal_depth), "*", color=color, markersize=12)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("depth d [interaction blocks or layers]")
    ax.set_ylabel(LOSS_LABEL)
    depths = sorted({d for f in fits for d in f.depths})
    ax.set_xticks(depths, [str(d) for d in depths])
    ax.xaxis.set_minor_locator(ticker.NullLocator())
    ax.yaxis.set_minor_formatter(ticker.FormatStrFormatter("%.2g"))  # a narrow range of L: label minor ticks
    ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%.2g"))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    caption = (
        "Final validation loss against depth at a fixed parameter budget per family; lines: the parabola in "
        "ln(depth) fitted to ln L; stars: the optimal depth d*; shaded: its 95% bootstrap interval."
    )
    return save_figure(fig, Path(out_dir), "depth", "Depth at a fixed parameter budget", caption)
