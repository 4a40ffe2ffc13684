"""The report's tables, built from typed fit results (`symscale.fit.FitResult`, read from fits.json) and the
study's runs. A fit is found by the family, symmetry mode and law it carries as fields; no label is parsed.

A table is a `Table` of strings, rendered to Markdown or HTML by `symscale.report.render`. Numbers are printed
with three significant digits and 95% intervals as `0.142 [0.121, 0.163]`; a fit that could not be made
prints `not possible [k]` with footnote k giving the reason, so a reader sees why a number is missing. An
interval the fit flagged as not resolving its parameter (`FitResult.unresolved`) prints as
`0.142 (unresolved: <why>)`, never as numbers. Rows are families with their model options (`esen-l4`); the
L_inf sensitivity table shows each row's fits under the study's L_inf policy and under the other one.

Symbols: N parameters, D atoms seen, C training FLOPs, H device-hours, gamma the compute-frontier exponent,
alpha and beta the parameter and data exponents of the sum law L = E + A N^-alpha + B D^-beta, a and b the
compute-optimal allocation exponents (N* ~ C^a, D* ~ C^b), kappa forward FLOPs per atom per parameter.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from symscale.fit.results import ARCHITECTURE, FitResult, interval_problem
from symscale.report import reference

LAW_NAMES = {
    "frontier_C": "compute frontier (FLOPs)",
    "frontier_H": "compute frontier (device-hours)",
    "sum": "sum law L(N, D)",
    "isoflop": "IsoFLOP allocation",
    "allocation": "allocation from the sum law",
}


@dataclass(frozen=True)
class Table:
    """A titled grid of already formatted cells, with footnotes."""

    key: str
    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Estimate:
    """A fitted value and its 95% interval (lo, hi are None when the fit gave no interval)."""

    value: float
    lo: float | None = None
    hi: float | None = None
    unresolved: str | None = None  # why the interval does not resolve the value (then it is not shown)

    @property
    def has_interval(self) -> bool:
        """Whether there is an interval that resolves the value."""
        return self.lo is not None and self.hi is not None and self.unresolved is None

    def overlaps(self, other: Estimate) -> bool:
        """True when the two 95% intervals share a point (undecidable without intervals: True)."""
        if not (self.has_interval and other.has_interval):
            return True
        return self.lo <= other.hi and other.lo <= self.hi

    def contains(self, x: float) -> bool:
        return self.has_interval and self.lo <= x <= self.hi


# ---------------------------------------------------------------- formatting


def fmt(x: float | None, digits: int = 3) -> str:
    """Three significant digits, `—` for missing, plain notation between 1e-3 and 1e4."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if x == 0:
        return "0"
    if 1e-3 <= abs(x) < 1e4:
        return f"{x:.{digits}g}"
    return f"{x:.{digits - 1}e}"


def fmt_estimate(e: Estimate | None) -> str:
    """`0.142 [0.121, 0.163]`, `0.142 (unresolved: zero-width interval)`, `0.142` (no interval) or `—`."""
    if e is None:
        return "—"
    if e.unresolved:
        return f"{fmt(e.value)} (unresolved: {e.unresolved})"
    if not e.has_interval:
        return fmt(e.value)
    return f"{fmt(e.value)} [{fmt(e.lo)}, {fmt(e.hi)}]"


