"""Training-step time of the quickstart's runs, this source tree against another (before/after), interleaved.

    python benchmarks/bench_step_ab.py --before-src DIR [--archs mpnn,egnn,gemnet_oc] [--widths a:b,a:b,a:b]
        [--steps 12] [--passes 3] [--repeats 3] [--out benchmarks/results/step_ab.json]

For each family (comma-separated) and its widths (`a:b` for the quickstart ladder's smallest and largest, or
explicit widths joined by colons, `4:16:64`), a child process per source tree builds the quickstart's run of
that family (built-in data, its batch size, one thread, `loop._setup` as a study worker builds it), takes its
first `steps` training batches and times `passes` passes
of `run.train_step` over them (the model keeps training: every pass is a real step); the child reports the
median seconds per step. Children alternate (before, after, before, after, ...) `repeats` times so that both
trees see the same machine load; the ratio before/after per repeat and its median are reported. Timings on a
loaded machine are not speeds: the ratios are what this measures. `DIR` is a `src` folder of the old commit,
e.g. `git worktree add /tmp/base COMMIT` and `--before-src /tmp/base/src`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

from _common import git_sha  # benchmarks/ is the script's own folder

_CHILD = r"""
import json, statistics, sys, time
from pathlib import Path
import torch
torch.set_num_threads(1)
sys.path.insert(0, {bench!r})
from _common import quickstart_config
from symscale.train import loop
config = quickstart_config({arch!r}, {width})
run, _ = loop._setup(config, Path("."), None, progress=False)
loader = loop._loader(run, 0, 0)
batches = [loader.batch(b).to(run.device) for b in range({steps} + 2)]
for b in batches[:2]:
    run.train_step(b)
times = []
for _ in range({passes}):
    for b in batches[2:]:
        t0 = time.perf_counter(); run.train_step(b); times.append(time.perf_counter() - t0)
print(json.dumps({{"step_s": statistics.median(times), "N": run.n_params,
                  "atoms": sum(b.num_atoms for b in batches[2:]) / {steps}}}))
"""

QUICKSTART_WIDTHS = {"mpnn": [4, 64], "egnn": [4, 64], "gemnet_oc": [2, 8], "esen": [2, 16]}


def child(src: str, arch: str, width: int, steps: int, passes: int) -> dict:
    env = {**os.environ, "PYTHONPATH": src, "OMP_NUM_THREADS": "1"}
    code = _CHILD.format(bench=str(Path(__file__).parent), arch=arch, width=width, steps=steps, passes=passes)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)
    if out.returncode:
        raise SystemExit(f"child failed ({src}, {arch} w{width}):\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def widths_of(arch: str, text: str) -> list[int]:
    if text == "a:b":
        return QUICKSTART_WIDTHS[arch]
    return [int(w) for w in text.split(":")]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--before-src", required=True, help="the old tree's src folder")
    p.add_argument("--archs", default="mpnn,egnn,gemnet_oc")
    p.add_argument("--widths", default="a:b,a:b,a:b", help="per family: a:b (quickstart's ends) or w1:w2:...")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--passes", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "step_ab.json"))
    args = p.parse_args()
    after_src = str(Path(__file__).resolve().parent.parent / "src")
    rows = []
    for arch, wtext in zip(args.archs.split(","), args.widths.split(","), strict=True):
        for width in widths_of(arch, wtext):
            before, after = [], []
            for _ in range(args.repeats):
                before.append(child(args.before_src, arch, width, args.steps, args.passes))
                after.append(child(after_src, arch, width, args.steps, args.passes))
            ratios = [b["step_s"] / a["step_s"] for b, a in zip(before, after, strict=True)]
            row = {"arch": arch, "width": width, "N": after[0]["N"], "atoms_per_step": after[0]["atoms"],
                   "before_step_s": [b["step_s"] for b in before], "after_step_s": [a["step_s"] for a in after],
                   "speedup": ratios, "speedup_median": statistics.median(ratios)}  # fmt: skip
            rows.append(row)
            print(f"{arch} w{width} N {row['N']}: before {1e3 * statistics.median(row['before_step_s']):.1f} ms, "
                  f"after {1e3 * statistics.median(row['after_step_s']):.1f} ms, speed-up "
                  f"{row['speedup_median']:.2f}x ({', '.join(f'{r:.2f}' for r in ratios)})", flush=True)  # fmt: skip
    result = {
        "benchmark": "step_ab", "git_sha": git_sha(), "torch_version": _torch_version(),
        "platform": platform.platform(), "cpu_count": os.cpu_count(), "load_average": list(os.getloadavg()),
        "settings": {k: v for k, v in vars(args).items() if k not in ("before_src", "out")}, "rows": rows,
    }  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


def _torch_version() -> str:
    out = subprocess.run([sys.executable, "-c", "import torch; print(torch.__version__)"], capture_output=True,
                         text=True, check=False)  # fmt: skip
    return out.stdout.strip()


if __name__ == "__main__":
    main()
