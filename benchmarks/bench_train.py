"""Training throughput per family and width: atoms/s with compute accounting on and off, the one-off cost of
the FLOP measurement, peak memory, and data-loader atoms/s beside training atoms/s.

    python benchmarks/bench_train.py [--archs mpnn,egnn] [--widths 8,32] [--steps 20] [--device cpu]
                                     [--data PATH] [--run-steps 312] [--out benchmarks/results/train.json]

Accounting "on" = the per-step FLOP prediction and device clock of the loop; its one-off measurement (a few
batches through FlopCounterMode) is reported separately and as a fraction of a run of --run-steps steps
(default 312: 20,000 structures at batch 64). Peak memory: CUDA max allocated on GPU; on CPU the process's
maximum resident set size so far (monotonic over the configurations). Speed is measured, never asserted.

    python benchmarks/bench_train.py --phases [bench_run_phases.py options]

measures instead where a whole quickstart run's wall time goes (start-up, packing, FLOP measurement,
evaluations, checkpoints, steps) as shares, old source tree against new interleaved: `bench_run_phases.py`.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import time
from pathlib import Path

import torch

from _common import cpu_model, git_sha  # benchmarks/ is the script's own folder
from symscale import __version__
from symscale.config import RunConfig
from symscale.data.prefix import resolve_data
from symscale.data.toy import toy_structures
from symscale.train import loop
from symscale.train.compute import DeviceClock


def _steps(run, batches, accounting: bool) -> float:
    """Atoms per second of training steps over `batches` (accounting on: clock and FLOP prediction)."""
    clock = DeviceClock(run.device)
    saved = run.flop_model
    run.flop_model = saved if accounting else None
    atoms, t0 = 0, time.perf_counter()
    for b in batches:
        if accounting:
            with clock:
                run.train_step(b)
            loop._count(run, b, clock)
        else:
            run.train_step(b)
        atoms += b.num_atoms
    if run.device.type == "cuda":
        torch.cuda.synchronize()
    run.flop_model = saved
    return atoms / (time.perf_counter() - t0)


def _loader_rate(run, n_batches: int) -> float:
    loader = loop._loader(run, 0, 0)
    atoms, t0 = 0, time.perf_counter()
    for k, b in enumerate(loader):
        atoms += b.to(run.device).num_atoms
        if k + 1 >= n_batches:
            break
    return atoms / (time.perf_counter() - t0)


def bench_one(arch: str, width: int, args, dataset) -> dict:
    config = RunConfig.from_dict(
        {"arch": arch, "width": width, "data": "bench", "n_val": 16, "n_train": (args.steps + 2) * 64,
         "device": args.device, "progress": "off"}
    )  # fmt: skip
    data = resolve_data(config, dataset)
    from symscale.data.stats import compute_stats

    stats = compute_stats(data.dataset, data.train, max_samples=500)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    run = loop._Run(config, Path("."), data, stats, progress=False)
    loader = loop._loader(run, 0, 0)
    batches = [loader.batch(b).to(run.device) for b in range(args.steps + 2)]
    t0 = time.perf_counter()
    run.flop_model = run.measure_flops(batches[: config.runtime.flop_samples])
    measure_s = time.perf_counter() - t0
    _steps(run, batches[:2], True)  # warm-up
    on, off = [], []
    for _ in range(args.repeats):  # interleaved, to share any drift of a busy machine
        off.append(_steps(run, batches[2:], False))
        on.append(_steps(run, batches[2:], True))
    train_rate_on, train_rate_off = statistics.median(on), statistics.median(off)
    step_s = sum(b.num_atoms for b in batches[2:]) / train_rate_off / args.steps
    peak = (
        torch.cuda.max_memory_allocated() / 2**20
        if run.device.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    return {
        "arch": arch,
        "width": width,
        "N": run.n_params,
        "atoms_per_batch": sum(b.num_atoms for b in batches[2:]) / args.steps,
        "train_atoms_per_s_accounting_on": train_rate_on,
        "train_atoms_per_s_accounting_off": train_rate_off,
        "accounting_per_step_overhead": train_rate_off / train_rate_on - 1,
        "flop_measurement_s": measure_s,
        "flop_measurement_fraction_of_run": measure_s / (measure_s + args.run_steps * step_s),
        "loader_atoms_per_s": _loader_rate(run, args.steps),
        "peak_memory_mib": peak,
        "peak_memory_kind": "cuda_max_allocated" if run.device.type == "cuda" else "process_max_rss",
    }


def _phases() -> None:
    """`--phases`: hand the other arguments to bench_run_phases.py (the shares of a quickstart run)."""
    import runpy
    import sys

    sys.argv = [str(Path(__file__).with_name("bench_run_phases.py"))] + [a for a in sys.argv[1:] if a != "--phases"]
    runpy.run_path(sys.argv[0], run_name="__main__")


def main() -> None:
    import sys

    if "--phases" in sys.argv[1:]:
        _phases()
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--archs", default="mpnn,egnn,gemnet_oc,esen")
    p.add_argument("--widths", default="8,32")
    p.add_argument("--steps", type=int, default=12, help="timed steps per configuration")
    p.add_argument("--repeats", type=int, default=3, help="interleaved on/off repetitions (median reported)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data", default=None, help="dataset path (default: toy molecules)")
    p.add_argument("--run-steps", type=int, default=312, help="steps of the run the measurement is amortised over")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "train.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.data:
        from symscale.data.readers import open_dataset

        dataset = open_dataset(args.data)
    else:
        dataset = toy_structures(args.steps * 64 + 200, seed=0)
    rows = []
    for arch in args.archs.split(","):
        for width in [int(w) for w in args.widths.split(",")]:
            row = bench_one(arch, width, args, dataset)
            rows.append(row)
            print(
                f"{arch:<10} w={width:<4} N={row['N']:<9,} train {row['train_atoms_per_s_accounting_off']:>9.0f} "
                f"atoms/s (accounting on {row['train_atoms_per_s_accounting_on']:>9.0f}, per-step overhead "
                f"{100 * row['accounting_per_step_overhead']:+.1f}%, measurement {row['flop_measurement_s']:.1f}s = "
                f"{100 * row['flop_measurement_fraction_of_run']:.1f}% of a {args.run_steps}-step run) "
                f"loader {row['loader_atoms_per_s']:>9.0f} atoms/s, peak {row['peak_memory_mib']:.0f} MiB",
                flush=True,
            )
    result = {
        "benchmark": "train",
        "symscale_version": __version__,
        "git_sha": git_sha(),
        "torch_version": str(torch.__version__),
        "device": args.device,
        "cuda_device": torch.cuda.get_device_name() if args.device == "cuda" and torch.cuda.is_available() else None,
        "platform": platform.platform(),
        "processor": cpu_model() or platform.processor(),
        "threads": args.threads,
        "settings": {**vars(args), "out": Path(args.out).name},  # no absolute path of this machine
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