def fmt_count(x: float | None) -> str:
    """Integers below 1e4 as such, larger ones as 1.23e+05."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    return f"{int(round(x))}" if abs(x) < 1e4 else f"{x:.2e}"


# ---------------------------------------------------------------- fit lookup


def find_fit(
    fits: Sequence[FitResult],
    family: str,
    law: str,
    mode: str = ARCHITECTURE,
    options: str | None = None,
    variant: str = "",
) -> FitResult | None:
    """The fit of `law` for report row `family` (a family with its options, `esen-l4`; or, with `options`
    given, the family `family` with those options) in symmetry `mode`, or None. `variant` "" is the study's
    own fit; "l_inf=free" / "l_inf=zero" its sensitivity fit under that policy."""
    for fit in fits:
        row = fit.arch if options is not None else fit.family
        if (fit.law, row, fit.mode, fit.variant) == (law, family, mode, variant) and options in (None, fit.options):
            return fit
    return None


def not_possible(fit: FitResult) -> str:
    """`not possible: <reason>`, as the report and `symscale plan` show a failed fit."""
    return f"not possible: {fit.reason or fit.message or 'no reason given'}"


def _interval(ci: dict, name: str) -> tuple[float | None, float | None]:
    pair = (ci or {}).get(name)
    if not pair or len(pair) != 2 or any(v is None or not math.isfinite(float(v)) for v in pair):
        return None, None
    return float(pair[0]), float(pair[1])


def estimate(fit: FitResult | None, name: str) -> Estimate | None:
    """`name` from a fit's params (with ci95) or derived values (with derived_ci95); None if absent or not ok.

    The interval is unresolved when the fit flagged it (`FitResult.unresolved`, set by the fit menu from the
    resamples) or, for a fit without that flag (a fits.json written before it), when the interval alone fails
    the same rule (`symscale.fit.results.interval_problem`: zero width, estimate on its edge, wider than the
    estimate): every table cell and every sentence that prints an estimate goes through here."""
    if fit is None or not fit.ok:
        return None
    for values, cis in ((fit.params, fit.ci95), (fit.derived, fit.derived_ci95)):
        value = values.get(name)
        if value is not None and math.isfinite(float(value)):
            lo, hi = _interval(cis, name)
            why = (fit.unresolved or {}).get(name)
            if why is None and lo is not None and hi is not None:
                why = interval_problem(float(value), [lo, hi])
            return Estimate(float(value), lo, hi, why)
    return None


@dataclass
class _Footnotes:
    """Numbered reasons for fits that could not be made; one number per distinct (group, law)."""

    notes: list[str] = field(default_factory=list)
    index: dict[tuple[str, str], int] = field(default_factory=dict)

    def cell(self, fit: FitResult | None, arch: str, law: str) -> str:
        if fit is None:
            return "—"
        key = (fit.group, law)
        if key not in self.index:
            self.notes.append(f"[{len(self.notes) + 1}] {fit.group}, {LAW_NAMES.get(law, law)}: {not_possible(fit)}")
            self.index[key] = len(self.notes)
        return f"not possible [{self.index[key]}]"


def _measured(fits: Sequence[FitResult], arch: str, law: str, name: str, notes: _Footnotes, mode: str) -> str:
    fit = find_fit(fits, arch, law, mode)
    if fit is not None and not fit.ok:
        return notes.cell(fit, arch, law)
    return fmt_estimate(estimate(fit, name))


# ---------------------------------------------------------------- tables


def _exponent_row(fits: Sequence[FitResult], arch: str, info: reference.FamilyInfo, notes: _Footnotes) -> tuple:
    def m(law: str, name: str) -> str:
        return _measured(fits, arch, law, name, notes, ARCHITECTURE)

    def p(name: str) -> str:
        return fmt(reference.paper_value(arch, name))

    a, b = _allocation_cells(fits, arch, notes)
    ell = "—" if info.l is None else str(info.l)
    return (info.label, str(info.nu), ell, m("frontier_C", "gamma"), p("gamma_flops"), m("frontier_H", "gamma")) + (
        p("gamma_hours"),
        m("sum", "alpha"),
        p("alpha"),
        m("sum", "beta"),
        p("beta"),
        a,
        b,
        _e_cell(fits, arch, notes),
        _l_inf_cell(fits, arch, notes),
    )


def _l_inf_cell(fits: Sequence[FitResult], arch: str, notes: _Footnotes) -> str:
    fit = find_fit(fits, arch, "frontier_C")
    if fit is not None and fit.ok and fit.settings.get("free_L_inf") is False:
        return "0 (fixed)"
    return _measured(fits, arch, "frontier_C", "L_inf", notes, ARCHITECTURE)


def _e_cell(fits: Sequence[FitResult], arch: str, notes: _Footnotes) -> str:
    fit = find_fit(fits, arch, "sum")
    if fit is not None and fit.ok and fit.settings.get("fix_E") == 0:
        return "0 (fixed)"
    return _measured(fits, arch, "sum", "E", notes, ARCHITECTURE)


def l_inf_policy(fits: Sequence[FitResult]) -> str | None:
    """The L_inf policy of the study's own fits ("zero" or "free"), or None when they do not say."""
    return next(
        (f.settings["l_inf"] for f in fits if not f.variant and f.settings.get("l_inf") in ("zero", "free")), None
    )


