"""bf16 autocast against fp32 (`runtime.precision`), per family: (a) the training step's speed-up, (b) learning
curves side by side.

(a) speed: steps/s of bf16 over fp32, timed A/B interleaved in one process (`--repeats` rounds of `--steps`
    steps each; the median ratio and its range), at two workloads:
      quickstart  the quickstart's own batches (built-in data, its batch size: 16, the MPNN 4), one thread,
                  at the widths of (b);
      large       64 toy molecules per batch, two threads, each family's largest `cpu` ladder width.
    Both models start from the same initialisation and keep training on the same batches. Ratios of times
    measured side by side; they still move with the machine's load (the JSON records it).
(b) curves: one quickstart run per family at one width (`--curve-widths`; the quickstart's configuration, one
    thread), trained one after the other: fp32 seed 0, fp32 seed 1, bf16 seed 0. Reports each final validation
    loss (evaluated in float32 for every run, `symscale.train.precision`), the seed-to-seed spread
    |fp32(1) - fp32(0)| and whether |bf16(0) - fp32(0)| is within it; the validation curves are in the JSON.
    Losses do not depend on the load; the wall times beside them do.

    python benchmarks/bench_precision.py [--part speed|curves|all] [--archs mpnn,egnn,gemnet_oc,esen]
        [--curve-widths 16,16,2,4] [--large-widths 64,64,16,96] [--steps 10] [--repeats 5] [--prefix 1.0]
        [--cache DIR]
        [--out benchmarks/results/precision.json]

The JSON goes to --out only when the load average (1 minute) was below 0.3 at the start and at the end;
otherwise to the system's temporary folder (the figures are still printed).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

import symscale
from _common import cpu_model, git_sha, quickstart_config  # benchmarks/ is the script's own folder
from symscale import rundir
from symscale.config import RunConfig
from symscale.train import loop

IDLE_LOAD = 0.3


def cpu_flags() -> list[str]:
    """The CPU's bf16-relevant feature flags (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return sorted(f for f in flags if "bf16" in f or f.startswith("amx") or f == "avx512f")


# ---------------------------------------------------------------- (a) step speed


def _steps_s(run: loop._Run, batches: list) -> float:
    t0 = time.perf_counter()
    for b in batches:
        run.train_step(b)
    return time.perf_counter() - t0


def _with_precision(config: RunConfig, precision: str, **updates) -> RunConfig:
    return config.updated({"precision": precision, **updates})


def speed_ratio(config: RunConfig, dataset, steps: int, repeats: int) -> dict:
    """Interleaved fp32 / bf16 step times of `config` (both from the same initialisation, same batches)."""
    runs = {p: loop._setup(_with_precision(config, p), Path("."), dataset, progress=False)[0] for p in ("fp32", "bf16")}
    loader = loop._loader(runs["fp32"], 0, 0)
    batches = [loader.batch(i % len(loader)).to(runs["fp32"].device) for i in range(steps + 2)]
    for run in runs.values():  # warm-up: first-call costs (allocations, the receiver matrices' caches)
        _steps_s(run, batches[:2])
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for r in range(repeats):
        order = ("fp32", "bf16") if r % 2 == 0 else ("bf16", "fp32")  # ABBA: neither always runs first
        for p in order:
            times[p].append(_steps_s(runs[p], batches[2:]) / steps)
    ratios = [a / b for a, b in zip(times["fp32"], times["bf16"], strict=True)]
    return {
        "arch": config.arch, "width": config.width, "N": runs["fp32"].n_params,
        "batch_size": config.training.batch_size, "threads": torch.get_num_threads(),
        "atoms_per_step": sum(b.num_atoms for b in batches[2:]) / steps,
        "step_s_fp32": statistics.median(times["fp32"]), "step_s_bf16": statistics.median(times["bf16"]),
        "speedup_bf16": statistics.median(ratios), "speedup_range": [min(ratios), max(ratios)],
    }  # fmt: skip


def large_config(arch: str, width: int) -> RunConfig:
    """64 toy molecules per step, two threads (the issue's large-batch workload)."""
    return RunConfig.from_dict({
        "arch": arch, "width": width, "data": "toy", "n_val": 8, "batch_size": 64, "compute_accounting": False,
        "progress": "off", "equivariance_structures": 0, "threads": 2,
    })  # fmt: skip


def speed(archs: list[str], curve_widths: list[int], large_widths: list[int], steps: int, repeats: int) -> list:
    from symscale.data.toy import toy_structures

    rows = []
    torch.set_num_threads(1)
    for arch, width in zip(archs, curve_widths, strict=True):
        row = {"workload": "quickstart", **speed_ratio(quickstart_config(arch, width), None, steps, repeats)}
        rows.append(row)
        _print_speed(row)
    torch.set_num_threads(2)
    toy = toy_structures(64 * (steps + 2) + 8, seed=0)
    for arch, width in zip(archs, large_widths, strict=True):
        row = {"workload": "large", **speed_ratio(large_config(arch, width), toy, steps, repeats)}
        rows.append(row)
        _print_speed(row)
    torch.set_num_threads(1)
    return rows


