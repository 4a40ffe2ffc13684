"""The result of one fit: parameters, their uncertainty, derived quantities and how the fit went.

A result carries what it was fitted over as fields (`arch`, `options`, `mode`), so that nothing downstream
parses the `group` label; `group` is that label, for printing only. A result never reports `ok` with a
non-finite parameter: such a fit is turned into a failed one that says which coefficient it was.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

ARCHITECTURE = "architecture"  # the symmetry mode of a family trained with its architecture alone


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _shown(value: Any) -> str:
    return "null" if value is None else str(value)


@dataclass(frozen=True)
class FitResult:
    """One law fitted to one group. `ok=False` (with `reason`) when the fit was not possible.

    `arch` is the family (the value of the grouping column; the label itself when the table had none),
    `options` the model options that set the family apart (e.g. "l4" for eSEN at lmax 4; "" when none) and
    `mode` the symmetry mode of its runs (architecture | augmentation | symmetry_loss | multi_epoch).
    """

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
    arch: str = ""
    mode: str = ARCHITECTURE
    options: str = ""

    def __post_init__(self) -> None:
        if not self.arch:
            object.__setattr__(self, "arch", self.group)
        bad = [name for name, value in self.params.items() if not _finite(value)]
        if self.ok and bad:  # e.g. the sum law's B = inf: written as null, it would crash every reader
            values = ", ".join(f"{name} = {_shown(self.params[name])}" for name in bad)
            object.__setattr__(self, "ok", False)
            object.__setattr__(self, "converged", False)
            object.__setattr__(self, "reason", f"non-finite coefficient ({values})")

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON-ready values (non-finite numbers become None; bootstrap samples are dropped)."""
        data = asdict(self)
        data.pop("samples")
        return _jsonable(data)

    @classmethod
    def failed(cls, group: str, law: str, reason: str, **kwargs: Any) -> FitResult:
        """A fit that was not possible, with the reason a reader is shown."""
        return cls(group=group, law=law, ok=False, reason=reason, converged=False, **kwargs)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FitResult:
        """A result from `to_dict`'s output (fits.json). Files written before results carried `arch` and
        `mode` name their group "<arch>" or "<arch>/<mode>" (the only form those versions wrote); that one
        form is read here, once, so that no reader downstream parses labels."""
        known = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in data.items() if k in known and (v is not None or k == "reason")}
        if "arch" not in data and "/" in str(data.get("group", "")):
            values["arch"], _, values["mode"] = str(data["group"]).partition("/")
        for name in ("params", "se", "ci95", "derived", "derived_se", "derived_ci95", "settings", "extra"):
            values[name] = dict(values.get(name) or {})
        return cls(**values)


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
