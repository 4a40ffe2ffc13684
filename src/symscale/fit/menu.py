"""The one fit menu: which laws are fitted to which rows of a laws table, group by group.

Both the study (after its runs) and `symscale fit` call `fit_table` with a `FitSettings`, so that
`symscale fit STUDY/laws.csv --law all --group-by arch` with the study's bootstrap and seed gives the
study's fits.json. The rules, in one place:

- Groups: one per value of the grouping column (the family, `arch`, in a study), split further by the
  `options` column (model options that change the model, e.g. eSEN's lmax) and by the `mode` column
  (symmetry mode), when the table has them. A group is a `Group(arch, options, mode)`; its label reads
  "esen-l4", "mpnn/symmetry_loss" or "mpnn" and is for printing only.
- Rows: the frontier sees every row of the group and drops the first `drop_fraction` of each run itself;
  the sum law and the IsoFLOP fit see only the rows at or past `drop_fraction` of their run (a table
  without run or fraction columns keeps every row); `drop_highest_loss` rows are removed first, over the
  whole table, and counted into each group's `n_excluded`.
- Bootstrap: `bootstrap` resamples for every law, at most `ISOFLOP_BOOTSTRAP_CAP` for the IsoFLOP fit
  (each of its resamples refits every budget's parabola).
- Allocation: from the sum law with C = k N D, k given or the median of C / (N D) over the group, at the
  budget given or the group's largest C.

A fit that is not possible comes back as `FitResult(ok=False, reason=...)`; the menu never raises on one group.

Symbols: N parameters, D data seen, C training FLOPs, H device-hours, k FLOPs per parameter per atom.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from symscale.errors import SymscaleError
from symscale.fit.allocation import allocation
from symscale.fit.frontier import fit_frontier, run_fractions
from symscale.fit.holdout import frontier_holdout, sum_holdout
from symscale.fit.isoflop import fit_isoflop
from symscale.fit.parametric import fit_sum_law
from symscale.fit.results import ARCHITECTURE, FitResult
from symscale.fit.table import LawsTable

log = logging.getLogger(__name__)

LAWS = ("frontier", "sum", "isoflop")  # the allocation comes with the sum law
AXES = ("C", "H")  # frontier axes: training FLOPs, device-hours
ISOFLOP_BOOTSTRAP_CAP = 400


@dataclass(frozen=True)
class Group:
    """What one fit is over: a family (`arch`), its model options and its symmetry mode."""

    arch: str
    options: str = ""
    mode: str = ARCHITECTURE

    @property
    def label(self) -> str:
        """`esen-l4`, `mpnn/symmetry_loss`, `mpnn`: for printing, never parsed."""
        name = f"{self.arch}-{self.options}" if self.options else self.arch
        return name if self.mode == ARCHITECTURE else f"{name}/{self.mode}"


@dataclass(frozen=True)
class FitSettings:
    """The menu's choices. Defaults are the study's; `symscale fit` sets them from its flags.

    Attributes:
        laws: which of "frontier", "sum", "isoflop" to fit (the allocation follows the sum law).
        axes: frontier axes to fit where the table has them ("C" FLOPs, "H" device-hours).
        group_by: the grouping column (None: one group "all").
        bootstrap: resamples for intervals (0: none).
        seed: seed of the resamples.
        drop_fraction: the share of each run dropped before the frontier, sum law and IsoFLOP fit.
        method: sum-law method, "huber-lse" or "varpro".
        fix_E: the sum law's E fixed at this loss, or None to fit it.
        free_l_inf: fit the frontier's L_inf instead of fixing it at 0.
        k: C = k N D for the allocation (None: the group's median C / (N D)).
        budget: compute budget in FLOPs for N*, D* (None: the group's largest C).
        drop_highest_loss: rows of highest loss removed before fitting (Epoch AI removed 5).
        workers: bootstrap worker processes (None: CPU count, at most 4).
    """

    laws: tuple[str, ...] = LAWS
    axes: tuple[str, ...] = AXES
    group_by: str | None = "arch"
    bootstrap: int = 1000
    seed: int = 42
    drop_fraction: float = 0.05
    method: str = "huber-lse"
    fix_E: float | None = None
    free_l_inf: bool = False
    k: float | None = None
    budget: float | None = None
    drop_highest_loss: int = 0
    workers: int | None = None

    def __post_init__(self) -> None:
        unknown = sorted(set(self.laws) - set(LAWS)) + sorted(set(self.axes) - set(AXES))
        if unknown:
            raise SymscaleError.invalid("fit law or axis", ", ".join(unknown), f"laws {LAWS}, axes {AXES}")
        if self.bootstrap < 0:
            raise SymscaleError.invalid("bootstrap", self.bootstrap, "0 or a positive number of resamples")


def groups(table: LawsTable, group_by: str | None) -> list[tuple[Group, LawsTable]]:
    """The groups of a table and their rows: by `group_by`, then `options`, then `mode` where present."""
    if group_by and group_by not in table:
        raise SymscaleError(
            f"group by {group_by!r}: no such column in {table.source}; columns: {', '.join(table.columns)}"
        )
    out = []
    for arch, by_arch in table.groups(group_by):
        for options, by_options in by_arch.groups("options" if "options" in table else None):
            for mode, rows in by_options.groups("mode" if "mode" in table else None):
                out.append((Group(arch, _text(options, ""), _text(mode, ARCHITECTURE)), rows))
    return out


def _text(value: str, default: str) -> str:
    """A group field from a table cell: the default for an empty cell (read as "" or "nan") or no column."""
    return default if value in ("", "nan", "all") else value


def fitted_k(table: LawsTable) -> float:
    """k in C = k N D, as the median of C / (N D) over the table (3 kappa for a family)."""
    return float(np.median(table["C"] / (table["N"] * table["D"])))


def late_rows(rows: LawsTable, drop_fraction: float) -> LawsTable:
    """The rows at or past `drop_fraction` of their run (all rows without run or fraction columns)."""
    runs = rows["run"] if "run" in rows else None
    fraction = rows["fraction"] if "fraction" in rows else None
    return rows.select(run_fractions(runs, rows["D"], fraction) >= drop_fraction)


def drop_highest(table: LawsTable, k: int) -> tuple[LawsTable, LawsTable]:
    """(kept, dropped): the `k` rows of highest loss removed (ties in file order)."""
    if not 0 <= k < len(table):
        raise SymscaleError.invalid("drop highest loss", k, f"0 <= K < {len(table)} rows")
    if k == 0:
        return table, table.select(np.zeros(len(table), dtype=bool))
    table.require("loss")
    keep = np.zeros(len(table), dtype=bool)
    keep[np.argsort(table["loss"], kind="stable")[: len(table) - k]] = True
    return table.select(keep), table.select(~keep)


def fit_table(
    table: LawsTable, settings: FitSettings = FitSettings(), k_per_group: dict[str, float] | None = None
) -> list[FitResult]:
    """Every law of `settings.laws` for every group of `table`, in the order frontier (per axis), sum,
    IsoFLOP, allocation. `k_per_group` maps a group label to its k (C = k N D), overriding the median."""
    table, dropped = drop_highest(table, settings.drop_highest_loss)
    results: list[FitResult] = []
    dropped_groups = dict(groups(dropped, settings.group_by)) if len(dropped) else {}
    for group, rows in groups(table, settings.group_by):
        fits = _fit_group(group, rows, settings, (k_per_group or {}).get(group.label))
        n_dropped = len(dropped_groups.get(group, ()))
        results += [_tagged(fit, group, n_dropped, settings) for fit in fits]
    return results


def _tagged(fit: FitResult, group: Group, n_dropped: int, settings: FitSettings) -> FitResult:
    """The fit with its group's fields, and the rows removed by `drop_highest_loss` counted as excluded."""
    extra: dict[str, Any] = {}
    if settings.drop_highest_loss:
        extra = {
            "n_excluded": fit.n_excluded + n_dropped,
            "settings": {**fit.settings, "drop_highest_loss": settings.drop_highest_loss},
        }
    return dataclasses.replace(fit, arch=group.arch, options=group.options, mode=group.mode, **extra)


def _guarded(law: str, label: str, fn: Callable[..., FitResult], *args: Any, **kwargs: Any) -> FitResult:
    """`fn(*args, **kwargs)`, or a failed `FitResult` saying why when the fit is not possible."""
    try:
        return fn(*args, **kwargs)
    except SymscaleError as err:
        log.info("%s fit for %s not possible: %s", law, label, err)
        return FitResult.failed(label, law, str(err))


def _fit_group(group: Group, rows: LawsTable, s: FitSettings, k: float | None) -> list[FitResult]:
    """The laws of one group, in the menu's order; k (C = k N D) given or the group's median."""
    label = group.label
    frontiers = _frontier_fits(label, rows, s) if "frontier" in s.laws else []
    late = late_rows(rows, s.drop_fraction)
    late_runs = late["run"] if "run" in late else None
    out = list(frontiers)
    if "sum" in s.laws:
        sum_fit = _guarded(
            "sum", label, fit_sum_law, late["N"], late["D"], late["loss"], runs=late_runs, method=s.method,
            fix_E=s.fix_E, bootstrap=s.bootstrap, seed=s.seed, workers=s.workers, group=label,
        )  # fmt: skip
        out.append(sum_fit)
    if "isoflop" in s.laws and "C" in rows:
        bootstrap = min(s.bootstrap, ISOFLOP_BOOTSTRAP_CAP)
        iso = _guarded(
            "isoflop", label, fit_isoflop, late["N"], late["C"], late["loss"], runs=late_runs,
            bootstrap=bootstrap, seed=s.seed, group=label,
        )  # fmt: skip
        out.append(iso)
    k = k or s.k or (fitted_k(rows) if "C" in rows else None)
    if "sum" in s.laws and k:
        budget = s.budget if s.budget is not None else (float(np.max(rows["C"])) if "C" in rows else None)
        frontier = next((f for f in frontiers if f.law == "frontier_C"), None)
        out.append(_guarded("allocation", label, allocation, sum_fit, k, budget=budget, frontier_fit=frontier))
    return out


def _frontier_fits(label: str, rows: LawsTable, s: FitSettings) -> list[FitResult]:
    """One frontier per axis of `s.axes` the rows have, over every row (the fit drops each run's start)."""
    runs = rows["run"] if "run" in rows else None
    fraction = rows["fraction"] if "fraction" in rows else None
    return [
        _guarded(
            f"frontier_{axis}",
            label,
            fit_frontier,
            rows[axis],
            rows["loss"],
            runs=runs,
            fraction=fraction,
            drop_fraction=s.drop_fraction,
            free_l_inf=s.free_l_inf,
            bootstrap=s.bootstrap,
            seed=s.seed,
            axis=axis,
            group=label,
        )
        for axis in s.axes
        if axis in rows
    ]


def holdout_checks(table: LawsTable, settings: FitSettings, top_fraction: float) -> list[dict[str, Any]]:
    """Extrapolation checks per group for the laws of `settings`: fit below the (1 - top_fraction) quantile
    of compute, report the relative error of the prediction above it. Raises when a check is not possible."""
    table, _ = drop_highest(table, settings.drop_highest_loss)
    out = []
    for group, rows in groups(table, settings.group_by):
        if "sum" in settings.laws:
            check = sum_holdout(late_rows(rows, settings.drop_fraction), top_fraction, settings.method, settings.fix_E)
            out.append({"group": group.label, "law": "sum", **check})
        for axis in (a for a in settings.axes if a in rows and "frontier" in settings.laws):
            check = frontier_holdout(
                rows[axis],
                rows["loss"],
                runs=rows["run"] if "run" in rows else None,
                fraction=rows["fraction"] if "fraction" in rows else None,
                top_fraction=top_fraction,
                drop_fraction=settings.drop_fraction,
                free_l_inf=settings.free_l_inf,
            )
            out.append({"group": group.label, "law": f"frontier_{axis}", **check})
    return out


def fit_laws_table(
    table: LawsTable,
    *,
    group_by: str | None = "arch",
    bootstrap: int = 1000,
    seed: int = 42,
    k_per_group: dict[str, float] | None = None,
    drop_fraction: float = 0.05,
    workers: int | None = None,
) -> list[FitResult]:
    """The study's call: `fit_table` with the study's settings (spec `fits:` keys group_by, bootstrap, seed)."""
    settings = FitSettings(
        group_by=group_by, bootstrap=bootstrap, seed=seed, drop_fraction=drop_fraction, workers=workers
    )
    return fit_table(table, settings, k_per_group)
