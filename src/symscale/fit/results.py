"""The result of one fit: parameters, their uncertainty, derived quantities and how the fit went."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np


@dataclass(frozen=True)
class FitResult:
    """One law fitted to one group. `ok=False` (with `reason`) when the fit was not possible."""

    group: str
    law: str  # "sum" | "frontier_C" | "frontier_H" | "isoflop" | "allocation"
    ok: bool = True
    reason: str | None = None
    params: dict[str, float] = field(default_factory=dict)
    se: dict[str, float] = field(default_factory=dict)
    ci95: dict[str, list[float]] = field(default_factory=dict)
    derived: dict[str, float] = field(default_factory=dict)
    derived_se: dict[str, float] = field(default_factory=dict)
    derived_ci95: dict[str, list[float]] = field(default_factory=dict)
    n_points: int = 0
    n_excluded: int = 0
    method: str = ""
    settings: dict = field(default_factory=dict)
    converged: bool = True
    message: str = ""
    extra: dict = field(default_factory=dict)  # e.g. the frontier points, per-budget optima
    # bootstrap samples of each parameter (kept in memory for derived quantities, not written to JSON)
    samples: dict = field(default_factory=dict, repr=False, compare=False)

    def to_dict(self) -> dict:
        data = asdict(self)
        data.pop("samples")
        return _jsonable(data)

    @classmethod
    def failed(cls, group: str, law: str, reason: str, **kwargs) -> FitResult:
        return cls(group=group, law=law, ok=False, reason=reason, converged=False, **kwargs)

    @classmethod
    def from_dict(cls, data: dict) -> FitResult:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


def summarize(samples: dict[str, np.ndarray]) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Standard error (sample std) and percentile 95% interval of each bootstrap sample array."""
    se, ci = {}, {}
    for name, values in samples.items():
        v = np.asarray(values, dtype=float)
        v = v[np.isfinite(v)]
        if len(v) < 2:
            continue
        with np.errstate(over="ignore"):  # samples near 1e300 (a degenerate refit): the SE is then inf
            se[name] = float(np.std(v, ddof=1))
        ci[name] = [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))]
    return se, ci


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_jsonable(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
