"""Where a training step's time goes, per family at its quickstart width: torch.profiler self-CPU shares of
the top operators and the operator calls per step, on the quickstart's own batches (built-in data, batch 16,
one thread). Shares and counts, not speeds: they hold on a loaded machine. Beside them, the step speed-up of
the CSR segment sum (`models.layers.scatter_sum`) over scatter_add_, timed A/B interleaved in one process.

    python benchmarks/bench_step_profile.py [--cache DIR] [--archs mpnn,egnn,gemnet_oc,esen] [--widths 24,24,4,4]
        [--steps 20] [--top 15] [--out benchmarks/results/step_profile.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

import symscale
from _common import git_sha, quickstart_config  # benchmarks/ is the script's own folder
from symscale.train import loop


def quickstart_run(arch: str, width: int) -> tuple[loop._Run, list]:
    """A `_Run` of the quickstart's configuration of `arch` at `width`, and its first training batches."""
    config = quickstart_config(arch, width)
    run, _ = loop._setup(config, Path("."), None, progress=False)
    loader = loop._loader(run, 0, 0)
    return run, loader


def _steps_s(run, batches) -> float:
    t0 = time.perf_counter()
    for b in batches:
        run.train_step(b)
    return time.perf_counter() - t0


def csr_ratio(run, batches, repeats: int) -> float:
    """Median over `repeats` of (steps with scatter_add_ everywhere) / (steps with the CSR segment sum),
    interleaved in this process (the same model keeps training: both see the same kind of step)."""
    from symscale.models import layers

    fast = layers._receiver_matrix
    ratios = []
    for _ in range(repeats):
        t_fast = _steps_s(run, batches)
        layers._receiver_matrix = lambda *a: None
        try:
            t_slow = _steps_s(run, batches)
        finally:
            layers._receiver_matrix = fast
        ratios.append(t_slow / t_fast)
    return statistics.median(ratios)


def profile_one(arch: str, width: int, steps: int, top: int, repeats: int) -> dict:
    run, loader = quickstart_run(arch, width)
    batches = [loader.batch(b).to(run.device) for b in range(steps + 3)]
    for b in batches[:3]:
        run.train_step(b)
    ratio = csr_ratio(run, batches[3:], repeats) if repeats else None
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for b in batches[3:]:
            run.train_step(b)
    events = [e for e in prof.key_averages() if not e.key.startswith("ProfilerStep")]
    aten = [e for e in events if e.key.startswith("aten::")]
    total = sum(e.self_cpu_time_total for e in events)
    rows = sorted(events, key=lambda e: -e.self_cpu_time_total)[:top]
    return {
        "arch": arch,
        "width": width,
        "N": run.n_params,
        "atoms_per_step": sum(b.num_atoms for b in batches[3:]) / steps,
        "edges_per_step": sum(b.num_edges for b in batches[3:]) / steps,
        "aten_calls_per_step": sum(e.count for e in aten) / steps,
        "step_speedup_csr_scatter": ratio,
        "top_self_cpu": [
            {"op": e.key, "share": e.self_cpu_time_total / total, "calls_per_step": e.count / steps} for e in rows
        ],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache", default=None, help="SYMSCALE_CACHE (where the built-in set is cached)")
    p.add_argument("--archs", default="mpnn,egnn,gemnet_oc,esen")
    p.add_argument("--widths", default="24,24,4,4")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--repeats", type=int, default=3, help="interleaved A/B repetitions (0: no A/B)")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "step_profile.json"))
    args = p.parse_args()
    if args.cache:
        os.environ["SYMSCALE_CACHE"] = args.cache
    torch.set_num_threads(1)
    rows = []
    for arch, width in zip(args.archs.split(","), [int(w) for w in args.widths.split(",")], strict=True):
        row = profile_one(arch, width, args.steps, args.top, args.repeats)
        rows.append(row)
        print(f"{arch} w{width} N {row['N']}: {row['aten_calls_per_step']:.0f} aten calls/step, "
              f"{row['atoms_per_step']:.0f} atoms, {row['edges_per_step']:.0f} edges, "
              f"step speed-up of the CSR scatter {row['step_speedup_csr_scatter']}")  # fmt: skip
        for r in row["top_self_cpu"]:
            print(f"   {100 * r['share']:5.1f}%  {r['calls_per_step']:7.1f}/step  {r['op']}")
    result = {
        "benchmark": "step_profile", "git_sha": git_sha(), "symscale_version": symscale.__version__,
        "torch_version": str(torch.__version__), "platform": platform.platform(), "cpu_count": os.cpu_count(),
        "load_average": list(os.getloadavg()), "settings": {**vars(args), "cache": bool(args.cache),
        "out": Path(args.out).name}, "rows": rows,
    }  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
