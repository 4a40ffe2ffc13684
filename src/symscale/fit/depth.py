"""Loss against depth at a fixed parameter budget: the optimal depth of a family and its interval.

Symbols: d depth (interaction blocks or layers), x = ln d, L the final validation loss of a run (the run's last
evaluation), N parameters (held near a budget by the width chosen at each depth; `symscale.study.spec`).
The fit is a parabola in log depth on log loss,

    ln L(d) = c0 + c1 x + c2 x^2,      d* = exp(-c1 / (2 c2))   (c2 > 0),

over every run of a family (seeds are points of their own). The reference study reports that the optimal
depth grows with the degree of symmetry, then saturates; a parabola in ln d is the smallest model with an
interior optimum. When the parabola is not convex, or its vertex lies outside the measured depths, d* is
clipped to the measured range and flagged `at_edge` (the optimum is at least, or at most, that depth: a
bound, not a measurement).

Interval: a bootstrap of 95% percentile type on d*: the fit's residuals (one per run, scaled by
sqrt(n / (n - 3)) for the three fitted coefficients) are resampled and added to the fitted curve, and the
parabola refitted. With seeds, the residuals carry the seed-to-seed spread; resampling runs within each depth
instead covered the true optimum less often on synthetic sweeps with 3 seeds (32 of 40 against 35 of 40;
tests/test_depth.py). The interval is approximate with few depths: it held the truth in 31 to 35 of 40 such sweeps.
Each resample's d* is clipped to the measured range as the estimate is.

Departure from the paper: the paper states the trend, not a fit; the parabola and its bootstrap are
symscale's way of putting an interval on it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from symscale.errors import SymscaleError
from symscale.fit.menu import LOSS_COLUMNS
from symscale.fit.table import read_table

MIN_DEPTHS = 3  # distinct depths a parabola needs


@dataclass(frozen=True)
class DepthPointLoss:
    """One run of a depth sweep: its family, depth, width, N and final validation loss L."""

    arch: str
    options: str
    depth: int
    width: int
    num_parameters: int
    loss: float
    run_id: str = ""


@dataclass(frozen=True)
class DepthFit:
    """The depth fit of one family (its arch and model options): the measured depths with the mean L over
    their runs, the parabola's coefficients (c0, c1, c2) of ln L in ln d, the optimal depth d* with its 95%
    bootstrap interval (clipped to the measured depths), and whether d* sits at an edge of the range."""

    arch: str
    options: str
    depths: tuple[int, ...]
    widths: tuple[int, ...]  # the width at each depth
    num_parameters: tuple[int, ...]  # N at each depth
    losses: tuple[float, ...]  # mean final L at each depth
    n_runs: tuple[int, ...]  # runs at each depth
    coefficients: tuple[float, float, float]
    optimal_depth: float
    interval: tuple[float, float]
    best_measured: int  # the depth with the lowest mean L
    at_edge: bool
    n_bootstrap: int

    @property
    def label(self) -> str:
        """The family as the report names it: `esen`, `esen-l4`."""
        return self.arch + (f"-{self.options}" if self.options else "")

    def predict(self, depth: np.ndarray | float) -> np.ndarray:
        """The fitted L at `depth` (any positive depths)."""
        x = np.log(np.asarray(depth, dtype=float))
        c0, c1, c2 = self.coefficients
        return np.exp(c0 + c1 * x + c2 * x * x)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping (depth-fits.json); `from_dict` reads it back."""
        return {"kind": "depth", **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DepthFit:
        """The fit written by `to_dict`."""
        values = {k: v for k, v in data.items() if k != "kind"}
        for key in ("depths", "widths", "num_parameters", "losses", "n_runs", "coefficients", "interval"):
            values[key] = tuple(values[key])
        return cls(**values)


def fit_parabola(depth: np.ndarray, loss: np.ndarray) -> np.ndarray:
    """(c0, c1, c2) of the least-squares parabola ln L = c0 + c1 ln d + c2 (ln d)^2."""
    x = np.log(np.asarray(depth, dtype=float))
    return np.polynomial.polynomial.polyfit(x, np.log(np.asarray(loss, dtype=float)), 2)


def vertex_depth(coefficients: Sequence[float] | np.ndarray, lo: float, hi: float) -> tuple[float, bool]:
    """(d*, at_edge): the parabola's minimum over depths [lo, hi]; at_edge when it is not an interior vertex."""
    c0, c1, c2 = (float(c) for c in coefficients)
    if c2 > 0:
        x = -c1 / (2 * c2)
        if math.log(lo) < x < math.log(hi):
            return math.exp(x), False
    ends = np.array([lo, hi], dtype=float)
    values = c1 * np.log(ends) + c2 * np.log(ends) ** 2
    return float(ends[int(np.argmin(values))]), True


def fit_depth(points: Sequence[DepthPointLoss], *, bootstrap: int = 1000, seed: int = 0) -> DepthFit:
    """The depth fit of one family's runs (see the module docstring). Raises SymscaleError with fewer than
    `MIN_DEPTHS` distinct depths or a non-positive loss."""
    if not points:
        raise SymscaleError.invalid("depth fit", "no runs", f"runs at {MIN_DEPTHS} or more depths")
    depth = np.array([p.depth for p in points], dtype=float)  # [n_runs]
    loss = np.array([p.loss for p in points], dtype=float)  # [n_runs]
    levels = np.unique(depth)
    if len(levels) < MIN_DEPTHS or not np.all(np.isfinite(loss) & (loss > 0)):
        got = f"{len(levels)} depths, losses {loss.tolist()}"
        raise SymscaleError.invalid(f"depth fit of {points[0].arch}", got, f"{MIN_DEPTHS}+ depths, losses > 0")
    lo, hi = float(levels[0]), float(levels[-1])
    coefficients = fit_parabola(depth, loss)
    optimum, at_edge = vertex_depth(coefficients, lo, hi)
    samples = _bootstrap(depth, loss, coefficients, bootstrap, seed)
    optima = np.array([vertex_depth(c, lo, hi)[0] for c in samples])  # [n_bootstrap]
    means = [float(np.mean(loss[depth == d])) for d in levels]
    first = {int(p.depth): p for p in points}
    return DepthFit(
        arch=points[0].arch,
        options=points[0].options,
        depths=tuple(int(d) for d in levels),
        widths=tuple(first[int(d)].width for d in levels),
        num_parameters=tuple(first[int(d)].num_parameters for d in levels),
        losses=tuple(means),
        n_runs=tuple(int(np.sum(depth == d)) for d in levels),
        coefficients=(float(coefficients[0]), float(coefficients[1]), float(coefficients[2])),
        optimal_depth=optimum,
        interval=(float(np.percentile(optima, 2.5)), float(np.percentile(optima, 97.5))),
        best_measured=int(levels[int(np.argmin(means))]),
        at_edge=at_edge,
        n_bootstrap=len(samples),
    )


def _bootstrap(depth: np.ndarray, loss: np.ndarray, coefficients: np.ndarray, n: int, seed: int) -> list[np.ndarray]:
    """Coefficients of `n` refits to the fitted curve plus resampled, dof-scaled residuals."""
    rng = np.random.default_rng(seed)
    x = np.log(depth)  # [n_runs]
    fitted = np.polynomial.polynomial.polyval(x, coefficients)  # [n_runs], ln L
    residuals = (np.log(loss) - fitted) * math.sqrt(len(depth) / max(len(depth) - 3, 1))  # [n_runs]
    return [np.polynomial.polynomial.polyfit(x, fitted + rng.choice(residuals, len(residuals)), 2) for _ in range(n)]


def fit_depth_study(points: Sequence[DepthPointLoss], *, bootstrap: int = 1000, seed: int = 0) -> list[DepthFit]:
    """One `fit_depth` per family (arch and options) of a depth sweep's runs, in the order they first appear.
    A family with fewer than `MIN_DEPTHS` finished depths is left out (the caller says which)."""
    families: dict[tuple[str, str], list[DepthPointLoss]] = {}
    for p in points:
        families.setdefault((p.arch, p.options), []).append(p)
    fits = []
    for runs in families.values():
        if len({p.depth for p in runs}) >= MIN_DEPTHS:
            fits.append(fit_depth(runs, bootstrap=bootstrap, seed=seed))
    return fits


def final_losses(laws: Any, depth_points: Sequence[dict[str, Any]], loss: str = "loss") -> list[DepthPointLoss]:
    """The runs of depth.json's points (`symscale.study.spec.DepthPoint.to_dict`) with their final L from a
    laws table (`symscale.fit.table.LawsTable`; column `loss`, the row of each run's largest step). Runs not in
    the table (pending, failed) are left out."""
    runs = laws["run"].tolist()
    steps = np.asarray(laws["step"], dtype=float)
    values = np.asarray(laws[loss], dtype=float)
    last: dict[str, tuple[float, float]] = {}
    for run, step, value in zip(runs, steps, values, strict=True):
        if run not in last or step > last[run][0]:
            last[run] = (step, value)
    out = []
    for point in depth_points:
        for run_id in point["run_ids"]:
            if run_id in last and math.isfinite(last[run_id][1]):
                keys = ("arch", "options", "depth", "width", "num_parameters")
                out.append(DepthPointLoss(**{k: point[k] for k in keys}, loss=last[run_id][1], run_id=run_id))
    return out


DEPTH_POINTS = "depth.json"  # a study's depth points (the runner writes it)
DEPTH_FITS = "depth-fits.json"  # their fits


def fit_study_depth(
    study_dir: str | Path,
    *,
    write_text: Callable[[Path, str], Any],
    bootstrap: int = 1000,
    seed: int = 0,
    loss: str = "total",
) -> dict[str, Any]:
    """Fit a study's depth sweep: depth.json's points, their final L from laws.csv (`loss`: total, force or
    energy), one `DepthFit` per family; writes depth-fits.json with `write_text(path, text)` (the study
    directory's atomic writer, `symscale.rundir.write_text`) and returns its content ({"fits": [...],
    "left_out": families with fewer than `MIN_DEPTHS` finished depths})."""
    study_dir = Path(study_dir)
    points = json.loads((study_dir / DEPTH_POINTS).read_text())["points"]
    runs = final_losses(read_table(study_dir / "laws.csv"), points, LOSS_COLUMNS[loss])
    fits = fit_depth_study(runs, bootstrap=bootstrap, seed=seed)
    left_out = sorted(
        {p["arch"] + (f"-{p['options']}" if p["options"] else "") for p in points} - {f.label for f in fits}
    )
    payload = {"fits": [f.to_dict() for f in fits], "left_out": left_out, "loss": loss}
    write_text(study_dir / DEPTH_FITS, json.dumps(payload, indent=1))
    return payload


def read_depth_fits(study_dir: str | Path) -> tuple[list[DepthFit], list[str]]:
    """depth-fits.json of a study as typed fits and the families left out; ([], []) when there is none."""
    path = Path(study_dir) / DEPTH_FITS
    if not path.is_file():
        return [], []
    payload = json.loads(path.read_text())
    return [DepthFit.from_dict(f) for f in payload.get("fits", [])], list(payload.get("left_out", []))
