"""Study executor benchmark: wall time of many small runs on K = 1 and K = 2 local workers, the speedup,
and the executor's overhead per run (worker start-up, imports, lock, status), on this machine.

    python benchmarks/bench_study.py [--runs 8] [--steps 12]

Writes benchmarks/results/study.json (hardware, versions, git SHA, load average, timings).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from symscale import rundir
from symscale.config import RunConfig
from symscale.data.readers import write_structures
from symscale.data.toy import toy_structures
from symscale.study.executors import RunFn, RunTask, execute_run, train_config
from symscale.study.local import LocalExecutor

RESULTS = Path(__file__).parent / "results" / "study.json"


def noop_run(config: RunConfig, run_dir: Path) -> None:
    """A run that does nothing but say it finished: what is left is the executor's own cost."""
    rundir.write_status(run_dir, "finished")


def small_tasks(root: Path, data: Path, n_runs: int, steps: int, run_fn: RunFn = train_config):
    n_train = 4 * steps  # batch 4
    tasks = []
    for i in range(n_runs):
        cfg = {
            "arch": "mpnn",
            "width": 8 + 2 * i,
            "seed": i,
            "data": str(data),
            "n_train": n_train,
            "n_val": 8,
            "batch_size": 4,
            "eval_points": 3,
            "eval_batch_size": 8,
            "equivariance_structures": 4,
            "warmup_steps": 2,
            "device": "cpu",
            "flop_samples": 1,
        }
        tasks.append(RunTask(f"run{i}", str(root / f"run{i}"), RunConfig.from_dict(cfg), run_fn, 1))
    return tasks


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def git_sha() -> str | None:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, cwd=Path(__file__).parent
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=8, help="small runs per measurement (default 8)")
    parser.add_argument("--steps", type=int, default=30, help="training steps per run (default 30)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = tmp / "toy.xyz"
        write_structures(data, toy_structures(4 * args.steps + 8, seed=0))
        mk = lambda name, fn=train_config: small_tasks(tmp / name, data, args.runs, args.steps, fn)
        execute_run(mk("warm")[0])  # imports and caches outside the measurement
        in_process = timed(lambda: [execute_run(t) for t in mk("seq")])
        k1 = timed(lambda: LocalExecutor(workers=1, threads=1).run(mk("k1")))
        k2 = timed(lambda: LocalExecutor(workers=2, threads=1).run(mk("k2")))
        noop = timed(lambda: LocalExecutor(workers=1, threads=1).run(mk("noop", noop_run)))
        noop1 = timed(lambda: LocalExecutor(workers=1, threads=1).run(mk("noop1", noop_run)[:1]))
    result = {
        "benchmark": "study executors",
        "runs": args.runs,
        "steps_per_run": args.steps,
        "in_process_s": in_process,
        "k1_wall_s": k1,
        "k2_wall_s": k2,
        "speedup_k2_over_k1": k1 / k2,
        "run_s_in_process": in_process / args.runs,
        "executor_overhead_per_run_s": (k1 - in_process) / args.runs,
        "noop_pool_s": noop,
        "worker_startup_s": noop1,  # spawn a worker, import, one no-op run, shut down
        "dispatch_per_run_s": (noop - noop1) / max(1, args.runs - 1),  # lock, status, pipe round trip
        "load_average_before": os.getloadavg(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "git_sha": git_sha(),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
