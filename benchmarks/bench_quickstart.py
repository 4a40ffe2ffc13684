"""The quickstart end to end, as a user runs it: `symscale study SPEC` in a fresh study directory, timed as a
whole process (wall time, peak RSS of the process tree), optionally from an empty data cache (dataset
generation included), and optionally old source tree against new on the same spec, interleaved.

    python benchmarks/bench_quickstart.py                              # this checkout, quickstart, cached data
    python benchmarks/bench_quickstart.py --empty-cache                # as a new user: the built-in set generated
    python benchmarks/bench_quickstart.py --commits f6b49d4,HEAD --spec-from f6b49d4 --repeats 2
    python benchmarks/bench_quickstart.py --commits f6b49d4,HEAD --spec-from f6b49d4 --subset mpnn:16,esen:4

`--commits A,B`: each commit is checked out into a temporary git worktree and run with PYTHONPATH=<tree>/src
(the installed dependencies are shared); the runs alternate A, B, A, B so that a change of the machine's load
hits both alike, and the JSON records each wall time, the ratios A/B pair by pair and the load average before
and after every run. `--spec-from C` takes the spec (default: the quickstart preset) from commit C, so both trees
run the same study; `--subset arch:width,...` keeps only those (family, width) points of it (a shorter, still
end-to-end comparison: data checks, training, evaluations, fits and report). With a cached dataset (the
default), its generation is timed once beforehand and reported apart.

Measure on an idle machine (`uptime` below 0.3; `--settle` waits for that before each study, since the previous
study's own workers stay in the load average for a minute or two): 2-thread timings swing 4-6x under load.
Writes JSON with the hardware, versions, git SHA and load averages (default benchmarks/results/quickstart.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from _common import cpu_model, git_sha, write_json  # benchmarks/ is the script's own folder

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results" / "quickstart.json"
PRESET = "src/symscale/configs/studies/quickstart.yaml"


def _git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


def spec_text(commit: str | None, path: str) -> str:
    """The spec file at `commit` (None: this checkout's working tree)."""
    if commit is None:
        return (ROOT / path).read_text()
    return _git("show", f"{commit}:{path}")


def subset_spec(text: str, subset: str | None) -> str:
    """The spec with only the (arch, width) points of `subset` ("mpnn:16,esen:4"), or unchanged."""
    if not subset:
        return text
    keep: dict[str, list[int]] = {}
    for item in subset.split(","):
        arch, _, width = item.partition(":")
        keep.setdefault(arch.strip(), []).append(int(width))
    spec = yaml.safe_load(text)
    families = []
    for fam in spec["families"]:
        if fam["arch"] in keep:
            fam = {k: v for k, v in fam.items() if k != "ladder"}
            fam["widths"] = keep[fam["arch"]]
            families.append(fam)
    missing = set(keep) - {f["arch"] for f in families}
    if missing:
        raise SystemExit(f"bench_quickstart: --subset names families not in the spec: {sorted(missing)}")
    spec["families"] = families
    return yaml.safe_dump(spec, sort_keys=False)


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def settle(below: float, max_wait_s: float) -> float:
    """Wait until the one-minute load average is below `below` (the previous study's own workers decay out of
    it in a minute or two), at most `max_wait_s`; seconds waited."""
    t0 = time.perf_counter()
    while os.getloadavg()[0] >= below and time.perf_counter() - t0 < max_wait_s:
        time.sleep(5)
    return round(time.perf_counter() - t0, 1)


def run_study(src: Path, spec: Path, study_dir: Path, cache: Path, settle_below: float = 0.0) -> dict[str, Any]:
    """One `symscale study` as a whole process: wall seconds, peak RSS of the tree (MiB), exit code; first, with
    `settle_below` > 0, a wait (at most 5 min) until the load average is below it."""
    env = dict(os.environ, PYTHONPATH=str(src), SYMSCALE_CACHE=str(cache), SYMSCALE_NO_BROWSER="1")
    waited = settle(settle_below, 300.0) if settle_below > 0 else 0.0
    before = load()
    t0 = time.perf_counter()
    proc = subprocess.run(
        [
            "/usr/bin/time",
            "-v",
            sys.executable,
            "-m",
            "symscale",
            "study",
            str(spec),
            "--dir",
            str(study_dir),
            "--no-progress",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - t0
    rss = next(
        (int(line.split()[-1]) / 1024 for line in proc.stderr.splitlines() if "Maximum resident set size" in line), None
    )
    status = {}
    for run in (study_dir / "runs").glob("*/status.json"):
        s = json.loads(run.read_text()).get("status", "?")
        status[s] = status.get(s, 0) + 1
    return {
        "wall_s": round(wall, 1),
        "peak_rss_mib": rss and round(rss),
        "rc": proc.returncode,
        "runs": status,
        "load_before": before,
        "load_after": load(),
        "settle_wait_s": waited,
        "stderr_tail": proc.stderr.splitlines()[-3:] if proc.returncode else [],
    }


def generate(src: Path, spec: Path, cache: Path) -> float:
    """Generate (or find) the spec's built-in dataset in `cache`; seconds taken."""
    code = (
        "import sys, yaml; from symscale.data.builtin import builtin_dataset;"
        "d = yaml.safe_load(open(sys.argv[1]))['dataset'];"
        "builtin_dataset(d['builtin'], seed=d.get('seed', 0), progress=False)"
    )
    env = dict(os.environ, PYTHONPATH=str(src), SYMSCALE_CACHE=str(cache))
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, str(spec)], env=env, check=True)
    return round(time.perf_counter() - t0, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--commits", help="A,B: two commits, run alternately (default: this checkout alone)")
    ap.add_argument("--spec", default=PRESET, help="spec path inside the repository (default: the quickstart)")
    ap.add_argument("--spec-from", help="commit whose spec both trees run (default: this checkout's)")
    ap.add_argument("--subset", help="arch:width,... points of the spec to keep (default: all)")
    ap.add_argument("--repeats", type=int, default=1, help="runs per tree (default 1)")
    ap.add_argument("--empty-cache", action="store_true", help="each run from an empty data cache")
    ap.add_argument(
        "--settle",
        type=float,
        default=0.3,
        metavar="LOAD",
        help="before each study wait (at most 5 min) until the 1-minute load average is below LOAD "
        "(default 0.3; 0: no wait)",
    )
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument(
        "--keep",
        type=Path,
        help="move each finished study directory here (report, laws, catalogue) instead of deleting it",
    )
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-quickstart-"))
    trees: list[tuple[str, Path]] = []
    try:
        if args.commits:
            for commit in args.commits.split(","):
                sha = _git("rev-parse", commit)
                tree = work / f"tree-{sha[:8]}"
                _git("worktree", "add", "--detach", "-q", str(tree), sha)
                trees.append((sha, tree / "src"))
        else:
            trees.append((git_sha() or "working tree", ROOT / "src"))
        spec = work / "spec.yaml"
        spec.write_text(subset_spec(spec_text(args.spec_from, args.spec), args.subset))
        shared_cache = work / "cache"
        gen_s = None if args.empty_cache else generate(trees[-1][1], spec, shared_cache)
        results: dict[str, list[dict[str, Any]]] = {sha: [] for sha, _ in trees}
        for rep in range(args.repeats):
            for sha, src in trees:
                cache = work / f"cache-{rep}-{sha[:8]}" if args.empty_cache else shared_cache
                study = work / f"study-{rep}-{sha[:8]}"
                r = run_study(src, spec, study, cache, args.settle)
                print(
                    f"{sha[:8]} repeat {rep}: {r['wall_s']} s, peak {r['peak_rss_mib']} MiB, rc {r['rc']}, "
                    f"runs {r['runs']}, load {r['load_before']} -> {r['load_after']}",
                    flush=True,
                )
                results[sha].append(r)
                if args.keep:
                    args.keep.mkdir(parents=True, exist_ok=True)
                    shutil.move(str(study), str(args.keep / study.name))
                else:
                    shutil.rmtree(study, ignore_errors=True)
                if args.empty_cache:
                    shutil.rmtree(cache, ignore_errors=True)
        ratios = None
        if len(trees) == 2:
            (a, _), (b, _) = trees
            ratios = [round(ra["wall_s"] / rb["wall_s"], 3) for ra, rb in zip(results[a], results[b], strict=True)]
            print(f"speed-up {b[:8]} over {a[:8]}, pair by pair: {ratios}")
        import torch

        out = {
            "benchmark": "bench_quickstart",
            "git_sha": git_sha(),
            "argv": sys.argv[1:],
            "spec": yaml.safe_load(spec.read_text()),
            "generation_s": gen_s,
            "results": results,
            "speedup_pairs": ratios,
            "hardware": {
                "cpu": cpu_model() or platform.processor() or platform.machine(),
                "cores": os.cpu_count(),
            },
            "versions": {"python": platform.python_version(), "torch": torch.__version__},
            "load_at_end": load(),
        }
        write_json(args.out, out)
        print(f"wrote {args.out}")
    finally:
        for _, src in trees:
            if src.parent.parent == work:
                subprocess.run(["git", "worktree", "remove", "--force", str(src.parent)], cwd=ROOT, check=False)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