def _print_speed(row: dict) -> None:
    lo, hi = row["speedup_range"]
    print(
        f"{row['workload']:10s} {row['arch']:9s} w{row['width']:<3d} N {row['N']:>7d} batch {row['batch_size']:>2d} "
        f"x{row['threads']} thr: fp32 {1e3 * row['step_s_fp32']:7.1f} ms, bf16 {1e3 * row['step_s_bf16']:7.1f} ms "
        f"-> bf16 speed-up {row['speedup_bf16']:.2f} [{lo:.2f}, {hi:.2f}]",
        flush=True,
    )


# ---------------------------------------------------------------- (b) learning curves


def curve(config: RunConfig, out: Path) -> dict:
    t0 = time.perf_counter()
    result = loop.train_run(config, out, progress=False)
    wall = time.perf_counter() - t0
    metrics = rundir.read_metrics(out)
    return {
        "status": result.status, "final_val_loss": result.final["val_loss"] if result.final else None,
        "wall_s": wall, "curve": [[m["step"], m["val_loss"]] for m in metrics],
    }  # fmt: skip


def curves(archs: list[str], widths: list[int], folder: Path, prefix: float) -> list:
    torch.set_num_threads(1)
    rows = []
    for arch, width in zip(archs, widths, strict=True):
        base = quickstart_config(arch, width).updated({"prefix": prefix})
        row: dict = {"arch": arch, "width": width, "batch_size": base.training.batch_size, "lr": base.training.lr,
                     "prefix": prefix}  # fmt: skip
        for name, precision, seed in (("fp32_seed0", "fp32", 0), ("fp32_seed1", "fp32", 1), ("bf16_seed0", "bf16", 0)):
            config = _with_precision(base, precision, seed=seed)
            row[name] = curve(config, folder / f"{arch}-w{width}-{name}")
            print(f"  {arch} w{width} {name}: final val loss {row[name]['final_val_loss']:.4f} "
                  f"({row[name]['wall_s']:.0f} s)", flush=True)  # fmt: skip
        f0, f1, b0 = (row[k]["final_val_loss"] for k in ("fp32_seed0", "fp32_seed1", "bf16_seed0"))
        row["seed_spread"] = abs(f1 - f0)
        row["bf16_minus_fp32"] = b0 - f0
        row["bf16_within_seed_spread"] = abs(b0 - f0) <= abs(f1 - f0)
        print(f"{arch} w{width}: fp32 {f0:.4f} / seed 1 {f1:.4f} / bf16 {b0:.4f}: |bf16 - fp32| {abs(b0 - f0):.4f} "
              f"{'within' if row['bf16_within_seed_spread'] else 'outside'} the seed spread {abs(f1 - f0):.4f}",
              flush=True)  # fmt: skip
        rows.append(row)
    return rows


# ---------------------------------------------------------------- main


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=["speed", "curves", "all"], default="all")
    p.add_argument("--archs", default="mpnn,egnn,gemnet_oc,esen")
    p.add_argument("--curve-widths", default="16,16,2,4", help="one width per family: curves and quickstart speed")
    p.add_argument("--large-widths", default="64,64,16,96", help="the largest cpu ladder widths (large batch)")
    p.add_argument("--steps", type=int, default=10, help="steps per timed round")
    p.add_argument("--repeats", type=int, default=5, help="interleaved rounds per precision")
    p.add_argument("--prefix", type=float, default=1.0, help="curves: share of the quickstart's data (1: all)")
    p.add_argument("--cache", default=None, help="SYMSCALE_CACHE (where the built-in set is cached)")
    p.add_argument("--runs-dir", default=None, help="where the curve runs go (default: a temporary folder)")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "precision.json"))
    args = p.parse_args()
    if args.cache:
        os.environ["SYMSCALE_CACHE"] = args.cache
    archs = args.archs.split(",")
    curve_widths = [int(w) for w in args.curve_widths.split(",")]
    large_widths = [int(w) for w in args.large_widths.split(",")]
    load_start = os.getloadavg()
    result: dict = {
        "benchmark": "precision", "git_sha": git_sha(), "symscale_version": symscale.__version__,
        "torch_version": str(torch.__version__), "platform": platform.platform(),
        "processor": cpu_model() or platform.processor(),
        "cpu_count": os.cpu_count(), "cpu_flags": cpu_flags(), "load_average_start": list(load_start),
        "settings": {**vars(args), "cache": bool(args.cache), "out": Path(args.out).name, "runs_dir": None},
    }  # fmt: skip
    if args.part in ("speed", "all"):
        result["speed"] = speed(archs, curve_widths, large_widths, args.steps, args.repeats)
    if args.part in ("curves", "all"):
        with tempfile.TemporaryDirectory() as tmp:
            result["curves"] = curves(archs, curve_widths, Path(args.runs_dir or tmp), args.prefix)
    load_end = os.getloadavg()
    result["load_average_end"] = list(load_end)
    idle = max(load_start[0], load_end[0]) < IDLE_LOAD
    out = Path(args.out) if idle else Path(tempfile.gettempdir()) / Path(args.out).name
    out.parent.mkdir(parents=True, exist_ok=True)
    rundir.write_json(out, result)
    print(f"load {load_start[0]:.2f} -> {load_end[0]:.2f}: wrote {out}" + ("" if idle else " (not idle: not a result)"))


if __name__ == "__main__":
    main()
