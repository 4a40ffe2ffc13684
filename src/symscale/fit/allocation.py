"""Compute-optimal allocation from the sum law with C = k N D (k = 3 kappa for the families here, 6 for
Chinchilla's transformers).

Minimising A N^-alpha + B D^-beta at fixed N D = C / k gives, in closed form,
    N*(C) = G (C/k)^a,   D*(C) = G^-1 (C/k)^b,   G = (alpha A / (beta B))^(1/(alpha+beta)),
    a = beta / (alpha + beta),  b = alpha / (alpha + beta),
and along it L*(C) - E ~ C^-gamma with gamma = alpha beta / (alpha + beta), to compare with the directly
fitted frontier exponent (the reference study's consistency table).
"""

from __future__ import annotations

import numpy as np

from symscale.errors import SymscaleError
from symscale.fit.parametric import derived_exponents
from symscale.fit.results import FitResult, summarize


def compute_optimal(params: dict, C, k: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N*, D*, predicted loss) at compute C (FLOPs) for sum-law parameters E, A, B, alpha, beta."""
    E, A, B, alpha, beta = (np.asarray(params[n], dtype=float) for n in ("E", "A", "B", "alpha", "beta"))
    budget = np.asarray(C, dtype=float) / k
    # bootstrap samples of a poorly constrained law can have exponents near 0 or of opposite sign: their N*
    # overflows to inf or nan, which is the honest answer for that sample; no warning per sample
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        G = (alpha * A / (beta * B)) ** (1.0 / (alpha + beta))
        n_star = G * budget ** (beta / (alpha + beta))
        d_star = budget / n_star
        return n_star, d_star, E + A * n_star**-alpha + B * d_star**-beta


def allocation(
    sum_fit: FitResult,
    k: float,
    *,
    budget: float | None = None,
    frontier_fit: FitResult | None = None,
) -> FitResult:
    """Compute-optimal exponents from a sum-law fit (with bootstrap intervals from its samples), N* and D*
    at `budget` FLOPs when given, and the frontier's gamma beside the derived one."""
    if not sum_fit.ok:
        return FitResult.failed(sum_fit.group, "allocation", f"no sum-law fit: {sum_fit.reason}")
    if not k > 0:
        raise SymscaleError.invalid("k (C = k N D)", k, "a positive number")
    p = sum_fit.params
    params = derived_exponents(p["alpha"], p["beta"])
    derived: dict[str, float] = {"k": float(k)}
    s = sum_fit.samples
    samples = derived_exponents(s["alpha"], s["beta"]) if s else {}
    d_samples = {}
    if budget is not None:
        n_star, d_star, l_star = compute_optimal(p, budget, k)
        derived.update(
            {"budget": float(budget), "N_star": float(n_star), "D_star": float(d_star), "loss_star": float(l_star)}
        )
        if s:
            n_s, d_s, l_s = compute_optimal(s, budget, k)
            d_samples = {"N_star": n_s, "D_star": d_s, "loss_star": l_s}
    if frontier_fit is not None and frontier_fit.ok:
        derived["gamma_frontier"] = frontier_fit.params["gamma"]
    se, ci = summarize(samples) if samples else ({}, {})
    d_se, d_ci = summarize(d_samples) if d_samples else ({}, {})
    if frontier_fit is not None and frontier_fit.ok and "gamma" in frontier_fit.se:
        d_se["gamma_frontier"] = frontier_fit.se["gamma"]
        d_ci["gamma_frontier"] = frontier_fit.ci95["gamma"]
    return FitResult(
        group=sum_fit.group,
        law="allocation",
        params=params,
        se=se,
        ci95=ci,
        derived=derived,
        derived_se=d_se,
        derived_ci95=d_ci,
        n_points=sum_fit.n_points,
        method="closed form from the sum law, C = k N D",
        settings={"k": float(k), "budget": budget},
        samples=samples,
    )
