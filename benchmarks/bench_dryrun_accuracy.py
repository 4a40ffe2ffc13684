"""How far the dry run's per-run wall times are from the runs' measured ones, on a (partial) study.

    symscale study embedded --dry-run > dry.txt             # on an idle machine, with the data cached
    symscale study embedded --dir DIR                       # stop it (Ctrl-C) whenever: it resumes later
    python benchmarks/bench_dryrun_accuracy.py DIR dry.txt [--out benchmarks/results/dryrun_accuracy.json]

A run's measured wall time is from the first to the last line of its train.log (start to finished; runs not
finished are left out); its predicted time is the dry run's `time` column for the same run id. Prints each
run's ratio and the sum over the finished runs; writes JSON with the hardware, versions, git SHA and load.
The learning-rate stage is not in train.log; compare the dry run's "learning-rate stage" figure with the time
between starting the study and its first grid run by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import cpu_model, git_sha  # noqa: E402

RUN_ID = re.compile(r"^([a-z_]+-w\d+-[0-9a-f]{10})\s")


def predicted(dry_text: str) -> dict[str, float]:
    """Run id -> predicted seconds, from the dry run's table (last column h:mm:ss)."""
    out = {}
    for line in dry_text.splitlines():
        m = RUN_ID.match(line)
        if m:
            h, mi, s = (int(x) for x in line.split()[-1].split(":"))
            out[m.group(1)] = 3600 * h + 60 * mi + s
    return out


def measured(study: Path) -> dict[str, float]:
    """Run id -> seconds from the first to the last line of train.log, for the finished runs."""
    out = {}
    for log in sorted(study.glob("runs/*/train.log")):
        lines = log.read_text().splitlines()
        if not lines or "finished" not in lines[-1]:
            continue
        t0, t1 = (datetime.strptime(x[:19], "%Y-%m-%d %H:%M:%S") for x in (lines[0], lines[-1]))
        out[log.parent.name] = (t1 - t0).total_seconds()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("study", type=Path, help="the study directory (finished or stopped part-way)")
    ap.add_argument("dry_run", type=Path, help="the saved output of `symscale study SPEC --dry-run`")
    ap.add_argument("--note", default="", help="the conditions of the measurement (recorded in the JSON)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "dryrun_accuracy.json")
    args = ap.parse_args()
    pred, meas = predicted(args.dry_run.read_text()), measured(args.study)
    runs = [
        {"run": r, "predicted_s": pred[r], "measured_s": t, "measured_over_predicted": round(t / pred[r], 3)}
        for r, t in meas.items()
        if r in pred and pred[r] > 0
    ]
    if not runs:
        raise SystemExit(f"bench_dryrun_accuracy: no finished run of {args.study} is in the dry run's table")
    for r in runs:
        print(
            f"{r['run']:32s} predicted {r['predicted_s']:7.0f} s  measured {r['measured_s']:7.0f} s  "
            f"x{r['measured_over_predicted']:.3f}"
        )
    total_p, total_m = sum(r["predicted_s"] for r in runs), sum(r["measured_s"] for r in runs)
    print(f"{len(runs)} finished runs: predicted {total_p:.0f} s, measured {total_m:.0f} s, x{total_m / total_p:.3f}")
    import torch

    out = {
        "benchmark": "bench_dryrun_accuracy", "git_sha": git_sha(), "study": args.study.name, "note": args.note,
        "runs": runs,
        "total_predicted_s": total_p, "total_measured_s": total_m, "measured_over_predicted": total_m / total_p,
        "hardware": {"cpu": cpu_model() or platform.machine(), "cores": os.cpu_count()},
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
        "load_at_end": [round(x, 2) for x in os.getloadavg()],
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
