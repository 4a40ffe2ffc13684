"""Studies with the real training loop on a tiny toy dataset (a few steps per run)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from symscale.cli import main
from symscale.rundir import lock_path, read_metrics
from symscale.study.catalogue import LAWS_COLUMNS
from symscale.study.runner import run_study
from symscale.study.spec import load_spec

# timings differ between two executions of the same run; everything else must be identical
TIMING_KEYS = ("device_seconds", "wall_seconds", "time_s", "elapsed_s")


@pytest.fixture(scope="module")
def toy_xyz(tmp_path_factory) -> Path:
    from symscale.data.readers import write_structures
    from symscale.data.toy import toy_structures

    path = tmp_path_factory.mktemp("data") / "toy.xyz"
    write_structures(path, toy_structures(48, seed=0))
    return path


def tiny_spec(tmp_path: Path, data: Path, *, executor: str = "local", batch: int = 8, extra_family=None) -> Path:
    raw = {
        "name": "tiny",
        "dataset": {"path": str(data), "val": 8},
        "families": [{"arch": "mpnn", "widths": [8, 16]}, {"arch": "egnn", "widths": [8, 16]}],
        "evaluation": {
            "eval_points": 3,
            "eval_first_fraction": 0.3,
            "eval_batch_size": 8,
            "equivariance_structures": 4,
        },
        "training": {"batch_size": batch, "lr": 3e-3, "warmup_steps": 2, "device": "cpu"},
        "executor": {"kind": executor, "workers": 2, "threads_per_worker": 1, "slurm": {"local": True, "time_min": 10}},
        "report": False,
    }
    if extra_family:
        raw["families"].append(extra_family)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def deterministic_metrics(study: Path) -> dict[str, list[dict]]:
    out = {}
    for run_dir in sorted(p for p in (study / "runs").glob("*") if p.is_dir()):
        out[run_dir.name] = [{k: v for k, v in m.items() if k not in TIMING_KEYS} for m in read_metrics(run_dir)]
    return out


def test_tiny_real_study_local_with_a_diverging_run(tmp_path, toy_xyz, capsys):
    diverging = {"arch": "mpnn", "widths": [4], "training": {"lr": 1e9, "grad_clip": None}}
    spec = load_spec(tiny_spec(tmp_path, toy_xyz, extra_family=diverging))
    study = tmp_path / "study"
    result = run_study(spec, study, out=lambda line: None)
    assert (result.finished, result.failed, result.pending) == (4, 1, 0), result
    ((failed_id, reason),) = result.failures
    assert failed_id.startswith("mpnn-w4-") and reason
    with (study / "laws.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == LAWS_COLUMNS
    assert {r["arch"] for r in rows} == {"mpnn", "egnn"} and failed_id not in {r["run"] for r in rows}
    assert all(float(r["C"]) > 0 and float(r["D"]) > 0 and float(r["N"]) > 0 for r in rows)
    assert main(["runs", str(study)]) == 0
    out = capsys.readouterr().out
    assert "4 finished" in out and "1 failed" in out and failed_id in out


@pytest.mark.slow
def test_kill_worker_and_study_then_rerun_matches_uninterrupted(tmp_path, toy_xyz):
    """SIGKILL one worker mid-run (it is restarted and resumes), then the whole study mid-way; the rerun
    finishes every run exactly once with the metrics of an uninterrupted study."""
    spec_path = tiny_spec(tmp_path, toy_xyz, batch=2)  # 20 steps per run, a checkpoint at each evaluation
    study = tmp_path / "killed"
    script = (
        f"from symscale.study.runner import run_study; from symscale.study.spec import load_spec; "
        f"run_study(load_spec({str(spec_path)!r}), {str(study)!r})"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    worker_killed = False
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        ckpts = list(study.glob("runs/*/checkpoints/last.pt"))
        if ckpts and not worker_killed:  # a worker mid-run, after its first checkpoint
            os.kill(json.loads(lock_path(ckpts[0].parent.parent).read_text())["pid"], signal.SIGKILL)
            worker_killed = True
        finished = list(study.glob("runs/*/checkpoints/final.pt"))
        if worker_killed and finished and len(ckpts) > len(finished):
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert worker_killed
    resumed = run_study(load_spec(spec_path), study, out=lambda line: None)
    assert (resumed.finished, resumed.failed) == (4, 0)
    clean = tmp_path / "clean"
    run_study(load_spec(spec_path), clean, out=lambda line: None)
    killed, reference = deterministic_metrics(study), deterministic_metrics(clean)
    assert killed == reference
    for steps in ([m["step"] for m in ms] for ms in killed.values()):
        assert steps == sorted(set(steps))  # every evaluation once


@pytest.mark.slow
def test_tiny_real_study_on_slurm_local(tmp_path, toy_xyz):
    pytest.importorskip("submitit")
    spec = load_spec(tiny_spec(tmp_path, toy_xyz, executor="slurm"))
    result = run_study(spec, tmp_path / "study", out=lambda line: None)
    assert (result.finished, result.failed) == (4, 0)