def exponent_table(fits: Sequence[FitResult], archs: Sequence[str], families: dict[str, reference.FamilyInfo]) -> Table:
    """Exponents per family with 95% intervals, the paper's values in adjacent columns."""
    notes = _Footnotes()
    rows = [_exponent_row(fits, arch, families[arch], notes) for arch in archs]
    columns = (
        "family",
        "ν",
        "ℓ",
        "γ_C (FLOPs)",
        "γ_C paper",
        "γ_H (hours)",
        "γ_H paper",
        "α (params)",
        "α paper",
        "β (data)",
        "β paper",
        "a (N* ~ C^a)",
        "b (D* ~ C^b)",
        "E (sum law)",
        "L∞ (frontier)",
    )
    policy = l_inf_policy(fits)
    stated = {"zero": "E and L∞ fixed at 0 (the paper's choice)", "free": "E and L∞ fitted"}.get(policy or "", "")
    text = (
        "Measured values with 95% intervals in brackets; the paper's values (approximate, no intervals, "
        "L∞ fixed at 0) beside them. a and b from the IsoFLOP fit, else from the sum law (marked *). "
        "The paper finds a ≈ b ≈ 0.5."
        + (f" L∞ policy of every law here: {stated}; the sensitivity table shows the other choice." if stated else "")
        + _loss_text(fits)
    )
    return Table("exponents", "Scaling exponents per family", columns, tuple(rows), (text, *notes.notes))


def _allocation_cells(fits: Sequence[FitResult], arch: str, notes: _Footnotes) -> tuple[str, str]:
    iso = find_fit(fits, arch, "isoflop")
    if iso is not None and iso.ok:
        return fmt_estimate(estimate(iso, "a")), fmt_estimate(estimate(iso, "b"))
    a, b = sum_law_allocation(fits, arch)
    if a is not None or b is not None:
        return fmt_estimate(a) + "*", fmt_estimate(b) + "*"
    if iso is not None:
        cell = notes.cell(iso, arch, "isoflop")
        return cell, cell
    return "—", "—"


def sum_law_allocation(fits: Sequence[FitResult], arch: str, mode: str = ARCHITECTURE) -> tuple[Estimate | None, ...]:
    """(a, b) = (beta/(alpha+beta), alpha/(alpha+beta)) from the allocation fit, else the sum-law fit."""
    return tuple(_from_sum_law(fits, arch, name, mode) for name in ("a", "b"))


def sum_law_gamma(fits: Sequence[FitResult], arch: str, mode: str = ARCHITECTURE) -> Estimate | None:
    """gamma = alpha beta/(alpha+beta) implied by the sum law."""
    return _from_sum_law(fits, arch, "gamma", mode)


def _from_sum_law(fits: Sequence[FitResult], arch: str, name: str, mode: str) -> Estimate | None:
    for law in ("allocation", "sum"):
        found = estimate(find_fit(fits, arch, law, mode), name)
        if found is not None:
            return found
    alpha = estimate(find_fit(fits, arch, "sum", mode), "alpha")
    beta = estimate(find_fit(fits, arch, "sum", mode), "beta")
    if alpha is None or beta is None or alpha.value + beta.value <= 0:
        return None
    value = {"a": beta.value, "b": alpha.value, "gamma": alpha.value * beta.value}[name]
    why = "; ".join(f"{n} {e.unresolved}" for n, e in (("α", alpha), ("β", beta)) if e.unresolved) or None
    # point estimate only (no covariance to propagate); unresolved when α or β is
    return Estimate(value / (alpha.value + beta.value), unresolved=why and f"from unresolved {why}")


