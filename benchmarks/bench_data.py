"""Data-layer speed: OMol25's scale (index, filters, splits, statistics, streaming), reading, batching, generation.

    python benchmarks/bench_data.py [--rows 1000000] [--sections scale,reading,loader,generation] [--out PATH.json]
    python benchmarks/bench_data.py --rows 50000 --sections scale      # a quick check of the scale section

The scale section writes a synthetic `.aselmdb` of `--rows` rows in OMol25's schema (random molecules of about
27 atoms on a jittered grid, H C N O and a few heavier elements, charged and open-shell rows mixed in, 5
conformers per molecule recorded in data["mol"], random labels: no xTB), reads it once (so that every pass after
reads warm pages), then times, in order: the neutral open of the last commit before the index (`--old-commit`, run
from a git worktree in a fresh process, every row: the filter pass the index replaces, its baseline); the old
filter's loop on today's reader, which is faster (on a 20k-row sample, A B A B with the index pass on the same rows
in this process); the first open (the one-time index, parallel); a cached open (in
a fresh process, with its peak memory), the neutral filter from the index, the whole-molecule split, the
statistics, the first batch, and loader throughput with 0, 1, 2 and 4 workers (start-up separately). Memory per
row of a cached open is extrapolated to OMol25's 34M neutral training rows and its 1e8 rows in all. `--dry-run`
also times `symscale study paper --data FILE --val-data FILE2 --dry-run` once the index exists.

Also times batching from a packed dataset whose neighbour lists were stored at packing time (what training
does) against the fastest training step of the study (each family at its smallest `cpu` ladder width, on the
same batches), and reports the ratio; the data-layer issue asks for at least 10x.

Writes JSON with the numbers, the hardware, package versions and the git SHA. Speed is compared side by side
here and never asserted in tests. The load average is recorded: on a shared machine the numbers are pessimistic.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import zlib
from importlib.metadata import version
from pathlib import Path

import numpy as np

from _common import cpu_model, git_sha  # benchmarks/ is the script's own folder
from symscale.data.readers import AselmdbWriter, encode_row, open_dataset, write_structures

# torch, the loader and the generator are imported where they are used: the index pass's spawned processes
# re-import this script, and should not pay for torch


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
    from symscale.data.loader import BatchLoader
    from symscale.data.packed import pack

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
    import torch

    from bench_models import symscale_step
    from symscale.data.loader import BatchLoader
    from symscale.data.packed import pack
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
    from symscale.data.generate import generate_dataset

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


# ---------------------------------------------------------------------------------------------- scale

# element frequencies loosely like OMol25's organic majority (H, C, N, O), with a tail of heavier elements
_ELEMENTS = np.array([1, 6, 7, 8, 9, 15, 16, 17, 35, 26, 29, 53])
_WEIGHTS = np.array([0.48, 0.30, 0.06, 0.08, 0.015, 0.01, 0.02, 0.015, 0.006, 0.004, 0.004, 0.006])
_CHARGE_SPIN = [(0, 1), (0, 1), (0, 1), (1, 2), (-1, 2), (1, 1), (-1, 1), (0, 3)]  # 3/8 neutral singlets
_GRID = np.stack(np.meshgrid(*[np.arange(6)] * 3, indexing="ij"), -1).reshape(-1, 3) * 1.4  # Angstrom


def synthetic_omol25(path: Path, rows: int, seed: int = 0, chunk: int = 10_000) -> dict:
    """Write `rows` random molecules in OMol25's .aselmdb schema; returns the time and size."""
    rng = np.random.default_rng(seed)
    t = time.perf_counter()
    with AselmdbWriter(path) as writer:
        for a in range(0, rows, chunk):
            m = min(chunk, rows - a)
            sizes = np.clip(np.rint(rng.gamma(6.0, 27 / 6.0, m)), 3, len(_GRID)).astype(int)  # mean about 27 atoms
            sites = np.argsort(rng.random((m, len(_GRID))), axis=1)  # [m, grid] a random order of grid sites
            encoded = []
            for k in range(m):
                n = int(sizes[k])
                z = rng.choice(_ELEMENTS, size=n, p=_WEIGHTS)
                pos = _GRID[sites[k, :n]] + rng.normal(0, 0.1, (n, 3))  # nearest atoms about 1 Angstrom apart
                charge, spin = _CHARGE_SPIN[(a + k) % len(_CHARGE_SPIN)]
                data = {"charge": charge, "spin": spin, "mol": (a + k) // 5, "source": "synthetic-omol25"}
                encoded.append(encode_row(z, pos, float(-20.0 * n + rng.normal()), rng.normal(0, 1.0, (n, 3)), data))
            writer.write_encoded(encoded)
    seconds = time.perf_counter() - t
    return {"rows": rows, "write_s": seconds, "bytes": path.stat().st_size, "bytes_per_row": path.stat().st_size / rows}


def _old_filter_rows_per_s(path: Path, sample: int, inflate=zlib.decompress) -> float:
    """The neutral filter as it was before the index: each row's metadata read through the reader and checked,
    one by one, the rows inflated by zlib as the reader did then (`inflate` swaps in another)."""
    from symscale.data import readers

    ds = open_dataset(path)
    n = min(sample, len(ds))
    now, readers.inflate = readers.inflate, inflate
    try:
        t = time.perf_counter()
        keep = []
        for g in range(n):
            src, i = ds._locate_raw(g)
            meta = src.metadata(i)
            if (int(meta.get("charge", 0) or 0), int(meta.get("spin", 1) or 1)) == (0, 1):
                keep.append(g)
        np.asarray(keep, dtype=np.int64)
        return n / (time.perf_counter() - t)
    finally:
        readers.inflate = now


OLD_COMMIT = "8dfff07"  # the last commit before the dataset index: the neutral filter ran at every open

_OLD_OPEN = """
import json, sys, time
from symscale.data.readers import open_dataset
t = time.perf_counter()  # after the imports, as for the index's first open
ds = open_dataset(sys.argv[1], neutral_only=True)  # that commit's filter: every row read and checked, in order
print(json.dumps({"seconds": time.perf_counter() - t, "structures": len(ds)}))
"""


def _old_commit_open(path: Path, commit: str, folder: Path) -> dict:
    """The neutral open of `path` by the code of `commit` itself (a git worktree, run in a fresh process): the
    filter pass the issue measured, over every row, as the baseline of the index. {"error": ...} without git."""
    root = Path(__file__).resolve().parent.parent
    tree = folder / f"tree-{commit}"
    try:
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(tree), commit], cwd=root, check=True,
                       capture_output=True, text=True)  # fmt: skip
    except (OSError, subprocess.CalledProcessError) as err:
        return {"commit": commit, "error": f"no worktree of {commit}: {getattr(err, 'stderr', err)}".strip()}
    try:
        env = dict(os.environ, PYTHONPATH=str(tree / "src"))
        done = subprocess.run([sys.executable, "-c", _OLD_OPEN, str(path)], env=env, capture_output=True, text=True)
        if done.returncode:
            return {"commit": commit, "error": done.stderr[-2000:]}
        out = json.loads(done.stdout.strip().splitlines()[-1])
        sha = subprocess.run(["git", "rev-parse", commit], cwd=root, capture_output=True, text=True).stdout.strip()
        return {"commit": sha or commit, "this_checkout": git_sha(), **out}
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=root, check=False, capture_output=True)


