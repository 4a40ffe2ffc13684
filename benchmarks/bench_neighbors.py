"""Neighbour search: symscale's padded distance tensor vs vesin's cell list, by molecule size.

Molecule-like clouds (random points at 0.1 atoms/A^3, at least 0.9 A apart, roughly an organic molecule's
density with its hydrogens) of 20..350 atoms, batches of `--batch` structures of one size, cutoff 6 A,
30 neighbours. Prints and saves the median of `--repeats` timings per method and size, checks that both
return identical edges, and reports the smallest size at which vesin is faster. On a loaded machine the
timings are noisy: read the medians and the ratio, not the absolute numbers.

    python benchmarks/bench_neighbors.py --out neighbors.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import time

import numpy as np
import torch

from symscale.data.graph import radius_graph_padded, radius_graph_vesin

SIZES = (20, 40, 60, 80, 100, 150, 200, 250, 350)


def molecule(n_atoms: int, rng: np.random.Generator, density: float = 0.1, min_distance: float = 0.9) -> np.ndarray:
    """[n_atoms, 3] points in a ball of `n_atoms / density` A^3, no two closer than `min_distance` A."""
    radius = (3 * n_atoms / (4 * np.pi * density)) ** (1 / 3)
    points: list[np.ndarray] = []
    while len(points) < n_atoms:
        p = rng.uniform(-radius, radius, 3)
        if np.linalg.norm(p) <= radius and all(np.linalg.norm(p - q) >= min_distance for q in points):
            points.append(p)
    return np.array(points)


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8, help="structures per batch")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="JSON file for the results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    rows = []
    for n in SIZES:
        pos = torch.from_numpy(np.concatenate([molecule(n, rng) for _ in range(args.batch)]))
        batch = torch.repeat_interleave(torch.arange(args.batch), n)
        padded, vesin = radius_graph_padded(pos, batch, 6.0, 30), radius_graph_vesin(pos, batch, 6.0, 30)
        identical = bool(torch.equal(padded, vesin))
        t_pad = median_ms(lambda pos=pos, batch=batch: radius_graph_padded(pos, batch, 6.0, 30), args.repeats)
        t_ves = median_ms(lambda pos=pos, batch=batch: radius_graph_vesin(pos, batch, 6.0, 30), args.repeats)
        rows.append({"atoms": n, "padded_ms": t_pad, "vesin_ms": t_ves, "identical": identical})
        print(
            f"{n:4d} atoms x {args.batch}: padded {t_pad:8.2f} ms  vesin {t_ves:8.2f} ms  "
            f"ratio {t_pad / t_ves:5.2f}  identical edges {identical}",
            flush=True,
        )
    faster = [r["atoms"] for r in rows if r["vesin_ms"] < r["padded_ms"]]
    print(f"vesin faster from {min(faster) if faster else 'never'} atoms")
    if args.out:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
        meta = {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "machine": platform.machine(),
            "threads": args.threads,
            "batch": args.batch,
            "repeats": args.repeats,
            "git": sha,
        }
        with open(args.out, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
