"""The seed section: the seed-to-seed spread of final validation loss where a study repeated runs over
seeds (the spec's `seed_repeats`, or several `seeds`), beside each family's bootstrap interval of gamma.

The reference study ran one seed per point. A bootstrap over runs sees how much the fit moves when the runs
change, not how much one run moves when only its seed changes; the table puts the two side by side. Seed
repeats are not in laws.csv or the fits (see `symscale.study.spec.SeedRepeats`): they are shown here only.
The spread's arithmetic is `symscale.fit.compare.seed_spread`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from symscale.fit.compare import seed_spread
from symscale.fit.results import family_key
from symscale.report import tables


def _point(record: Any) -> tuple:
    return (
        family_key(record.arch or "", record.options or ""),
        record.mode or tables.ARCHITECTURE,
        record.width,
        record.prefix,
    )


def repeated_points(runs: Sequence[Any]) -> dict[tuple, list[Any]]:
    """Finished runs grouped by grid point (family with options, mode, width, prefix), where the point has
    more than one seed."""
    points: dict[tuple, list[Any]] = {}
    for r in runs:
        if r.status == "finished" and r.loss is not None and r.seed is not None:
            points.setdefault(_point(r), []).append(r)
    return {k: sorted(v, key=lambda r: r.seed) for k, v in points.items() if len({r.seed for r in v}) > 1}


def seed_table(data: Any) -> tables.Table | None:
    """One row per repeated grid point: its seeds' final losses, their spread, and the family's gamma
    interval from the bootstrap; None when no point has two seeds."""
    points = repeated_points(data.runs)
    if not points:
        return None
    rows = []
    for (family, mode, width, prefix), runs in points.items():
        spread = seed_spread([r.loss for r in runs])
        label = data.families[family].label if family in data.families else family
        gamma = tables.estimate(tables.find_fit(data.fits, family, "frontier_C", mode), "gamma")
        rows.append(
            (
                label + ("" if mode == tables.ARCHITECTURE else f" / {mode}"),
                str(width),
                tables.fmt_count(runs[0].N),
                tables.fmt(prefix),
                ", ".join(f"{r.seed}: {tables.fmt(r.loss)}" for r in runs),
                f"{tables.fmt(spread.mean)} ± {tables.fmt(spread.std)}",
                f"{100 * spread.relative_range:.1f}%",
                tables.fmt_estimate(gamma),
            )
        )
    columns = ("family", "width", "N", "prefix", "final val loss by seed", "mean ± std", "range / mean", "γ_C [95%]")
    note = (
        "The seed-to-seed spread of the final validation loss at one grid point, beside the family's bootstrap "
        "interval of the frontier exponent (resampling runs). Seed repeats are shown here and not fitted."
    )
    return tables.Table("seeds", "Seed-to-seed spread", columns, tuple(rows), (note,))