def _warm(path: Path) -> float:
    """Read the whole file once (into the page cache) so that every pass timed after it reads warm pages."""
    t = time.perf_counter()
    with open(path, "rb") as f:
        while f.read(1 << 24):
            pass
    return time.perf_counter() - t


def _inflate_us_per_row(path: Path, sample: int) -> dict:
    """Microseconds to inflate one row, zlib against the reader's `inflate` (ISA-L where installed)."""
    from symscale.data.index import inflate
    from symscale.data.readers import _LmdbSource

    raws = _LmdbSource(path).raw_rows(0, sample)
    out = {}
    for name, fn in (("zlib", zlib.decompress), ("inflate", inflate)) * 2:  # A B A B: the better of two
        t = time.perf_counter()
        for raw in raws:
            fn(raw)
        out[name] = min(out.get(name, math.inf), (time.perf_counter() - t) / len(raws) * 1e6)
    from symscale.data import index

    out["zlib_over_inflate"] = out["zlib"] / out["inflate"]
    return {**out, "inflate_is": "isal" if hasattr(index, "_isal") else "zlib"}


def _serial_index_rows_per_s(path: Path, sample: int) -> float:
    """The index pass over the first `sample` rows in this process (no parallel workers, no cache write)."""
    from symscale.data.index import _index_rows
    from symscale.data.readers import _open_source

    source = _open_source(path, "energy", "forces")
    _index_rows(source, 0, min(200, len(source)))  # imports (scipy, pandas) outside the clock
    n = min(sample, len(source))
    t = time.perf_counter()
    _index_rows(source, 0, n)
    return n / (time.perf_counter() - t)


