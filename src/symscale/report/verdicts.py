"""The verdicts: what the study's intervals say about each of the paper's three claims, and about every pair
of families on the compute frontier.

The claims (Ngo & Ravanbakhsh, PAPER.md): (1) equivariant families scale better than the unconstrained one
(frontier gamma of MC-EGNN, GemNet-OC and eSEN above MPNN's); (2) higher tensor order scales better (eSEN's
gamma at its highest lmax above its lowest, when the study fitted eSEN at two lmax as groups of their own);
(3) compute-optimal training grows N and D together, a ~ b ~ 0.5 (the IsoFLOP exponent a of every family).
Each gets "supported", "contradicted" or "not resolved", with the intervals it rests on. The interval
arithmetic (disjoint or overlapping 95% intervals, a reference value inside or outside) is
`symscale.fit.compare`; this module only chooses what to compare and words it.

Rules, stated in the report beside the lines:
- claims 1 and 2: supported when every compared pair is separated in the claimed direction; contradicted when
  any pair is separated against it; otherwise (an overlap, a missing or unresolved interval) not resolved.
- claim 3: supported when every family with a resolved IsoFLOP interval for a has 0.5 inside it and that
  interval excludes both 0 and 1 (all compute to data, all to parameters), so that it says something;
  contradicted when any interval excludes 0.5; otherwise not resolved.
Only the architecture mode is compared (the ablation modes have the modes table).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from symscale.fit.compare import ABOVE, BELOW, INSIDE, OVERLAPPING, Interval, compare_intervals, locate
from symscale.fit.results import FitResult, option_values
from symscale.report import reference, tables

SUPPORTED, CONTRADICTED, NOT_RESOLVED = "supported", "contradicted", "not resolved"
UNCONSTRAINED = ("mpnn",)  # the paper's translation-only family
EQUIVARIANT = ("egnn", "gemnet_oc", "esen")  # the paper's E(3) / SO(3) families


@dataclass(frozen=True)
class Verdict:
    """One claim's verdict and the intervals behind it, as text."""

    claim: str
    verdict: str  # supported | contradicted | not resolved
    evidence: str

    @property
    def line(self) -> str:
        return f"{self.claim}: **{self.verdict}**. {self.evidence}"


def interval_of(fit: FitResult | None, name: str) -> Interval | None:
    """The value of `name` in a fit with its 95% interval (None when the fit is missing or failed)."""
    est = tables.estimate(fit, name)
    return None if est is None else Interval(est.value, est.lo, est.hi, est.unresolved)


def _gamma(fits: Sequence[FitResult], key: str) -> Interval | None:
    return interval_of(tables.find_fit(fits, key, "frontier_C"), "gamma")


def _shown(interval: Interval | None) -> str:
    if interval is None:
        return "no fit"
    return tables.fmt_estimate(tables.Estimate(interval.value, interval.lo, interval.hi, interval.unresolved))


def pair_relation(first: Interval | None, second: Interval | None) -> str:
    """ "separated above", "separated below", "overlapping" or "not comparable" (a missing or unresolved interval)."""
    if first is None or second is None:
        return "not comparable"
    where = compare_intervals(first, second)
    return {ABOVE: "separated above", BELOW: "separated below", OVERLAPPING: "overlapping"}.get(where, "not comparable")


def _ordered_claim(claim: str, pairs: list[tuple[str, Interval | None, str, Interval | None]], missing: str) -> Verdict:
    """Verdict of "each first > its second" over pairs (label_hi, gamma_hi, label_lo, gamma_lo)."""
    if not pairs:
        return Verdict(claim, NOT_RESOLVED, missing)
    relations = [pair_relation(hi, lo) for _, hi, _, lo in pairs]
    evidence = "; ".join(
        f"{h} {_shown(gh)} vs {lo_} {_shown(gl)}: {rel}" for (h, gh, lo_, gl), rel in zip(pairs, relations)
    )
    if "separated below" in relations:
        verdict = CONTRADICTED
    elif all(r == "separated above" for r in relations):
        verdict = SUPPORTED
    else:
        verdict = NOT_RESOLVED
    return Verdict(claim, verdict, f"Frontier γ (FLOPs, 95% intervals): {evidence}.")


def _label(families: dict[str, reference.FamilyInfo], key: str) -> str:
    info = families.get(key)
    return info.label if info is not None else key


def _arch(families: dict[str, reference.FamilyInfo], key: str) -> str:
    info = families.get(key)
    return info.arch if info is not None and info.arch else key.split("-", 1)[0]


def equivariance_claim(
    fits: Sequence[FitResult], archs: Sequence[str], families: dict[str, reference.FamilyInfo]
) -> Verdict:
    """Claim 1: every equivariant family's frontier gamma above every unconstrained family's."""
    claim = "Equivariant families scale better (γ above the unconstrained MPNN's)"
    low = [k for k in archs if _arch(families, k) in UNCONSTRAINED]
    high = [k for k in archs if _arch(families, k) in EQUIVARIANT]
    pairs = [(_label(families, h), _gamma(fits, h), _label(families, lo), _gamma(fits, lo)) for h in high for lo in low]
    return _ordered_claim(claim, pairs, "Not tested: the study needs MPNN and at least one equivariant family.")


