"""torch.compile (`runtime.compile: on`) against eager, per family at a quickstart width, on the quickstart's own
batches (built-in data, the family's batch size, one thread): the training step's time (forward, loss,
backward, optimiser step) eager and compiled, interleaved A/B over the same batches and repeated; the
validation forward likewise; the training graph's compile time from an empty inductor cache (what the first
run on a machine pays) and with the cache that run left (what every later run of a study pays, each a new
process), and the inference graph's (at the first evaluation); the share of a quickstart run (its own step
count) that the compile time costs, and the break-even step count.

Each family runs in its own process (a fresh dynamo state and, for the cold figure, an empty inductor cache).

    python benchmarks/bench_compile.py [--cache DIR] [--archs mpnn,egnn,gemnet_oc,esen] [--widths 16,16,4,4]
        [--steps 10] [--repeats 5] [--out benchmarks/results/compile.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import symscale
from _common import git_sha, quickstart_config  # benchmarks/ is the script's own folder
from symscale import rundir
from symscale.train import loop
from symscale.train.compilation import CompiledForward


def _timed(fn, items) -> float:
    t0 = time.perf_counter()
    for item in items:
        fn(item)
    return time.perf_counter() - t0


def _eval_forward(run, batches):
    with torch.inference_mode():
        for b in batches:
            run.forward(b)


def measure(arch: str, width: int, steps: int, repeats: int) -> dict:
    """One family in this process: compile times, then A/B step and validation-forward times."""
    config = quickstart_config(arch, width)
    run, _ = loop._setup(config, Path("."), None, progress=False)
    loader = loop._loader(run, 0, 0)
    batches = [loader.batch(b).to(run.device) for b in range(steps)]
    eager = run.model
    compiled = CompiledForward(run.model)
    t0 = time.perf_counter()
    compiled.warm_up(batches[0])
    cold_s = time.perf_counter() - t0
    torch._dynamo.reset()  # dynamo forgets its graphs; inductor's on-disk cache stays: a later run's compile
    compiled = CompiledForward(run.model)
    t0 = time.perf_counter()
    compiled.warm_up(batches[0])
    warm_s = time.perf_counter() - t0
    for fwd in (eager, compiled):  # one untimed pass each (the compiled one meets the batches' sizes)
        run.forward = fwd
        _timed(run.train_step, batches)
    step_ratio, eager_step, compiled_step = [], [], []
    for _ in range(repeats):
        run.forward = eager
        a = _timed(run.train_step, batches) / steps
        run.forward = compiled
        b = _timed(run.train_step, batches) / steps
        eager_step.append(a)
        compiled_step.append(b)
        step_ratio.append(a / b)
    val = run.val_batches
    eval_ratio = []
    run.model.eval()
    run.forward = eager
    eager_eval_s = _timed(lambda b: _eval_forward(run, [b]), val)
    run.forward = compiled  # the first compiled evaluation compiles the inference graph
    eval_compile_s = _timed(lambda b: _eval_forward(run, [b]), val) - eager_eval_s
    for _ in range(max(1, repeats // 2)):
        run.forward = eager
        a = _timed(lambda b: _eval_forward(run, [b]), val)
        run.forward = compiled
        eval_ratio.append(a / _timed(lambda b: _eval_forward(run, [b]), val))
    run.model.train()
    e, c = statistics.median(eager_step), statistics.median(compiled_step)
    quickstart_steps = run.total_steps
    return {
        "arch": arch, "width": width, "N": run.n_params, "batch_size": config.training.batch_size,
        "compiled": compiled.compiled, "fallback_reason": compiled.reason,
        "compile_cold_s": cold_s, "compile_warm_s": warm_s, "eval_compile_s": eval_compile_s,
        "eager_step_s": e, "compiled_step_s": c,
        "step_speedup": statistics.median(step_ratio), "step_speedup_range": [min(step_ratio), max(step_ratio)],
        "eval_speedup": statistics.median(eval_ratio),
        "quickstart_steps": quickstart_steps,
        "compile_share_of_run_cold": cold_s / (cold_s + quickstart_steps * c),
        "compile_share_of_run_warm": warm_s / (warm_s + quickstart_steps * c),
        "break_even_steps_warm": warm_s / (e - c) if e > c else None,
        # a quickstart run's training steps eager / (compile + the same steps compiled); > 1: compiling pays
        "run_time_ratio_warm": (quickstart_steps * e) / (warm_s + quickstart_steps * c),
        "recompiles": int(torch._dynamo.utils.counters["stats"]["unique_graphs"]),
    }  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache", default=None, help="SYMSCALE_CACHE (where the built-in set is cached)")
    p.add_argument("--archs", default="mpnn,egnn,gemnet_oc,esen")
    p.add_argument("--widths", default="16,16,4,4")
    p.add_argument("--steps", type=int, default=10, help="training batches per timed pass")
    p.add_argument("--repeats", type=int, default=5, help="interleaved A/B repetitions")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "compile.json"))
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)  # ARCH:WIDTH, in a child process
    args = p.parse_args()
    if args.cache:
        os.environ["SYMSCALE_CACHE"] = args.cache
    torch.set_num_threads(1)
    if args.one:
        arch, width = args.one.split(":")
        print(json.dumps(measure(arch, int(width), args.steps, args.repeats)))
        return
    rows, loads = [], [list(os.getloadavg())]
    for arch, width in zip(args.archs.split(","), [int(w) for w in args.widths.split(",")], strict=True):
        with tempfile.TemporaryDirectory() as inductor_cache:  # an empty inductor cache per family
            env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": inductor_cache, "OMP_NUM_THREADS": "1"}
            cmd = [sys.executable, __file__, "--one", f"{arch}:{width}", "--steps", str(args.steps),
                   "--repeats", str(args.repeats)] + (["--cache", args.cache] if args.cache else [])  # fmt: skip
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row)
        loads.append(list(os.getloadavg()))
        r = row
        print(
            f"{arch} w{width} N {r['N']}: step {1e3 * r['eager_step_s']:.1f} -> {1e3 * r['compiled_step_s']:.1f} ms "
            f"(x{r['step_speedup']:.2f}, {r['step_speedup_range'][0]:.2f}-{r['step_speedup_range'][1]:.2f}), "
            f"eval x{r['eval_speedup']:.2f}, compile {r['compile_cold_s']:.0f} s cold / {r['compile_warm_s']:.0f} s "
            f"warm (+{r['eval_compile_s']:.0f} s eval) = {100 * r['compile_share_of_run_warm']:.0f}% of a "
            f"{r['quickstart_steps']}-step run, run x{r['run_time_ratio_warm']:.2f}"
        )  # fmt: skip
    result = {
        "benchmark": "compile", "git_sha": git_sha(), "symscale_version": symscale.__version__,
        "torch_version": str(torch.__version__), "platform": platform.platform(), "cpu_count": os.cpu_count(),
        "load_average": loads[0], "load_average_per_family": loads[1:],
        "settings": {**vars(args), "cache": bool(args.cache), "out": Path(args.out).name}, "rows": rows,
    }  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    rundir.write_text(Path(args.out), json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
