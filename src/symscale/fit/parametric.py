"""The sum law L(N, D) = E + A N^-alpha + B D^-beta, fitted as Epoch AI's replication of Chinchilla's
approach 3 (Besiroglu et al. 2024, arXiv 2404.10102) does it:

- predictor log L = LSE(a - alpha log N, b - beta log D, e), with A = e^a, B = e^b, E = e^e;
- objective: sum over points of Huber(delta = 1e-3) of the log residual;
- L-BFGS-B from the grid alpha, beta in {0, 0.5, ..., 2}, e in {-1, -0.5, ..., 1}, a, b in {0, 5, ..., 25}
  (4,500 starts), best kept.

Here the objective and its analytic gradient are vectorised over points and starts; all starts are screened
by evaluating the objective at once and only the best few are polished (the screen keeps the same optimum
as polishing all 4,500; tested on the Chinchilla data). Bootstrap refits start from the full-data optimum.

`fix_E` fixes E (E = 0 drops the e term, the reference study's assumption). `method="varpro"` is a
variable-projection fit: for each (alpha, beta) the linear parameters (E, A, B) >= 0 come from non-negative
least squares on L, and only the two exponents are searched (a grid, then a bounded polish).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools

import numpy as np
from scipy.optimize import minimize, nnls

from symscale.errors import SymscaleError
from symscale.fit.bootstrap import map_chunks, weights_for
from symscale.fit.optimize import BatchResult, batched_lbfgs
from symscale.fit.results import FitResult, summarize

DELTA = 1e-3
GRID = {
    "a": np.arange(0.0, 30.0, 5.0),
    "b": np.arange(0.0, 30.0, 5.0),
    "e": np.arange(-1.0, 1.5, 0.5),
    "alpha": np.arange(0.0, 2.5, 0.5),
    "beta": np.arange(0.0, 2.5, 0.5),
}
NAMES = ("a", "b", "e", "alpha", "beta")


class HuberLSE:
    """Objective of the Epoch recipe for fixed data; `free` names the optimised parameters, the others
    are held at `fixed` (e = -inf drops the E term)."""

    def __init__(self, log_n, log_d, log_l, delta=DELTA, fixed_e: float | None = None):
        self.log_n, self.log_d, self.log_l, self.delta = log_n, log_d, log_l, delta
        self.fixed_e = fixed_e  # None: e is free

    @property
    def n_free(self) -> int:
        """Parameters optimised: 5 (a, b, e, alpha, beta), or 4 with e fixed."""
        return 5 if self.fixed_e is None else 4

    def full(self, theta: np.ndarray) -> np.ndarray:
        """[..., 5] parameters (a, b, e, alpha, beta) from the free ones."""
        if self.fixed_e is None:
            return theta
        e = np.full(theta.shape[:-1] + (1,), self.fixed_e)
        return np.concatenate([theta[..., :2], e, theta[..., 2:]], axis=-1)

    def residuals(self, theta: np.ndarray) -> np.ndarray:
        """Log residuals [..., n_points] for parameters [..., n_free]."""
        p = self.full(theta)[..., None, :]
        t1 = p[..., 0] - p[..., 3] * self.log_n
        t2 = p[..., 1] - p[..., 4] * self.log_d
        return np.logaddexp(np.logaddexp(t1, t2), p[..., 2]) - self.log_l

    def huber(self, r: np.ndarray) -> np.ndarray:
        """Huber loss of residuals `r`, quadratic below `delta` and linear above."""
        ar = np.abs(r)
        return np.where(ar <= self.delta, 0.5 * r * r, self.delta * (ar - 0.5 * self.delta))

    def values(self, thetas: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        """Objective at many parameter vectors [S, n_free] at once -> [S]."""
        h = self.huber(self.residuals(thetas))
        return h.sum(-1) if weights is None else h @ weights

    def value_and_grad(self, theta: np.ndarray, weights: np.ndarray | None = None) -> tuple[float, np.ndarray]:
        """Objective and its gradient [n_free] at one parameter vector, with optional point weights [P]."""
        a, b, e, alpha, beta = self.full(theta)
        t1 = a - alpha * self.log_n
        t2 = b - beta * self.log_d
        m = np.maximum(np.maximum(t1, t2), e)
        w1, w2, w3 = np.exp(t1 - m), np.exp(t2 - m), np.exp(e - m)
        s = w1 + w2 + w3
        r = m + np.log(s) - self.log_l
        g = np.clip(r, -self.delta, self.delta)  # dHuber/dr
        if weights is not None:
            g = g * weights
        w1, w2, w3 = w1 / s, w2 / s, w3 / s
        grad = np.array([g @ w1, g @ w2, g @ w3, -(g * w1) @ self.log_n, -(g * w2) @ self.log_d])
        if self.fixed_e is not None:
            grad = np.delete(grad, 2)
        h = self.huber(r)
        return float(h.sum() if weights is None else h @ weights), grad

    def batch_value_and_grad(self, thetas: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Objectives [k] and gradients [k, n_free] of k problems (parameters [k, n_free], weights [k, P])."""
        p = self.full(thetas)
        t1 = p[:, 0:1] - p[:, 3:4] * self.log_n  # [k, P]
        t2 = p[:, 1:2] - p[:, 4:5] * self.log_d
        e = np.broadcast_to(p[:, 2:3], t1.shape)
        m = np.maximum(np.maximum(t1, t2), e)
        w1, w2, w3 = np.exp(t1 - m), np.exp(t2 - m), np.exp(e - m)
        s = w1 + w2 + w3
        r = m + np.log(s) - self.log_l
        g = np.clip(r, -self.delta, self.delta) * weights / s  # dHuber/dr, weighted, over the softmax norm
        grad = np.stack(
            [(g * w1).sum(1), (g * w2).sum(1), (g * w3).sum(1), -(g * w1) @ self.log_n, -(g * w2) @ self.log_d],
            axis=1,
        )
        if self.fixed_e is not None:
            grad = np.delete(grad, 2, axis=1)
        return (self.huber(r) * weights).sum(1), grad

    def minimize_many(self, x0: np.ndarray, weights: np.ndarray, max_iter: int = 3000) -> BatchResult:
        """Minimise k problems at once from starts x0 [k, n_free] with point weights [k, P]."""
        return batched_lbfgs(lambda x, rows: self.batch_value_and_grad(x, weights[rows]), x0, max_iter=max_iter)

    def grid(self) -> np.ndarray:
        """The starting points [n_starts, n_free]: the product of the per-parameter grids (Epoch's)."""
        names = [n for n in NAMES if not (n == "e" and self.fixed_e is not None)]
        return np.array(list(itertools.product(*(GRID[n] for n in names))))