_CACHED_OPEN = """
import json, sys, time
from symscale.data.readers import open_dataset

def rss():  # resident memory now (bytes), memory-mapped index pages that were touched included
    return int(next(ln for ln in open("/proc/self/status") if ln.startswith("VmRSS")).split()[1]) * 1024

import symscale.data.index  # imported before the baseline
rss0 = rss()
t = time.perf_counter()
ds = open_dataset(sys.argv[1], neutral_only=True)
seconds = time.perf_counter() - t
print(json.dumps({"seconds": seconds, "rss_increase_bytes": rss() - rss0, "structures": len(ds)}))
"""


def bench_scale(
    rows: int, folder: Path, batches: int, worker_counts: list[int], dry_run: bool, old_commit: str = OLD_COMMIT
) -> dict:
    from symscale.data.index import FIELDS, index_folder
    from symscale.data.index import inflate as inflate_now
    from symscale.data.loader import BatchLoader
    from symscale.data.splits import validation_split
    from symscale.data.stats import compute_stats

    os.environ["SYMSCALE_INDEX_CACHE"] = str(folder / "index-cache")  # a cold cache: the first open builds
    path = folder / "synthetic-omol25.aselmdb"
    out: dict = {"file": synthetic_omol25(path, rows)}
    print(json.dumps(out["file"]), flush=True)
    out["warm_read_s"] = _warm(path)
    old = _old_commit_open(path, old_commit, folder)  # the baseline: the old code itself, every row
    out["old_filter"] = old
    out["old_filter_rows_per_s"] = rows / old["seconds"] if "seconds" in old else None
    print(json.dumps({"old_filter": old}), flush=True)
    # the old filter's loop on today's reader (env key resolved once per source): a faster baseline, on a sample,
    # A B A B with the serial index pass on the same rows
    loop, serial = [], []
    for _ in range(2):
        loop.append(_old_filter_rows_per_s(path, 20_000))
        serial.append(_serial_index_rows_per_s(path, 20_000))
    out["old_filter_loop_todays_reader_rows_per_s"] = float(np.mean(loop))
    out["old_filter_loop_todays_reader_todays_inflate_rows_per_s"] = _old_filter_rows_per_s(path, 20_000, inflate_now)
    out["inflate_us_per_row"] = _inflate_us_per_row(path, 20_000)
    out["serial_index_rows_per_s"] = float(np.mean(serial))
    out["serial_index_over_old_filter_loop_todays_reader"] = out["serial_index_rows_per_s"] / float(np.mean(loop))
    t = time.perf_counter()
    ds = open_dataset(path, neutral_only=True)
    out["first_open_s"] = time.perf_counter() - t  # builds the index
    out["index_rows_per_s"] = rows / out["first_open_s"]
    if out["old_filter_rows_per_s"]:
        out["index_over_old_filter"] = out["index_rows_per_s"] / out["old_filter_rows_per_s"]
    out["index_over_old_filter_loop_todays_reader"] = out["index_rows_per_s"] / float(np.mean(loop))
    entry = next(index_folder().glob("*/meta.json")).parent
    out["index_disk_bytes_per_row"] = sum((entry / f"{f}.npy").stat().st_size for f in FIELDS) / rows
    cached = subprocess.run([sys.executable, "-c", _CACHED_OPEN, str(path)], capture_output=True, text=True, check=True)
    out["cached_open_fresh_process"] = json.loads(cached.stdout)
    t = time.perf_counter()
    ds = open_dataset(path, neutral_only=True)
    out["cached_open_s"] = time.perf_counter() - t
    out["neutral_structures"] = len(ds)
    out["neutral_filter_from_index_s"] = timed(lambda: ds.index.selection(neutral_only=True, skip_invalid=True))
    n_val = min(27_000, len(ds) // 20)
    t = time.perf_counter()
    split = validation_split(ds, n_val, seed=0)
    out["split_s"] = time.perf_counter() - t
    out["split"] = {"how": split.how, "n_val": len(split.splits.val), "n_pool": len(split.splits.pool)}
    t = time.perf_counter()
    stats = compute_stats(ds, split.splits.pool, max_samples=5000)
    out["statistics_s"] = time.perf_counter() - t
    out["statistics"] = {"n_sampled": stats.n_sampled, "elements": list(stats.elements)}
    out["per_run_filter_split_statistics_s"] = out["cached_open_s"] + out["split_s"] + out["statistics_s"]
    out["statistics_note"] = "statistics read a fixed sample (5000 structures) plus the index: not extrapolated"
    order = split.splits.pool
    t = time.perf_counter()
    first = BatchLoader(ds, order, batch_size=64).batch(0)
    out["first_batch_s"] = time.perf_counter() - t
    out["loader"] = {}
    take = order[: batches * 64]
    for w in [0, *worker_counts]:
        warm = max(1, 4 * w)  # every worker has delivered (its start-up is over) before the clock starts
        t = time.perf_counter()
        it = iter(BatchLoader(ds, take, batch_size=64, workers=w, prefetch=4))
        next(it)
        start = time.perf_counter() - t
        for _ in range(warm - 1):
            next(it)
        t = time.perf_counter()
        counted = [b.num_atoms for b in it]
        steady = time.perf_counter() - t
        out["loader"][f"{w}_workers"] = {
            "first_batch_incl_start_s": start, "atoms_per_s": sum(counted) / steady,
            "batches_per_s": len(counted) / steady, "batches_timed": len(counted),
        }  # fmt: skip
        print(w, "workers", json.dumps(out["loader"][f"{w}_workers"]), flush=True)
    out["atoms_per_batch"] = first.num_atoms
    per_row = out["cached_open_fresh_process"]["rss_increase_bytes"] / rows
    out["memory_per_row_bytes"] = per_row
    out["extrapolated_cached_open_peak_memory_GB"] = {"34M_rows": per_row * 34e6 / 1e9, "1e8_rows": per_row * 1e8 / 1e9}
    out["extrapolated_index_disk_GB"] = {
        "34M_rows": out["index_disk_bytes_per_row"] * 34e6 / 1e9,
        "1e8_rows": out["index_disk_bytes_per_row"] * 1e8 / 1e9,
    }
    scale = {"34M_rows": 34e6 / rows, "1e8_rows": 1e8 / rows}
    out["extrapolated_one_time_index_s_this_machine"] = {k: out["first_open_s"] * v for k, v in scale.items()}
    old_rate = out["old_filter_rows_per_s"] or out["old_filter_loop_todays_reader_rows_per_s"]
    out["extrapolated_old_filter_s_this_machine"] = {k: rows * v / old_rate for k, v in scale.items()}
    out["extrapolated_per_run_s_this_machine"] = {
        k: (out["cached_open_s"] + out["split_s"]) * v + out["statistics_s"] for k, v in scale.items()
    }  # the open and the split grow with the rows; the statistics' sample does not
    if dry_run:
        val = folder / "synthetic-omol25-val.aselmdb"
        synthetic_omol25(val, max(1000, rows // 100), seed=1)
        open_dataset(val, neutral_only=True)  # its index, built once like the training file's
        cmd = [sys.executable, "-m", "symscale", "study", "paper", "--data", str(path), "--val-data", str(val),
               "--dry-run"]  # fmt: skip
        t = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True)
        out["paper_dry_run_s"] = time.perf_counter() - t
        out["paper_dry_run_rc"] = done.returncode
        if done.returncode:
            out["paper_dry_run_error"] = done.stderr[-2000:]
    return out


def environment() -> dict:
    import torch

    return {
        "git_sha": git_sha(),
        "cpu": cpu_model() or platform.processor(),
        "cores": len(os.sched_getaffinity(0)),
        "load_average": os.getloadavg(),
        "python": platform.python_version(),
        "versions": {
            p: version(p) for p in ("numpy", "torch", "ase", "ase-db-backends", "rdkit", "tblite", "orjson", "isal")
        },
        "torch_threads": torch.get_num_threads(),
    }


def main() -> None:
    import torch

    from symscale.data.toy import toy_structures

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sections", default="scale,reading,loader,generation", help="comma-separated sections to run")
    p.add_argument("--rows", type=int, default=1_000_000, help="rows of the synthetic OMol25-schema file (scale)")
    p.add_argument("--batches", type=int, default=200, help="batches of 64 timed per loader setting (scale)")
    p.add_argument("--loader-workers", default="1,2,4", help="worker counts whose throughput is timed (scale)")
    p.add_argument("--dry-run", action="store_true", help="also time `symscale study paper ... --dry-run` (scale)")
    p.add_argument("--old-commit", default=OLD_COMMIT,
                   help=f"commit whose neutral open is the index's baseline (scale; default {OLD_COMMIT}, the last "
                   "before the index)")  # fmt: skip
    p.add_argument("--structures", type=int, default=2000, help="toy structures (20-30 atoms) to read")
    p.add_argument("--generate", type=int, default=40, help="structures to generate (0: skip)")
    p.add_argument("--workers", type=int, default=2, help="generation worker processes")
    p.add_argument("--threads", type=int, default=2, help="torch threads of the training steps compared against")
    p.add_argument("--tmp", default=None, help="folder for the synthetic files (default: a temporary folder)")
    p.add_argument("--out", default="benchmarks/results/data.json")
    args = p.parse_args()
    sections = set(args.sections.split(","))
    torch.set_num_threads(1)
    result = {"environment": environment(), "args": vars(args)}
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        if "scale" in sections:
            workers = [int(w) for w in args.loader_workers.split(",") if w]
            result["scale"] = bench_scale(args.rows, Path(tmp), args.batches, workers, args.dry_run, args.old_commit)
            print(json.dumps(result["scale"], indent=1), flush=True)
        path = Path(tmp) / "toy.aselmdb"
        if sections & {"reading", "loader"}:
            write_structures(path, toy_structures(args.structures, seed=0, min_atoms=20, max_atoms=30))
        if "reading" in sections:
            result["reading"] = bench_reading(path)
            print(json.dumps(result["reading"], indent=1))
        if "loader" in sections:
            result["loader_vs_training"] = bench_loader_vs_training(path, args.threads)
            print(json.dumps(result["loader_vs_training"], indent=1))
        if "generation" in sections and args.generate:
            result["generation"] = bench_generation(args.generate, args.workers, Path(tmp))
            print(json.dumps(result["generation"], indent=1))
    result["environment"]["load_average_at_end"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
