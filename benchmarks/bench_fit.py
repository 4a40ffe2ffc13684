"""Speed of the sum-law fit: symscale's default recipe beside a plain scipy loop written as the replication
notebook did it (per-start L-BFGS-B with finite-difference gradients, a per-resample bootstrap loop).

Both run in this process on the Chinchilla points (Epoch AI's extraction, 5 highest-loss points dropped).
The reference loop is timed on a subset of its starts and resamples (`--reference-starts`,
`--reference-bootstrap`) and extrapolated linearly to the full 4,500 starts + 4,000 refits; the JSON says so.

    python benchmarks/bench_fit.py [--workers 2] [--out benchmarks/results/fit.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import scipy
from scipy.optimize import minimize

import symscale
from _common import cpu_model, git_sha  # benchmarks/ is the script's own folder
from symscale.fit import fit_sum_law, read_table
from symscale.fit.parametric import HuberLSE

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "chinchilla_epoch_svg_extracted.csv"


def chinchilla():
    t = read_table(DATA, columns={"N": "Model Size"}, derive={"D": "{Training FLOP} / (6 * {N})"})
    keep = np.zeros(len(t), dtype=bool)
    keep[np.argsort(t["loss"])[:-5]] = True
    return t.select(keep)


def notebook_objective(theta, log_n, log_d, log_l, weights=None, delta=1e-3):
    a, b, e, alpha, beta = theta
    pred = np.logaddexp(np.logaddexp(a - alpha * log_n, b - beta * log_d), e)
    r = pred - log_l
    h = np.where(np.abs(r) <= delta, 0.5 * r**2, delta * (np.abs(r) - 0.5 * delta))
    return float(h.sum() if weights is None else h @ weights)


def reference(t, n_starts: int, n_boot: int, seed: int) -> dict:
    obj = HuberLSE(np.log(t["N"]), np.log(t["D"]), np.log(t["loss"]))
    grid = obj.grid()
    pick = np.random.default_rng(seed).choice(len(grid), size=n_starts, replace=False)
    args = (obj.log_n, obj.log_d, obj.log_l)
    start = time.perf_counter()
    best = min((minimize(notebook_objective, grid[i], args=args, method="L-BFGS-B") for i in pick), key=lambda r: r.fun)
    per_start = (time.perf_counter() - start) / n_starts
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    for _ in range(n_boot):
        w = np.bincount(rng.integers(0, len(t), len(t)), minlength=len(t)).astype(float)
        minimize(notebook_objective, best.x, args=(*args, w), method="L-BFGS-B")
    per_refit = (time.perf_counter() - start) / n_boot
    return {
        "timed_starts": n_starts,
        "timed_refits": n_boot,
        "seconds_per_start": per_start,
        "seconds_per_refit": per_refit,
        "extrapolated_full_recipe_s": per_start * len(grid) + per_refit * 4000,
        "alpha_best_of_timed_starts": float(best.x[3]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--reference-starts", type=int, default=300)
    parser.add_argument("--reference-bootstrap", type=int, default=200)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "fit.json"))
    args = parser.parse_args()
    t = chinchilla()
    start = time.perf_counter()
    fit = fit_sum_law(t["N"], t["D"], t["loss"], bootstrap=4000, seed=42, workers=args.workers)
    ours = time.perf_counter() - start
    ref = reference(t, args.reference_starts, args.reference_bootstrap, seed=0)
    result = {
        "benchmark": "sum-law fit, 4,500 starts + 4,000 bootstrap refits, Chinchilla (240 points)",
        "symscale_s": ours,
        "reference_notebook_style_s": ref["extrapolated_full_recipe_s"],
        "speedup": ref["extrapolated_full_recipe_s"] / ours,
        "reference": ref,
        "symscale_fit": {k: fit.params[k] for k in ("E", "A", "B", "alpha", "beta")},
        "symscale_se": fit.se,
        "workers": args.workers,
        "load_average": os.getloadavg(),
        "hardware": {
            "cpus": os.cpu_count(),
            "machine": platform.machine(),
            "processor": cpu_model() or platform.processor(),
        },
        "versions": {
            "symscale": symscale.__version__,
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "python": platform.python_version(),
        },
        "git_sha": git_sha(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("symscale_s", "reference_notebook_style_s", "speedup")}, indent=2))


if __name__ == "__main__":
    main()
