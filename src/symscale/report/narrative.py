"""The "what this shows" paragraphs, generated from the numbers and stated no more strongly than they allow.

Rules: an ordering of two families' gamma is claimed only when their 95% intervals are disjoint; where they
overlap (or a fit gave no interval, or an interval that does not resolve its value, `tables.estimate`) the text
says the data cannot distinguish them and prints the value flagged, never the interval as numbers. Agreement
with the paper means the paper's (approximate) value lies inside our 95% interval.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from symscale.report import reference, tables


def _decades(values: np.ndarray) -> float | None:
    v = values[np.isfinite(values) & (values > 0)]
    return None if len(v) < 2 else float(math.log10(v.max() / v.min()))


def coverage(data: Any) -> str:
    """How many runs finished and how many decades N, D and C span."""
    finished = sum(r.status == "finished" for r in data.runs)
    failed = [r for r in data.runs if r.status == "failed"]
    spans = []
    for col, name in (("N", "parameters"), ("D", "atoms seen"), ("C", "FLOPs")):
        dec = _decades(data.laws[col])
        spans.append(f"{name} over {dec:.1f} decades" if dec is not None else f"{name}: a single value")
    text = (
        f"{len(data.runs)} runs in {len(data.archs)} families, {finished} finished"
        + (f", {len(failed)} failed" if failed else "")
        + f"; the evaluations span {', '.join(spans)}."
    )
    n_dec = _decades(data.laws["N"])
    if n_dec is not None and n_dec < 1.0:
        text += " N spans less than a decade, so the parameter exponents are poorly constrained."
    return text


LEARNING_FALL = 0.10  # a family whose loss fell less than this fraction in every run has barely learned


def barely_learning(data: Any) -> str:
    """Families whose validation loss fell by less than 10% in every run (first evaluation to the best later
    one): their fitted exponents describe the start of training, not how the family scales."""
    laws = data.laws  # column -> array, one entry per evaluation point
    if any(col not in laws for col in ("family", "run", "D", "loss")):
        return ""
    arch_col, run_col = np.asarray(laws["family"]), np.asarray(laws["run"])
    d_col, loss_col = np.asarray(laws["D"], dtype=float), np.asarray(laws["loss"], dtype=float)
    flagged = []
    for arch in data.archs:
        falls = []
        for run in np.unique(run_col[arch_col == arch]):
            rows = run_col == run
            loss = loss_col[rows][np.argsort(d_col[rows], kind="stable")]
            if len(loss) >= 2 and np.isfinite(loss[0]) and loss[0] > 0:
                falls.append(1.0 - np.nanmin(loss[1:]) / loss[0])
        if falls and max(falls) < LEARNING_FALL:
            flagged.append(f"{data.families[arch].label} (at most {100 * max(falls):.0f}%)")
    if not flagged:
        return ""
    return (
        "Barely learning: the validation loss fell by less than 10% from the first evaluation in every run of "
        + ", ".join(flagged)
        + ". Exponents fitted to such curves describe the start of training, not how the family scales; "
        "more data or another learning rate is needed before reading them."
    )


def _pair_text(data: Any, hi: str, lo: str) -> str:
    return f"{data.families[hi].label} > {data.families[lo].label}"


def gamma_ordering(data: Any, gammas: dict[str, tables.Estimate]) -> str:
    """Which families' frontier exponents are separated by their 95% intervals, and which are not."""
    if not gammas:
        return "No compute-frontier exponent γ could be fitted, so nothing is claimed about its order."
    label = lambda a: data.families[a].label
    listed = "; ".join(f"{label(a)} {tables.fmt_estimate(e)}" for a, e in sorted(gammas.items(), key=_by_value))
    text = f"Compute-frontier exponents γ (FLOPs, 95% intervals): {listed}."
    if len(gammas) < 2:
        return text + " With one family there is no ordering to test."
    unresolved = [a for a, e in gammas.items() if e.unresolved]
    no_ci = [a for a, e in gammas.items() if not e.has_interval and not e.unresolved]
    with_ci = {a: e for a, e in gammas.items() if e.has_interval}
    separated, tied = _pairs(with_ci)
    if separated:
        text += " Separated by their intervals: " + ", ".join(_pair_text(data, h, lo) for h, lo in separated) + "."
        text += _paper_order(data, separated)
    if tied:
        names = ", ".join(f"{label(a)} and {label(b)}" for a, b in tied)
        text += f" The data cannot distinguish (intervals overlap): {names}."
    if unresolved:
        why = "; ".join(f"{label(a)}: {gammas[a].unresolved}" for a in unresolved)
        text += f" Unresolved intervals ({why}), so no ordering is claimed for them."
    if no_ci:
        text += f" No interval for {', '.join(map(label, no_ci))} (no bootstrap), so no ordering is claimed for it."
    return text