def _check(N, D, loss) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    arrays = [np.asarray(x, dtype=float) for x in (N, D, loss)]
    for name, x in zip(("N", "D", "loss"), arrays):
        if not np.isfinite(x).all():
            raise SymscaleError(f"sum law: {name} has NaN or inf at row {int(np.argmax(~np.isfinite(x)))}")
        if (x <= 0).any():
            raise SymscaleError(f"sum law: {name} must be positive, got {x[np.argmax(x <= 0)]!r}")
    if len(np.unique(arrays[0])) < 2:
        raise SymscaleError("sum law: a single distinct N; the parameter exponent alpha cannot be fitted")
    if len(np.unique(arrays[1])) < 2:
        raise SymscaleError("sum law: a single distinct D; the data exponent beta cannot be fitted")
    if np.ptp(arrays[2]) == 0:
        raise SymscaleError("sum law: loss has no variation")
    return arrays[0], arrays[1], arrays[2]


def _params(full: np.ndarray, fixed_e: float | None) -> dict[str, float]:
    a, b, e, alpha, beta = full
    with np.errstate(over="ignore"):  # a fit that ran off to log A ~ 1e3 reports A = inf, without a warning
        E = 0.0 if fixed_e is not None and not np.isfinite(fixed_e) else float(np.exp(e))
        return {"E": E, "A": float(np.exp(a)), "B": float(np.exp(b)), "alpha": float(alpha), "beta": float(beta)}


def derived_exponents(alpha, beta) -> dict:
    """Compute-optimal exponents a, b and the implied frontier exponent gamma (C = k N D), for numbers or
    arrays of bootstrap samples (NaN where alpha + beta <= 0)."""
    alpha, beta = np.asarray(alpha, dtype=float), np.asarray(beta, dtype=float)
    total = np.where(alpha + beta > 0, alpha + beta, np.nan)
    out = {"a": beta / total, "b": alpha / total, "gamma": alpha * beta / total}
    return {k: float(v) if v.ndim == 0 else v for k, v in out.items()}