def _loss_text(fits: Sequence[FitResult]) -> str:
    loss = next((f.settings.get("loss") for f in fits if f.settings.get("loss")), None)
    names = {"total": "the total validation loss", "force": "the force term", "energy": "the energy term"}
    return f" L is {names[loss]}." if loss in names else ""


SENSITIVITY = (("frontier_C", "gamma"), ("sum", "alpha"), ("sum", "beta"), ("allocation", "gamma"))


def sensitivity_table(
    fits: Sequence[FitResult], archs: Sequence[str], families: dict[str, reference.FamilyInfo]
) -> Table | None:
    """Per report row: the exponents under the study's L_inf policy and, in the row beside it, under the
    other one (the fit menu's sensitivity fits); None when fits.json has no sensitivity fits."""
    policy = l_inf_policy(fits)
    if policy is None or not any(f.variant for f in fits):
        return None
    other = "free" if policy == "zero" else "zero"
    notes = _Footnotes()
    rows = []
    for arch in archs:
        for variant, name in (("", policy), (f"l_inf={other}", other)):
            cells = []
            for law, param in SENSITIVITY:
                fit = find_fit(fits, arch, law, variant=variant)
                cells.append(
                    notes.cell(fit, arch, law) if fit is not None and not fit.ok else fmt_estimate(estimate(fit, param))
                )
            e = estimate(find_fit(fits, arch, "sum", variant=variant), "E")
            l_inf = estimate(find_fit(fits, arch, "frontier_C", variant=variant), "L_inf")
            label = "zero (E = L∞ = 0)" if name == "zero" else "free (E, L∞ fitted)"
            rows.append(
                (
                    families[arch].label,
                    label + ("" if variant else ", the study's"),
                    *cells,
                    "0 (fixed)" if name == "zero" else fmt_estimate(e),
                    "0 (fixed)" if name == "zero" else fmt_estimate(l_inf),
                )
            )
    columns = (
        "family",
        "L∞ policy",
        "γ_C (frontier)",
        "α (params)",
        "β (data)",
        "αβ/(α+β)",
        "E (sum law)",
        "L∞ (frontier)",
    )
    note = (
        "How much the exponents depend on the L∞ assumption: each family fitted with E and L∞ fixed at 0 (the "
        "paper's choice) and with both fitted, every law under the same assumption. The sensitivity fits use "
        "fewer bootstrap resamples (at most 200)."
    )
    return Table("l_inf_sensitivity", "L∞ sensitivity", columns, tuple(rows), (note, *notes.notes))


def consistency_table(
    fits: Sequence[FitResult], archs: Sequence[str], families: dict[str, reference.FamilyInfo]
) -> Table:
    """gamma measured on the frontier against alpha beta/(alpha+beta) from the sum law; a, b both ways."""
    rows = []
    for arch in archs:
        frontier, iso = find_fit(fits, arch, "frontier_C"), find_fit(fits, arch, "isoflop")
        direct, implied = estimate(frontier, "gamma"), sum_law_gamma(fits, arch)
        a, b = sum_law_allocation(fits, arch)
        rows.append(
            (
                families[arch].label,
                _cell(frontier, "gamma"),
                fmt_estimate(implied),
                _agreement(direct, implied),
                _cell(iso, "a"),
                fmt_estimate(a),
                _cell(iso, "b"),
                fmt_estimate(b),
            )
        )
    columns = (
        "family",
        "γ_C (frontier)",
        "αβ/(α+β) (sum law)",
        "agree?",
        "a (IsoFLOP)",
        "β/(α+β)",
        "b (IsoFLOP)",
        "α/(α+β)",
    )
    note = (
        "If the sum law holds with L∞ = E, the frontier exponent equals αβ/(α+β). 'agree' means the 95% intervals "
        "overlap; 'differ' that they do not; without intervals nothing is claimed."
    )
    return Table("consistency", "Consistency check", columns, tuple(rows), (note,))


