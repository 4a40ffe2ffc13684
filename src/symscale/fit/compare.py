"""Comparing fitted values by their 95% bootstrap intervals: the arithmetic behind the report's verdicts.

Two exponents are ordered only when their intervals are disjoint ("above" / "below"); intervals that share a
point are "overlapping", and a value without an interval that resolves it cannot be compared at all
("unresolved"). A reference value (the paper's a = 0.5) is "inside" an interval or "above" / "below" it.
This is the conservative reading of two percentile intervals (disjoint 95% intervals imply a difference at
better than the 5% level; overlapping ones do not imply there is none), stated as such in the report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

ABOVE, BELOW, OVERLAPPING, UNRESOLVED = "above", "below", "overlapping", "unresolved"
INSIDE = "inside"


@dataclass(frozen=True)
class Interval:
    """A fitted value and its 95% interval; lo, hi None (or `unresolved` set) when there is none to use."""

    value: float
    lo: float | None = None
    hi: float | None = None
    unresolved: str | None = None

    @property
    def resolved(self) -> bool:
        """Whether the interval exists, is finite, ordered and not flagged as unresolved."""
        if self.unresolved or self.lo is None or self.hi is None:
            return False
        return math.isfinite(self.lo) and math.isfinite(self.hi) and self.lo <= self.hi

    def ends(self) -> tuple[float, float]:
        """(lo, hi) of a resolved interval (callers check `resolved` first)."""
        if self.lo is None or self.hi is None:
            raise ValueError("an interval without ends has no (lo, hi)")
        return self.lo, self.hi


def compare_intervals(first: Interval, second: Interval) -> str:
    """Where `first` lies relative to `second`: "above" (first.lo > second.hi), "below" (first.hi < second.lo),
    "overlapping" (the intervals share a point) or "unresolved" (either has no resolving interval)."""
    if not (first.resolved and second.resolved):
        return UNRESOLVED
    (lo1, hi1), (lo2, hi2) = first.ends(), second.ends()
    if lo1 > hi2:
        return ABOVE
    if hi1 < lo2:
        return BELOW
    return OVERLAPPING


def locate(reference: float, interval: Interval) -> str:
    """Where the interval lies relative to a reference value: "inside" (lo <= reference <= hi), "above"
    (lo > reference), "below" (hi < reference) or "unresolved"."""
    if not interval.resolved:
        return UNRESOLVED
    lo, hi = interval.ends()
    if lo > reference:
        return ABOVE
    if hi < reference:
        return BELOW
    return INSIDE


@dataclass(frozen=True)
class SeedSpread:
    """The final validation losses of one grid point over seeds: mean, sample standard deviation (0 for one
    seed) and the range relative to the mean, (max - min) / mean."""

    n_seeds: int
    mean: float
    std: float
    relative_range: float


def seed_spread(losses: list[float]) -> SeedSpread | None:
    """The spread of `losses` (one per seed; non-finite ones left out), or None without any finite loss."""
    values = [float(x) for x in losses if x is not None and math.isfinite(float(x))]
    if not values:
        return None
    n, mean = len(values), sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    relative = (max(values) - min(values)) / mean if mean > 0 else float("nan")
    return SeedSpread(n, mean, std, relative)
