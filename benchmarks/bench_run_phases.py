"""Where a quickstart run's wall time goes: start-up, packing and loading, FLOP measurement, evaluations,
checkpoints and the training steps, as shares of one run, measured in a fresh process per run.

    python benchmarks/bench_run_phases.py [--cache DIR] [--archs mpnn,egnn,gemnet_oc,esen] [--widths 24,24,4,4]
        [--before-src DIR] [--repeats 1] [--out benchmarks/results/run_phases.json]

Each run is the quickstart's (`configs/studies/quickstart.yaml` expanded by the study spec: built-in data,
batch 16, its evaluation settings) at one width per family, with one torch thread, `train_run` called as a study
worker calls it, in a child process (so imports count). Phases are timed by wrapping the loop's functions in the
child: `imports` (symscale, torch and the torch._dynamo that torch.optim imports at its first step),
`data` (open, split, pack with neighbour lists), `stats`, `setup`
(model build, optimizer), `val_pack` (the validation batches), `flops` (the FlopCounterMode measurement),
`eval` (every evaluation, equivariance checks included), `checkpoint`, `step` (forward, backward, optimizer),
`load` (collating training batches in the loop) and `other` (the rest: run directory, metrics, logs).
`--before-src DIR` runs the same runs on another source tree (e.g. `git archive OLD src | tar -x -C DIR`)
interleaved with this one (before, after, before, after ...) so that both see the same machine load.
Timings on a loaded machine are not speeds; the shares and the before/after ratios are what this reports.
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

_T0 = time.perf_counter()

from _common import cpu_model, git_sha, quickstart_config  # noqa: E402  (benchmarks/ is the script's own folder; no symscale import)

PHASES = ("imports", "data", "stats", "setup", "val_pack", "flops", "eval", "checkpoint", "step", "load", "other")


def _wrap(owner, name: str, key: str, acc: dict) -> None:
    """Replace owner.name by a wrapper that adds its wall time to acc[key] (nested calls of the same key once)."""
    inner = getattr(owner, name, None)
    if inner is None:
        return
    depth = {"n": 0}

    def timed(*args, **kwargs):
        if depth["n"]:
            return inner(*args, **kwargs)
        depth["n"] += 1
        t0 = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            acc[key] += time.perf_counter() - t0
            depth["n"] -= 1

    setattr(owner, name, timed)


def child(arch: str, width: int, out_json: str) -> None:
    """One quickstart run in this process; writes the phase seconds to `out_json`."""
    import torch
    import torch._dynamo  # noqa: F401  (torch.optim imports it at its first step: a per-process cost, not the run's)

    torch.set_num_threads(1)
    from symscale.train import loop

    acc = dict.fromkeys(PHASES, 0.0)
    acc["imports"] = time.perf_counter() - _T0
    config = quickstart_config(arch, width)
    for owner, name, key in [
        (loop, "resolve_data", "data"), (loop, "compute_stats", "stats"), (loop, "_batches", "val_pack"),
        (loop._Run, "__init__", "setup"), (loop._Run, "measure_flops", "flops"), (loop._Run, "evaluate", "eval"),
        (loop._Run, "save", "checkpoint"), (loop._Run, "train_step", "step"),
    ]:  # fmt: skip
        _wrap(owner, name, key, acc)
    inner_train, inside = loop._train, {"loop": 0.0, "checkpoint": 0.0}

    def timed_train(*args, **kwargs):  # the loop: steps, loading, evaluations, in-run checkpoints
        t0, c0 = time.perf_counter(), acc["checkpoint"]
        try:
            return inner_train(*args, **kwargs)
        finally:
            inside["loop"] += time.perf_counter() - t0
            inside["checkpoint"] += acc["checkpoint"] - c0

    loop._train = timed_train
    with tempfile.TemporaryDirectory() as tmp:
        t_run = time.perf_counter()
        result = loop.train_run(config, Path(tmp) / "run", progress=False)
        run_s = time.perf_counter() - t_run
    acc["setup"] -= acc["val_pack"]  # _batches runs inside _Run.__init__
    acc["load"] = max(0.0, inside["loop"] - acc["step"] - acc["eval"] - inside["checkpoint"])
    wall = acc["imports"] + run_s
    acc["other"] = max(0.0, wall - sum(acc[k] for k in PHASES if k != "other"))
    Path(out_json).write_text(
        json.dumps({"arch": arch, "width": width, "N": result.num_parameters, "steps": result.steps,
                    "status": result.status, "wall_s": wall, "seconds": acc})
    )  # fmt: skip


def _run_child(src: str | None, arch: str, width: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    if src:
        env["PYTHONPATH"] = str(Path(src).resolve())
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
        out = fh.name
    cmd = [sys.executable, __file__, "--child", arch, str(width), out]
    subprocess.run(cmd, env=env, check=True)
    row = json.loads(Path(out).read_text())
    Path(out).unlink()
    return row


def _shares(row: dict) -> dict:
    wall = row["wall_s"]
    s = {k: v / wall for k, v in row["seconds"].items()}
    s["outside_step"] = 1.0 - s["step"]
    # a study's local worker imports once and runs many runs: the share of a run there leaves the imports out
    s["outside_step_in_a_worker"] = 1.0 - row["seconds"]["step"] / (wall - row["seconds"]["imports"])
    return s


def _load_average() -> list[float] | None:
    try:
        return list(os.getloadavg())
    except OSError:
        return None


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], int(sys.argv[3]), sys.argv[4])
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache", default=None, help="SYMSCALE_CACHE of the runs (where the built-in set is cached)")
    p.add_argument("--archs", default="mpnn,egnn,gemnet_oc,esen")
    p.add_argument("--widths", default="24,24,4,4", help="one width per arch")
    p.add_argument("--before-src", default=None, help="another source tree (its src folder) to compare")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "run_phases.json"))
    args = p.parse_args()
    if args.cache:
        os.environ["SYMSCALE_CACHE"] = args.cache
    import torch

    import symscale

    here_src = str(Path(symscale.__file__).resolve().parents[1])
    sources = ([("before", args.before_src)] if args.before_src else []) + [("after", here_src)]
    load_start = _load_average()
    rows = []
    for arch, width in zip(args.archs.split(","), [int(w) for w in args.widths.split(",")], strict=True):
        for rep in range(args.repeats):
            for label, src in sources:  # interleaved: before and after share the machine's load
                row = _run_child(src, arch, width)
                row.update(source=label, repeat=rep, shares=_shares(row))
                rows.append(row)
                sh = row["shares"]
                print(
                    f"{label:<6} {arch:<9} w{width:<3} wall {row['wall_s']:6.1f}s step {100 * sh['step']:5.1f}% "
                    + " ".join(f"{k} {100 * sh[k]:.1f}%" for k in PHASES if k != "step"),
                    flush=True,
                )
    summary = {}
    for arch in args.archs.split(","):
        for label, _ in sources:
            sel = [r for r in rows if r["arch"] == arch and r["source"] == label]
            summary[f"{arch}/{label}"] = {
                "wall_s_median": statistics.median(r["wall_s"] for r in sel),
                "outside_step_share_median": statistics.median(r["shares"]["outside_step"] for r in sel),
                "outside_step_share_in_a_worker_median": statistics.median(
                    r["shares"]["outside_step_in_a_worker"] for r in sel
                ),
            }
    result = {
        "benchmark": "run_phases",
        "git_sha": git_sha(),
        "symscale_version": symscale.__version__,
        "torch_version": str(torch.__version__),
        "platform": platform.platform(),
        "processor": cpu_model() or platform.processor(),
        "cpu_count": os.cpu_count(),
        "load_average_start": load_start,
        "load_average_end": _load_average(),
        "settings": {**vars(args), "cache": bool(args.cache), "out": Path(args.out).name,
                     "before_src": bool(args.before_src)},
        "rows": rows,
        "summary": summary,
    }  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(summary, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