def _cell(fit: FitResult | None, name: str) -> str:
    return not_possible(fit) if fit is not None and not fit.ok else fmt_estimate(estimate(fit, name))


def _agreement(x: Estimate | None, y: Estimate | None) -> str:
    if x is None or y is None:
        return "—"
    if not (x.has_interval and y.has_interval):
        return "no intervals"
    return "agree" if x.overlaps(y) else "differ"


def kappa_table(
    kappas: dict[str, list[float]], archs: Sequence[str], families: dict[str, reference.FamilyInfo]
) -> Table:
    """kappa (forward FLOPs per atom per parameter) per family: median over runs, range, the paper's value."""
    rows = []
    for arch in archs:
        values = sorted(k for k in kappas.get(arch, []) if k is not None and math.isfinite(k) and k > 0)
        median = values[len(values) // 2] if values else None
        paper = reference.paper_value(arch, "kappa")
        ratio = median / paper if median is not None and paper else None
        spread = f"{fmt(values[0])} – {fmt(values[-1])}" if values else "—"
        rows.append((families[arch].label, fmt(median), spread, str(len(values)), fmt(paper, 4), fmt(ratio)))
    columns = ("family", "κ measured (median)", "κ range over runs", "runs", "κ paper", "measured / paper")
    note = (
        "κ in forward FLOPs per atom per parameter (C ≈ 3 κ N D). Measured from each run's run.json, else from "
        "C/(3 N D). Differences from the paper are expected: other cutoffs, neighbour counts and depths."
    )
    return Table("kappa", "κ per family: measured and the paper's", columns, tuple(rows), (note,))


def runs_table(runs: Iterable[Any]) -> Table:
    """One row per run: arch, mode, width, N, D, C, H, final loss, status (objects with those attributes)."""
    rows = []
    for r in runs:
        status = r.status if not r.reason else f"{r.status}: {r.reason}"
        rows.append(
            (
                r.run_id,
                r.arch,
                r.mode,
                fmt_count(r.width),
                fmt_count(r.N),
                fmt_count(r.D),
                fmt_count(r.C),
                fmt(r.H),
                fmt(r.loss, 4),
                status,
            )
        )
    columns = ("run", "arch", "mode", "width", "N", "D [atoms]", "C [FLOPs]", "H [device-h]", "final loss", "status")
    return Table("runs", "Runs", columns, tuple(rows), ("Final values at each run's last evaluation.",))


# metrics.jsonl keys of the errors table (units from symscale.train.evaluation), and the table's columns
ERROR_KEYS = ("energy_mae_mev_per_atom", "force_mae_mev_per_A", "force_cos", "equivariance_error_forces")
ERROR_COLUMNS = (
    "run", "family", "mode", "N", "energy MAE [meV/atom]", "force MAE [meV/Å]", "force cosine",
    "force equivariance error [meV/Å]",
)  # fmt: skip


def _rotation_equivariant(info: dict) -> bool:
    """Whether run.json records the model as rotation-equivariant by construction (then no error is measured)."""
    symmetry = info.get("symmetry")
    return isinstance(symmetry, dict) and bool(symmetry.get("rotation_equivariant"))


def _errors_row(r: Any, last: dict, info: dict) -> tuple[str, ...]:
    family = f"{r.arch}-{r.options}" if r.options else str(r.arch or "?")
    equivariance = last.get("equivariance_error_forces")
    if equivariance is None:
        equivariance = "equivariant by construction" if _rotation_equivariant(info) else "—"
    else:
        equivariance = fmt(float(equivariance))
    values = [last.get(k) for k in ERROR_KEYS[:3]]
    cells = [fmt(None if v is None else float(v)) for v in values]
    return (r.run_id, family, str(r.mode or ARCHITECTURE), fmt_count(r.N), *cells, equivariance)


def run_errors_table(runs: Iterable[Any], metrics: dict[str, list[dict]], infos: dict[str, dict]) -> Table | None:
    """One row per run that recorded errors at its last evaluation (metrics.jsonl): energy MAE per atom
    [meV/atom], force MAE per Cartesian component [meV/Å], mean force cosine, and the force equivariance
    error [meV/Å] where the model is not rotation-equivariant by construction; None when no run recorded any."""
    rows = []
    for r in runs:
        lines = [m for m in metrics.get(r.run_id, []) if any(m.get(k) is not None for k in ERROR_KEYS)]
        if lines:
            rows.append(_errors_row(r, lines[-1], infos.get(r.run_id, {})))
    if not rows:
        return None
    notes = (
        "At each run's last evaluation, on its validation set (symscale.train.evaluation): energy MAE per atom, "
        "force MAE per Cartesian component, mean cosine between predicted and reference forces, and the mean "
        "|F(Rx) − R F(x)| over random rotations R, measured for models that are not rotation-equivariant by "
        "construction.",
    )
    return Table("errors", "Energy and force errors per run", ERROR_COLUMNS, tuple(rows), notes)


def failed_runs_table(runs: Iterable[Any]) -> Table | None:
    """Runs that did not finish, per family; None when every run finished."""
    rows = tuple(
        (r.arch, r.run_id, fmt_count(r.width), r.mode, r.status, r.reason or "—")
        for r in sorted(runs, key=lambda r: (r.arch, r.width or 0, r.run_id))
        if r.status != "finished"
    )
    if not rows:
        return None
    return Table("failed", "Runs that did not finish", ("family", "run", "width", "mode", "status", "reason"), rows)


def fit_status_table(fits: Sequence[FitResult]) -> Table:
    """Every fit: whether it was possible, on how many points, and why not."""
    rows = []
    for fit in fits:
        why = (fit.reason or "no reason given") if not fit.ok else fit.message
        rows.append(
            (
                fit.group + (f" ({fit.variant})" if fit.variant else ""),
                LAW_NAMES.get(fit.law, fit.law),
                "yes" if fit.ok else "no",
                fmt_count(fit.n_points),
                fmt_count(fit.n_excluded),
                fit.method or "—",
                "yes" if fit.converged else "no",
                why or "—",
            )
        )
    columns = ("group", "law", "possible", "points", "excluded", "method", "converged", "reason / message")
    return Table("fits", "Fits", columns, tuple(rows))


def provenance_table(items: dict[str, str]) -> Table:
    return Table("provenance", "Provenance", ("item", "value"), tuple((k, v) for k, v in items.items()))


def modes_table(
    fits: Sequence[FitResult], archs: Sequence[str], modes: Sequence[str], families: dict[str, reference.FamilyInfo]
) -> Table:
    """Exponents per (family, symmetry mode): does a symmetry loss or augmentation change the exponents?"""
    notes = _Footnotes()
    rows = []
    for arch in archs:
        for mode in modes:
            if not any(find_fit(fits, arch, law, mode) for law in LAW_NAMES):
                continue
            laws = (("frontier_C", "gamma"), ("frontier_H", "gamma"), ("sum", "alpha"), ("sum", "beta"))
            cells = tuple(_measured(fits, arch, law, name, notes, mode) for law, name in laws)
            rows.append((families[arch].label, mode, *cells))
    note = (
        "The paper: a symmetry loss on the MPNN raises β and lowers α but leaves γ ≈ "
        f"{reference.PAPER_SYMMETRY_LOSS_GAMMA} (approximate); eSEN ℓmax=2 has γ ≈ {reference.PAPER_ESEN_LMAX2_GAMMA}."
    )
    if not rows:
        note = "No fits per symmetry mode in fits.json (fit with group_by including the mode). " + note
    columns = ("family", "mode", "γ_C (FLOPs)", "γ_H (hours)", "α (params)", "β (data)")
    return Table("modes", "Exponents per symmetry mode", columns, tuple(rows), (note, *notes.notes))
