"""Data-layer speed: reading (.aselmdb direct vs packed arrays), batching with neighbour lists, generation.

    python benchmarks/bench_data.py [--structures 2000] [--generate 40] [--workers 2] [--out PATH.json]

Also times batching from a packed dataset whose neighbour lists were stored at packing time (what training
does) against the fastest training step of the study (each family at its smallest `cpu` ladder width, on the
same batches), and reports the ratio; the data-layer issue asks for at least 10x.

Writes JSON with the numbers, the hardware, package versions and the git SHA. Speed is compared side by side
here and never asserted in tests. The load average is recorded: on a shared machine the numbers are pessimistic.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch

from symscale.data.generate import generate_dataset
from symscale.data.loader import BatchLoader
from symscale.data.packed import pack
from symscale.data.readers import open_dataset, write_structures
from symscale.data.toy import toy_structures


def timed(fn, repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def _steady_batches_per_s(loader) -> float:
    """Batches per second after the first one has arrived (worker start-up excluded)."""
    batches = iter(loader)
    next(batches)
    t = time.perf_counter()
    n = sum(1 for _ in batches)
    return n / (time.perf_counter() - t)


def bench_reading(path: Path) -> dict:
    ds = open_dataset(path)
    atoms = sum(len(ds[i]) for i in range(len(ds)))
    t_lmdb = timed(lambda: [ds[i] for i in range(len(ds))], 2)
    t_pack = timed(lambda: pack(ds))
    packed = pack(ds)
    t_packed = timed(lambda: [packed[i] for i in range(len(packed))], 2)
    loader = BatchLoader(packed, batch_size=64)
    t_batches = timed(lambda: list(loader), 2)
    lmdb_loader = BatchLoader(ds, batch_size=64)
    t_lmdb_batches = timed(lambda: list(lmdb_loader))
    t_lmdb_workers = timed(lambda: list(BatchLoader(ds, batch_size=64, workers=2)))  # spawn start included
    steady_workers = _steady_batches_per_s(BatchLoader(ds, batch_size=64, workers=2))
    return {
        "structures": len(ds),
        "atoms": atoms,
        "aselmdb_direct_atoms_per_s": atoms / t_lmdb,
        "aselmdb_direct_structures_per_s": len(ds) / t_lmdb,
        "packed_atoms_per_s": atoms / t_packed,
        "pack_seconds": t_pack,
        "batches_per_s_packed_bs64_with_neighbours": len(loader) / t_batches,
        "batches_per_s_aselmdb_bs64_with_neighbours": len(lmdb_loader) / t_lmdb_batches,
        "batches_per_s_aselmdb_bs64_with_neighbours_2_workers_incl_start": len(lmdb_loader) / t_lmdb_workers,
        "batches_per_s_aselmdb_bs64_with_neighbours_2_workers_steady": steady_workers,
        "atoms_per_s_packed_batches": atoms / t_batches,
    }


def bench_loader_vs_training(path: Path, threads: int) -> dict:
    """Batches of 64 with neighbour lists from a packed dataset (lists searched per batch, and stored at packing
    time as training does), against the fastest training step of the study: every family at the smallest
    width of its `cpu` ladder, timed on the same batches. The issue's target: loader >= 10x the fastest step."""
    from bench_models import symscale_step
    from symscale.models.ladders import load_ladder
    from symscale.models.registry import list_archs

    ds = open_dataset(path)
    t_pack_graph = timed(lambda: pack(ds, graph=(6.0, 30)))
    packed = pack(ds, graph=(6.0, 30))
    loader = BatchLoader(packed, batch_size=64)
    atoms = int(packed.n_atoms.sum())
    t_stored = timed(lambda: list(loader), 3)
    batches = list(loader)[:4]
    steps = {}
    torch.set_num_threads(threads)
    for arch in list_archs():
        width = load_ladder(arch, "cpu")[0]
        _, step = symscale_step(arch, width)
        step(batches[0])  # warm-up
        t = time.perf_counter()
        for b in batches:
            step(b)
        steps[f"{arch}@{width}"] = sum(b.num_atoms for b in batches) / (time.perf_counter() - t)
    torch.set_num_threads(1)
    fastest = max(steps, key=steps.get)
    loader_rate = atoms / t_stored
    return {
        "pack_with_graph_seconds": t_pack_graph,
        "batches_per_s_packed_bs64_stored_neighbours": len(loader) / t_stored,
        "atoms_per_s_packed_stored_neighbours": loader_rate,
        "training_threads": threads,
        "training_atoms_per_s_smallest_cpu_width": steps,
        "fastest_training_step": fastest,
        "loader_over_fastest_training_step": loader_rate / steps[fastest],
    }


def bench_generation(n: int, workers: int, folder: Path) -> dict:
    t = time.perf_counter()
    report = generate_dataset(folder / "gen.aselmdb", n, workers=workers, seed=0, progress=False)
    wall = time.perf_counter() - t
    return {
        "structures": n,
        "workers": workers,
        "wall_s_including_startup": wall,
        "structures_per_s": n / wall,
        "rejected": report.rejected,
        "mean_atoms": float(np.mean([len(s) for s in open_dataset(folder / "gen.aselmdb")])),
    }


def environment() -> dict:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        sha = None
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), None)
    return {
        "git_sha": sha,
        "cpu": cpu or platform.processor(),
        "cores": len(os.sched_getaffinity(0)),
        "load_average": os.getloadavg(),
        "python": platform.python_version(),
        "versions": {p: version(p) for p in ("numpy", "torch", "ase", "ase-db-backends", "rdkit", "tblite")},
        "torch_threads": torch.get_num_threads(),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--structures", type=int, default=2000, help="toy structures (20-30 atoms) to read")
    p.add_argument("--generate", type=int, default=40, help="structures to generate (0: skip)")
    p.add_argument("--workers", type=int, default=2, help="generation worker processes")
    p.add_argument("--threads", type=int, default=2, help="torch threads of the training steps compared against")
    p.add_argument("--out", default="benchmarks/results/data.json")
    args = p.parse_args()
    torch.set_num_threads(1)
    result = {"environment": environment()}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "toy.aselmdb"
        write_structures(path, toy_structures(args.structures, seed=0, min_atoms=20, max_atoms=30))
        result["reading"] = bench_reading(path)
        print(json.dumps(result["reading"], indent=1))
        result["loader_vs_training"] = bench_loader_vs_training(path, args.threads)
        print(json.dumps(result["loader_vs_training"], indent=1))
        if args.generate:
            result["generation"] = bench_generation(args.generate, args.workers, Path(tmp))
            print(json.dumps(result["generation"], indent=1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
