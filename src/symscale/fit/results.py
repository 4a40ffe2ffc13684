"""The result of one fit: parameters, their uncertainty, derived quantities and how the fit went.

A result carries what it was fitted over as fields (`arch`, `options`, `mode`), so that nothing downstream
parses the `group` label; `group` is that label, for printing only. A result never reports `ok` with a
non-finite parameter: such a fit is turned into a failed one that says which coefficient it was.

A bootstrap interval that does not resolve its parameter carries a flag instead of being read as a number:
`FitResult.unresolved` maps the parameter's name to why (`flag_intervals` sets it; `interval_problem` is the
rule: too few runs to resample, a zero-width interval, most resamples at one value or at the parameter's
bound, the estimate on the interval's edge, or an interval wider than the estimate itself).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

ARCHITECTURE = "architecture"  # the symmetry mode of a family trained with its architecture alone
MIN_BOOTSTRAP_UNITS = 5  # fewer runs (units) than this: a bootstrap has too few distinct resamples to mean much
AT_ONE_VALUE = 0.5  # more than this share of the resamples at one value (or at the bound): unresolved


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
    # parameter or derived name -> why its interval does not resolve it (printed instead of the interval)
    unresolved: dict = field(default_factory=dict)
    # "" for the fit the study reports; "l_inf=free" / "l_inf=zero" for the sensitivity fit under the other policy
    variant: str = ""

    @property
    def family(self) -> str:
        """The family with its model options, without the mode: `esen-l4`, `mpnn` (what a report row is)."""
        return family_key(self.arch, self.options)

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
        mappings = ("params", "se", "ci95", "derived", "derived_se", "derived_ci95", "settings", "extra", "unresolved")
        for name in mappings:
            values[name] = dict(values.get(name) or {})
        return cls(**values)


def family_key(arch: str, options: str = "") -> str:
    """`esen-l4` for family "esen" with options "l4"; the family alone without options."""
    return f"{arch}-{options}" if options else arch


# model options that make a family a group of its own, and how its label writes them ("esen-l2", "egnn-d6")
OPTION_TAGS = {"lmax": "l", "num_layers": "d", "activation": ""}


def options_label(model_overrides: dict[str, Any] | None, forces: str | None = None) -> str:
    """The `options` text of a run: its model overrides and force mode, in a fixed order and joined by "-".
    lmax 2 -> "l2", num_layers 6 -> "d6", activation silu -> "silu", other overrides "name=value"; forces
    "conservative" -> "conservative" (the study's "direct" is the default and not written). "" for none."""
    overrides = dict(model_overrides or {})
    parts = [f"{OPTION_TAGS[k]}{overrides.pop(k)}" for k in OPTION_TAGS if k in overrides]
    parts += [f"{k}={overrides[k]}" for k in sorted(overrides)]
    if forces and forces != "direct":
        parts.append(str(forces))
    return "-".join(str(p) for p in parts)


def option_values(options: str) -> dict[str, Any]:
    """The model options `options_label` wrote for the tagged keys ("l2-d6" -> {"lmax": 2, "num_layers": 6}),
    for a report that needs them typed (the lmax figure); other parts are left out."""
    out: dict[str, Any] = {}
    for part in filter(None, str(options).split("-")):
        for key, tag in OPTION_TAGS.items():
            if tag and part.startswith(tag) and part[len(tag) :].isdigit():
                out[key] = int(part[len(tag) :])
    return out


def interval_problem(
    value: float,
    ci: list[float] | None,
    samples: np.ndarray | None = None,
    *,
    n_units: int | None = None,
    bound: float | None = None,
    bound_tol: float = 0.0,
) -> str | None:
    """Why a 95% bootstrap interval does not resolve `value`, or None when it does.

    Args:
        value: the full-data estimate.
        ci: [lo, hi] percentile interval of the resamples (None or non-finite: no interval, None returned).
        samples: the bootstrap values behind `ci` (None: the checks on samples are skipped).
        n_units: runs (or points without runs) the bootstrap resampled.
        bound: the parameter's bound (0 for E and L_inf), or None.
        bound_tol: a sample within this of `bound` counts as at the bound.
    """
    if not ci or len(ci) != 2 or not all(_finite(c) for c in ci) or not _finite(value):
        return None
    lo, hi = float(ci[0]), float(ci[1])
    scale = max(abs(value), abs(lo), abs(hi))
    if n_units is not None and n_units < MIN_BOOTSTRAP_UNITS:
        return f"too few runs to resample ({n_units}, need {MIN_BOOTSTRAP_UNITS})"
    if hi - lo <= 1e-9 * scale:
        return "zero-width interval"
    if samples is not None:
        v = np.asarray(samples, dtype=float)
        v = v[np.isfinite(v)]
        if len(v):
            at_edge = max(np.mean(np.isclose(v, end, rtol=1e-6, atol=0)) for end in (v.min(), v.max()))
            at_bound = np.mean(np.abs(v - bound) <= bound_tol) if bound is not None else 0.0
            if at_bound > AT_ONE_VALUE:
                return f"{at_bound:.0%} of the resamples at the bound {bound:g}"
            if at_edge > AT_ONE_VALUE:
                return f"{at_edge:.0%} of the resamples at one value"
    if value <= lo + 1e-9 * scale or value >= hi - 1e-9 * scale:
        return "estimate on the interval's edge"
    if hi - lo > abs(value):
        return "interval wider than the estimate"
    return None


def flag_intervals(fit: FitResult, n_units: int | None, bound_tol: float = 0.0) -> FitResult:
    """The fit with `unresolved` set for every parameter and derived value whose interval does not resolve it.
    E and L_inf have the bound 0 (a sample within `bound_tol` of 0 is at it)."""
    if not fit.ok:
        return fit
    flags: dict[str, str] = {}
    for values, cis in ((fit.params, fit.ci95), (fit.derived, fit.derived_ci95)):
        for name, value in values.items():
            bound = 0.0 if name in ("E", "L_inf") else None
            why = interval_problem(
                value, cis.get(name), fit.samples.get(name), n_units=n_units, bound=bound, bound_tol=bound_tol
            )
            if why:
                flags.setdefault(name, why)
    return replace(fit, unresolved=flags)


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