def _lmax(families: dict[str, reference.FamilyInfo], key: str) -> int | None:
    info = families.get(key)
    lmax = option_values(info.options if info is not None else "").get("lmax")
    if lmax is None and info is not None and isinstance(info.l, int) and info.options:
        lmax = info.l
    return lmax


def tensor_order_claim(
    fits: Sequence[FitResult], archs: Sequence[str], families: dict[str, reference.FamilyInfo]
) -> Verdict:
    """Claim 2: eSEN's gamma at its highest lmax above its lowest (groups such as esen-l2 and esen-l4)."""
    claim = "Higher tensor order scales better (eSEN γ at higher lmax above lower)"
    by_lmax = {}
    for key in archs:
        lmax = _lmax(families, key) if _arch(families, key) == "esen" else None
        if lmax is not None:
            by_lmax.setdefault(lmax, key)
    if len(by_lmax) < 2:
        return Verdict(
            claim, NOT_RESOLVED, "Not tested: the study has no eSEN groups at two lmax (e.g. esen-l2, esen-l4)."
        )
    hi, lo = by_lmax[max(by_lmax)], by_lmax[min(by_lmax)]
    pairs = [(_label(families, hi), _gamma(fits, hi), _label(families, lo), _gamma(fits, lo))]
    return _ordered_claim(claim, pairs, "")


def _usable(interval: Interval) -> bool:
    """An interval for a that says something: resolved, and excluding both 0 and 1."""
    return interval.resolved and interval.lo > 0.0 and interval.hi < 1.0


def allocation_claim(
    fits: Sequence[FitResult], archs: Sequence[str], families: dict[str, reference.FamilyInfo]
) -> Verdict:
    """Claim 3: a ~ b ~ 0.5 from IsoFLOP (b = 1 - a) in every family with a resolved interval for a."""
    claim = "Compute-optimal N and D grow together, a ≈ b ≈ 0.5 (IsoFLOP)"
    half = reference.PAPER_ALLOCATION
    found = {k: interval_of(tables.find_fit(fits, k, "isoflop"), "a") for k in archs}
    found = {k: v for k, v in found.items() if v is not None}
    if not found:
        return Verdict(claim, NOT_RESOLVED, "No family has an IsoFLOP fit (no budget with an interior minimum over N).")
    where = {k: locate(half, v) for k, v in found.items()}
    evidence = "; ".join(f"{_label(families, k)} a = {_shown(v)}" for k, v in found.items())
    excluded = [k for k, w in where.items() if w in (ABOVE, BELOW)]
    inside = [k for k, w in where.items() if w == INSIDE]
    if excluded:
        verdict = CONTRADICTED
        evidence += f". 0.5 lies outside the interval of {', '.join(_label(families, k) for k in excluded)}"
    elif inside and len(inside) == len(found) and all(_usable(found[k]) for k in inside):
        verdict = SUPPORTED
    else:
        verdict = NOT_RESOLVED
        evidence += ". Some intervals are unresolved or too wide to exclude a = 0 or a = 1"
    return Verdict(claim, verdict, f"IsoFLOP exponent a of N_opt ∝ C^a (95% intervals; b = 1 − a): {evidence}.")


def claim_verdicts(
    fits: Sequence[FitResult], archs: Sequence[str], families: dict[str, reference.FamilyInfo]
) -> list[Verdict]:
    """The three claims' verdicts, in the paper's order."""
    return [
        equivariance_claim(fits, archs, families),
        tensor_order_claim(fits, archs, families),
        allocation_claim(fits, archs, families),
    ]


RULES = (
    "A claim of order is supported when every compared pair's 95% intervals are disjoint in the claimed "
    "direction, contradicted when any is disjoint against it, and not resolved otherwise; a ≈ 0.5 is supported "
    "when 0.5 lies inside every family's resolved interval and each interval excludes 0 and 1."
)


def pair_table(
    fits: Sequence[FitResult], archs: Sequence[str], families: dict[str, reference.FamilyInfo]
) -> tables.Table:
    """Every pair of families (architecture mode) on the frontier gamma: both intervals and their relation."""
    rows = []
    for i, first in enumerate(archs):
        for second in archs[i + 1 :]:
            g1, g2 = _gamma(fits, first), _gamma(fits, second)
            rows.append(
                (_label(families, first), _shown(g1), _label(families, second), _shown(g2), pair_relation(g1, g2))
            )
    note = (
        "'separated above' means the first family's 95% interval lies entirely above the second's; "
        "'overlapping' that they share a point (the data cannot order the two); 'not comparable' that an "
        "interval is missing or unresolved."
    )
    columns = ("family", "γ_C [95%]", "against", "γ_C [95%]", "verdict")
    return tables.Table("pairs", "Frontier γ, every pair of families", columns, tuple(rows), (note,))