def _by_value(item: tuple[str, tables.Estimate]) -> float:
    return item[1].value


def _pairs(gammas: dict[str, tables.Estimate]) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(separated pairs as (higher, lower), overlapping pairs), over every pair of families."""
    ordered = sorted(gammas, key=lambda a: gammas[a].value)
    separated, tied = [], []
    for i, low in enumerate(ordered):
        for high in ordered[i + 1 :]:
            if gammas[low].overlaps(gammas[high]):
                tied.append((low, high))
            else:
                separated.append((high, low))
    return separated, tied


def _paper_order(data: Any, separated: Sequence[tuple[str, str]]) -> str:
    rank = {a: i for i, a in enumerate(reference.PAPER_ORDER)}
    known = [(h, lo) for h, lo in separated if h in rank and lo in rank]
    if not known:
        return ""
    against = [(h, lo) for h, lo in known if rank[h] < rank[lo]]
    if not against:
        return " Each of these agrees with the paper's order (more symmetry, larger γ)."
    return " Against the paper's order: " + ", ".join(_pair_text(data, h, lo) for h, lo in against) + "."


def paper_comparison(data: Any, gammas: dict[str, tables.Estimate]) -> str:
    """Whether the paper's gamma (FLOPs) lies inside our 95% interval, family by family."""
    inside, outside = [], []
    for arch, est in gammas.items():
        paper = reference.paper_value(arch, "gamma_flops")
        if paper is None or not est.has_interval:
            continue
        (inside if est.contains(paper) else outside).append(f"{data.families[arch].label} ({paper})")
    if not inside and not outside:
        return ""
    parts = []
    if inside:
        parts.append(f"inside our 95% interval for {', '.join(inside)}")
    if outside:
        parts.append(f"outside it for {', '.join(outside)}")
    return (
        f"The paper's γ (FLOPs, approximate) lies {'; '.join(parts)}. Its values come from OMol25 at 1e5–1e7 "
        "parameters; a study on other data or sizes need not match them."
    )


def consistency(data: Any) -> str:
    """Frontier gamma against alpha beta/(alpha+beta), and whether a, b are compatible with 0.5."""
    agree, differ, near_half, off_half = [], [], [], []
    for arch in data.archs:
        label = data.families[arch].label
        direct = tables.estimate(tables.find_fit(data.fits, arch, "frontier_C"), "gamma")
        implied = tables.sum_law_gamma(data.fits, arch)
        if direct and implied and direct.has_interval and implied.has_interval:
            (agree if direct.overlaps(implied) else differ).append(label)
        a = tables.estimate(tables.find_fit(data.fits, arch, "isoflop"), "a")
        if a is not None and a.has_interval:
            (near_half if a.contains(reference.PAPER_ALLOCATION) else off_half).append(label)
    parts = []
    if agree:
        parts.append(f"the frontier γ agrees with αβ/(α+β) from the sum law for {', '.join(agree)}")
    if differ:
        parts.append(f"it differs for {', '.join(differ)} (the sum law or the frontier fit is off there)")
    if near_half:
        parts.append(f"the IsoFLOP exponent a is compatible with 0.5 for {', '.join(near_half)}")
    if off_half:
        parts.append(f"a excludes 0.5 for {', '.join(off_half)}")
    return ("Within 95% intervals, " + "; ".join(parts) + ".") if parts else ""


def missing_fits(data: Any) -> str:
    """Which fits were not possible, and why."""
    failed = [f for f in data.fits if not f.ok]
    if not failed:
        return "" if data.fits else "No fits are available, so the tables below show no exponents."
    items = [f"{f.group} {tables.LAW_NAMES.get(f.law, f.law)} ({f.reason or 'no reason given'})" for f in failed]
    return f"{len(failed)} fit(s) were not possible: " + "; ".join(items) + "."


def what_this_shows(data: Any) -> list[str]:
    """The paragraphs, in order: coverage, barely learning families, gamma ordering, paper comparison,
    consistency, missing fits."""
    gammas = {}
    for arch in data.archs:
        est = tables.estimate(tables.find_fit(data.fits, arch, "frontier_C"), "gamma")
        if est is not None:
            gammas[arch] = est
    paragraphs = [coverage(data), barely_learning(data), gamma_ordering(data, gammas), paper_comparison(data, gammas)]
    paragraphs += [consistency(data), missing_fits(data)]
    return [p for p in paragraphs if p]
