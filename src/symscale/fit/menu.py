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
- L_inf, one policy for every law (`l_inf`): "zero" (the reference study's choice, the default) fixes the sum
  law's E and the frontier's L_inf at 0; "free" fits both. The consistency check (frontier gamma against
  alpha beta / (alpha + beta)) therefore compares laws fitted under the same assumption. With `sensitivity`,
  the frontier, sum law and allocation are fitted a second time under the other policy (at most
  `SENSITIVITY_BOOTSTRAP_CAP` resamples) and come back with `variant="l_inf=<other>"`, for the report's
  sensitivity row; the study's own fits have `variant=""`.
- Which L (`loss`): "total" (the training loss formula, column `loss`), "force" (`loss_force`, the force term;
  the reference study's re-runs match its exponents on it) or "energy" (`loss_energy`); the chosen column is
  fitted as L, and recorded in every result's settings.
- Drop and smoothing: `drop_fraction` (default `DROP_FRACTION` = 5%, inside the paper's 1-10%) and `ema`
  (exponential smoothing of each run's curve before the frontier; default 0, none).
- Intervals: every result's bootstrap intervals are checked (`symscale.fit.results.flag_intervals`) and those
  that do not resolve their parameter are flagged in `FitResult.unresolved`.

A fit that is not possible comes back as `FitResult(ok=False, reason=...)`; the menu never raises on one group.

Symbols: N parameters, D data seen, C training FLOPs, H device-hours, k FLOPs per parameter per atom.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from symscale.errors import SymscaleError
from symscale.fit.allocation import allocation
from symscale.fit.frontier import fit_frontier, run_fractions
from symscale.fit.holdout import frontier_holdout, sum_holdout
from symscale.fit.isoflop import fit_isoflop, isoflop_rows
from symscale.fit.parametric import fit_sum_law
from symscale.fit.results import ARCHITECTURE, FitResult, family_key, flag_intervals, options_label
from symscale.fit.table import LawsTable

log = logging.getLogger(__name__)
__all__ = ["FitSettings", "Group", "fit_table", "options_label", "refit_study", "study_settings"]

LAWS = ("frontier", "sum", "isoflop")  # the allocation comes with the sum law
AXES = ("C", "H")  # frontier axes: training FLOPs, device-hours
ISOFLOP_BOOTSTRAP_CAP = 400
SENSITIVITY_BOOTSTRAP_CAP = 200  # resamples of the fits under the other L_inf policy
DROP_FRACTION = 0.05  # the first 5% of each run is dropped (the paper: 1-10%)
L_INF = ("zero", "free")
LOSS_COLUMNS = {"total": "loss", "force": "loss_force", "energy": "loss_energy"}


@dataclass(frozen=True)
class Group:
    """What one fit is over: a family (`arch`), its model options and its symmetry mode."""

    arch: str
    options: str = ""
    mode: str = ARCHITECTURE

    @property
    def label(self) -> str:
        """`esen-l4`, `mpnn/symmetry_loss`, `mpnn`: for printing, never parsed."""
        name = family_key(self.arch, self.options)
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
        drop_fraction: the share of each run dropped before the frontier, sum law and IsoFLOP fit
            (default 5%, within the paper's 1-10%).
        method: sum-law method, "huber-lse" or "varpro".
        l_inf: "zero" (E and L_inf fixed at 0, the paper's choice) or "free" (both fitted), for every law.
        loss: which L is fitted: "total", "force" or "energy" (laws.csv columns loss, loss_force, loss_energy).
        ema: exponential smoothing of each run's evaluation curve before the frontier (0: none; 0 <= ema < 1).
        sensitivity: also fit frontier, sum law and allocation under the other `l_inf` (variant results).
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
    drop_fraction: float = DROP_FRACTION
    method: str = "huber-lse"
    l_inf: str = "zero"
    loss: str = "total"
    ema: float = 0.0
    sensitivity: bool = False
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
        if self.l_inf not in L_INF:
            raise SymscaleError.invalid("l_inf", self.l_inf, " or ".join(L_INF))
        if self.loss not in LOSS_COLUMNS:
            raise SymscaleError.invalid("loss", self.loss, " | ".join(LOSS_COLUMNS))
        if not 0.0 <= self.drop_fraction < 1.0:
            raise SymscaleError.invalid("drop fraction", self.drop_fraction, "0 <= fraction < 1 (the paper: 0.01-0.1)")
        if not 0.0 <= self.ema < 1.0:
            raise SymscaleError.invalid("ema (smoothing of evaluation curves)", self.ema, "0 <= ema < 1 (0: none)")

    @property
    def fix_E(self) -> float | None:
        """The sum law's E under the policy: 0 for "zero", None (fitted) for "free"."""
        return 0.0 if self.l_inf == "zero" else None

    @property
    def free_l_inf(self) -> bool:
        """Whether the frontier fits its L_inf (the "free" policy)."""
        return self.l_inf == "free"

    def other_l_inf(self) -> FitSettings:
        """The same settings under the other L_inf policy (the sensitivity fit), without its own sensitivity."""
        other = "free" if self.l_inf == "zero" else "zero"
        bootstrap = min(self.bootstrap, SENSITIVITY_BOOTSTRAP_CAP)
        return dataclasses.replace(self, l_inf=other, sensitivity=False, bootstrap=bootstrap, laws=_SENSITIVITY_LAWS)


_SENSITIVITY_LAWS = ("frontier", "sum")


def with_loss(table: LawsTable, loss: str) -> LawsTable:
    """The table with the column of `loss` ("total", "force", "energy") as its `loss` column, rows without a
    finite value of it removed. A table without that column (a laws.csv written before it had the terms) is
    an error naming the column."""
    column = LOSS_COLUMNS[loss]
    if column == "loss":
        return table
    if column not in table:
        raise SymscaleError(
            f"loss {loss!r}: {table.source} has no column {column!r} (laws.csv carries it since the loss terms were "
            f"recorded; re-export it from the study); columns: {', '.join(table.columns)}"
        )
    values = np.asarray(table[column], dtype=float)
    kept = table.select(np.isfinite(values) & (values > 0))
    return LawsTable({**kept.columns, "loss": kept[column]}, kept.source)


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
    fraction = rows["run_fraction"] if "run_fraction" in rows else None
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
    IsoFLOP, allocation (then, with `settings.sensitivity`, frontier, sum law and allocation under the other
    L_inf policy). `k_per_group` maps a group label to its k (C = k N D), overriding the median."""
    table = with_loss(table, settings.loss)
    table, dropped = drop_highest(table, settings.drop_highest_loss)
    results: list[FitResult] = []
    dropped_groups = dict(groups(dropped, settings.group_by)) if len(dropped) else {}
    for group, rows in groups(table, settings.group_by):
        k = (k_per_group or {}).get(group.label)
        fits = [(fit, settings) for fit in _fit_group(group, rows, settings, k)]
        if settings.sensitivity:
            other = settings.other_l_inf()
            variant = f"l_inf={other.l_inf}"
            fits += [(dataclasses.replace(f, variant=variant), other) for f in _fit_group(group, rows, other, k)]
        n_dropped = len(dropped_groups.get(group, ()))
        results += [_tagged(fit, group, n_dropped, used, _units(rows), _loss_scale(rows)) for fit, used in fits]
    return results


def _units(rows: LawsTable) -> int:
    """What the bootstrap resamples: distinct runs, or points without a run column."""
    return len(set(rows["run"].tolist())) if "run" in rows else len(rows)


def _loss_scale(rows: LawsTable) -> float:
    """A resample of E or L_inf below 1e-6 of the group's smallest loss is at the bound 0."""
    return 1e-6 * float(np.min(rows["loss"])) if len(rows) else 0.0


def _tagged(fit: FitResult, group: Group, n_dropped: int, s: FitSettings, n_units: int, tol: float) -> FitResult:
    """The fit with its group's fields, the settings that chose its rows (loss, drop, EMA), its degenerate
    intervals flagged, and the rows removed by `drop_highest_loss` counted as excluded."""
    settings = {**fit.settings, "loss": s.loss, "drop_fraction": s.drop_fraction, "ema": s.ema, "l_inf": s.l_inf}
    extra: dict[str, Any] = {}
    if s.drop_highest_loss:
        settings["drop_highest_loss"] = s.drop_highest_loss
        extra = {"n_excluded": fit.n_excluded + n_dropped}
    fit = dataclasses.replace(fit, arch=group.arch, options=group.options, mode=group.mode, settings=settings, **extra)
    return flag_intervals(fit, n_units, tol)


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
        pool = isoflop_rows(late)  # the largest prefix's runs
        iso = _guarded(
            "isoflop", label, fit_isoflop, pool["N"], pool["C"], pool["loss"],
            runs=pool["run"] if "run" in pool else None, bootstrap=bootstrap, seed=s.seed, group=label,
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
    fraction = rows["run_fraction"] if "run_fraction" in rows else None
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
            ema=s.ema,
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
    table, _ = drop_highest(with_loss(table, settings.loss), settings.drop_highest_loss)
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
                fraction=rows["run_fraction"] if "run_fraction" in rows else None,
                top_fraction=top_fraction,
                drop_fraction=settings.drop_fraction,
                free_l_inf=settings.free_l_inf,
            )
            out.append({"group": group.label, "law": f"frontier_{axis}", **check})
    return out


STUDY_KEYS = ("group_by", "bootstrap", "seed", "drop_fraction", "l_inf", "loss", "ema", "sensitivity", "workers")


def study_settings(fits: dict[str, Any] | None = None, **overrides: Any) -> FitSettings:
    """The settings a study fits with: its spec's `fits:` keys (`STUDY_KEYS`) over the study defaults
    (every law, both axes, group by arch, the L_inf sensitivity fits on), then `overrides`."""
    given = {**(fits or {}), **overrides}
    unknown = sorted(set(given) - set(STUDY_KEYS))
    if unknown:
        raise SymscaleError.invalid("fits setting", ", ".join(unknown), ", ".join(STUDY_KEYS))
    return FitSettings(**{"sensitivity": True, **given})


def fit_laws_table(table: LawsTable, *, k_per_group: dict[str, float] | None = None, **fits: Any) -> list[FitResult]:
    """The study's call: `fit_table` with the study's settings (`study_settings` of the spec's `fits:` keys)."""
    return fit_table(table, study_settings(fits), k_per_group)


def fits_name(loss: str) -> str:
    """The fits file of a study for `loss`: fits.json for the total, fits-force.json, fits-energy.json."""
    return "fits.json" if loss == "total" else f"fits-{loss}.json"


def refit_study(
    study_dir: str | Path, loss: str, fits: dict[str, Any] | None = None, *, write_text: Callable[[Path, str], Any]
) -> Path:
    """Refit an existing study's laws.csv on another L (`loss`) with its spec's fit settings, without
    retraining, and write STUDY/fits-<loss>.json (`fits_name`) with `write_text(path, text)` (the study
    directory's atomic writer, `symscale.rundir.write_text`: fit/ imports nothing above it); returns its path."""
    from symscale import __version__
    from symscale.fit.table import read_table

    study_dir = Path(study_dir)
    settings = study_settings(fits, loss=loss)
    results = fit_table(read_table(study_dir / "laws.csv"), settings)
    path = study_dir / fits_name(loss)
    payload = {"fits": [r.to_dict() for r in results], "loss": loss, "symscale_version": __version__}
    write_text(path, json.dumps(payload, indent=1))  # atomic, a unique temporary name
    return path