def sum_law(params: dict[str, float], N: np.ndarray | float, D: np.ndarray | float) -> np.ndarray:
    """L(N, D) = E + A N^-alpha + B D^-beta for fitted `params` (E taken as 0 when absent)."""
    N, D = np.asarray(N, dtype=float), np.asarray(D, dtype=float)
    p = params
    return p.get("E", 0.0) + p["A"] * N ** -p["alpha"] + p["B"] * D ** -p["beta"]


def fit_sum_law(
    N,
    D,
    loss,
    *,
    runs=None,
    method: str = "huber-lse",
    fix_E: float | None = None,
    bootstrap: int = 4000,
    seed: int = 42,
    polish: int = 32,
    workers: int | None = None,
    group: str = "all",
) -> FitResult:
    """Fit L(N, D) = E + A N^-alpha + B D^-beta and bootstrap it. See the module docstring for methods."""
    N, D, loss = _check(N, D, loss)
    n_params = 5 - (fix_E is not None)
    if len(loss) <= n_params:
        raise SymscaleError(f"sum law: {len(loss)} points for {n_params} parameters; need more points than parameters")
    if method == "huber-lse":
        return _with_range(_fit_huber(N, D, loss, runs, fix_E, bootstrap, seed, polish, workers, group), N, D)
    if method == "varpro":
        return _with_range(_fit_varpro(N, D, loss, runs, fix_E, bootstrap, seed, workers, group), N, D)
    raise SymscaleError.invalid("sum-law method", method, "huber-lse or varpro")


PLAN_SAMPLES = 200  # bootstrap parameter sets kept in the result (and fits.json) for `symscale plan` intervals


def _with_range(fit: FitResult, N: np.ndarray, D: np.ndarray) -> FitResult:
    """The fit with its fitted range (N, D and N D, [min, max]) and the first `PLAN_SAMPLES` bootstrap
    parameter sets in `extra`, so that a reader of fits.json can say when it extrapolates, and how far."""
    ranges = {"N_range": [float(N.min()), float(N.max())], "D_range": [float(D.min()), float(D.max())]}
    ranges["ND_range"] = [float((N * D).min()), float((N * D).max())]
    kept = {k: np.asarray(v, dtype=float)[:PLAN_SAMPLES].tolist() for k, v in fit.samples.items()}
    return dataclasses.replace(fit, extra={**fit.extra, **ranges, **({"bootstrap_params": kept} if kept else {})})


def _fit_huber(N, D, loss, runs, fix_E, bootstrap, seed, polish, workers, group) -> FitResult:
    fixed_e = None if fix_E is None else (-np.inf if fix_E == 0 else float(np.log(fix_E)))
    objective = HuberLSE(np.log(N), np.log(D), np.log(loss), fixed_e=fixed_e)
    starts = objective.grid()
    screened = starts[np.argsort(objective.values(starts))[:polish]]
    # screened starts that wander off along a flat direction (e.g. E -> 0) are cut at 600 iterations;
    # the optimum is reached in a few hundred from the good ones (bootstrap refits run to convergence)
    fits = objective.minimize_many(screened, np.ones((len(screened), len(loss))), max_iter=600)
    k = int(np.argmin(fits.fun))
    if not fits.converged.any():
        raise SymscaleError(
            f"sum law ({group}): the optimizer did not converge from any of {len(screened)} screened starts; "
            f"best objective {fits.fun[k]:.4g}"
        )
    best = _Best(
        fun=float(fits.fun[k]),
        success=bool(fits.converged[k]),
        message=f"batched L-BFGS, {int(fits.iterations[k])} iterations",
    )
    x_best = fits.x[k]
    params = _params(objective.full(x_best), fixed_e)
    samples = {}
    if bootstrap > 0:
        weights = weights_for(len(loss), runs, bootstrap, seed)
        thetas = map_chunks(functools.partial(_huber_refits, objective, x_best), weights, workers)
        samples = _samples_from(objective.full(thetas), fixed_e)
    return _result(group, params, samples, len(loss), "huber-lse", best, bootstrap, seed, fix_E, len(starts), polish)


def _huber_refits(objective: HuberLSE, x0: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Warm-started refits of the resamples `weights` [k, P], all advanced together."""
    return objective.minimize_many(np.tile(x0, (len(weights), 1)), weights).x


def _samples_from(full: np.ndarray, fixed_e) -> dict[str, np.ndarray]:
    a, b, e, alpha, beta = full.T
    with np.errstate(over="ignore"):  # a refit that ran off to log A ~ 1e3 gives A = inf, kept as such
        E = np.zeros_like(a) if fixed_e is not None and not np.isfinite(fixed_e) else np.exp(e)
        return {"E": E, "A": np.exp(a), "B": np.exp(b), "alpha": alpha, "beta": beta}


def _result(group, params, samples, n_points, method, best, bootstrap, seed, fix_E, n_starts, polish) -> FitResult:
    derived = derived_exponents(params["alpha"], params["beta"])
    fitted = {k: v for k, v in samples.items() if not (k == "E" and fix_E is not None)}  # a fixed E has no interval
    se, ci = summarize(fitted) if fitted else ({}, {})
    d_se: dict[str, float] = {}
    d_ci: dict[str, list[float]] = {}
    if samples:
        d_se, d_ci = summarize(derived_exponents(samples["alpha"], samples["beta"]))
    return FitResult(
        group=group,
        law="sum",
        params=params,
        se=se,
        ci95=ci,
        derived=derived,
        derived_se=d_se,
        derived_ci95=d_ci,
        n_points=n_points,
        method=method,
        settings={
            "bootstrap": bootstrap,
            "seed": seed,
            "fix_E": fix_E,
            "l_inf": "free" if fix_E is None else ("zero" if fix_E == 0 else "fixed"),
            "huber_delta": DELTA,
            "starts": n_starts,
            "polished": polish,
        },
        converged=bool(getattr(best, "success", True)),
        message=str(getattr(best, "message", "")),
        extra={"objective": float(best.fun)},
        samples=samples,
    )


# --- variable projection ----------------------------------------------------------------------------


def _varpro_linear(alpha, beta, N, D, loss, w, fix_E):
    cols = [N**-alpha, D**-beta]
    target = loss.copy()
    if fix_E is None:
        cols.insert(0, np.ones_like(N))
    else:
        target = loss - fix_E
    X = np.stack(cols, axis=1)
    sw = np.sqrt(w)
    coef, rnorm = nnls(X * sw[:, None], target * sw)
    return coef, rnorm**2


def _varpro_fit(N, D, loss, w, fix_E) -> np.ndarray:
    """(E, A, B, alpha, beta) minimising the weighted squared error of L, for fixed weights `w`."""
    grid = np.linspace(0.02, 2.0, 34)
    sse = np.array([[_varpro_linear(a, b, N, D, loss, w, fix_E)[1] for b in grid] for a in grid])
    i, j = np.unravel_index(np.argmin(sse), sse.shape)
    res = minimize(
        lambda x: _varpro_linear(x[0], x[1], N, D, loss, w, fix_E)[1],
        [grid[i], grid[j]],
        method="L-BFGS-B",
        bounds=[(1e-3, 4.0), (1e-3, 4.0)],
    )
    coef, _ = _varpro_linear(res.x[0], res.x[1], N, D, loss, w, fix_E)
    E = coef[0] if fix_E is None else fix_E
    A, B = coef[-2], coef[-1]
    return np.array([E, A, B, res.x[0], res.x[1], res.fun])


def _varpro_refits(N, D, loss, fix_E, weights: np.ndarray) -> np.ndarray:
    return np.array([_varpro_fit(N, D, loss, w, fix_E) for w in weights])


def _fit_varpro(N, D, loss, runs, fix_E, bootstrap, seed, workers, group) -> FitResult:
    E, A, B, alpha, beta, sse = _varpro_fit(N, D, loss, np.ones_like(loss), fix_E)
    params = {"E": float(E), "A": float(A), "B": float(B), "alpha": float(alpha), "beta": float(beta)}
    samples = {}
    if bootstrap > 0:
        weights = weights_for(len(loss), runs, bootstrap, seed)
        out = map_chunks(functools.partial(_varpro_refits, N, D, loss, fix_E), weights, workers)
        samples = dict(zip(("E", "A", "B", "alpha", "beta"), out[:, :5].T))
    best = _Best(fun=float(sse), success=True, message="grid + L-BFGS-B over (alpha, beta); NNLS inside")
    return _result(group, params, samples, len(loss), "varpro", best, bootstrap, seed, fix_E, 34 * 34, 1)


class _Best:
    def __init__(self, fun, success, message):
        self.fun, self.success, self.message = fun, success, message


__all__ = ["HuberLSE", "derived_exponents", "fit_sum_law"]
