"""The slurm engine through submitit's local executor: array tasks, requeue on preemption (fake run)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from fake_runs import fake_config, fake_run
from symscale.rundir import lock_path
from symscale.study.executors import RunTask, execute_run
from symscale.study.slurm import SlurmExecutor
from symscale.study.spec import SlurmSpec

TESTS = str(Path(__file__).parent)


def _pythonpath() -> str:
    """The tests folder (the fake run functions) before the caller's PYTHONPATH (the checkout under test)."""
    return TESTS + os.pathsep + os.environ.get("PYTHONPATH", "")


def _tasks(root: Path, n: int = 3, **cfg) -> list[RunTask]:
    return [
        RunTask(f"r{i}", str(root / f"r{i}"), fake_config(width=2 + i, **{"steps": 3, **cfg}), fake_run)
        for i in range(n)
    ]


def _same_as_reference(tmp_path: Path, tasks: list[RunTask]) -> bool:
    for t in tasks:
        ref = tmp_path / "ref" / t.run_id
        execute_run(RunTask(t.run_id, str(ref), t.config, fake_run))
        if (Path(t.run_dir) / "metrics.jsonl").read_text() != (ref / "metrics.jsonl").read_text():
            return False
    return True


def test_slurm_executor_via_submitit_local(tmp_path, monkeypatch):
    pytest.importorskip("submitit")
    monkeypatch.setenv("PYTHONPATH", _pythonpath())  # the job processes import the fake run function
    tasks = _tasks(tmp_path / "runs")
    finished = []
    ex = SlurmExecutor(tmp_path / "slurm", SlurmSpec(local=True, time_min=5), threads=1)
    outcomes = ex.run(tasks, on_finish=lambda t, o: finished.append(t.run_id))
    assert sorted(finished) == ["r0", "r1", "r2"]
    assert all(o.status == "finished" for o in outcomes), outcomes
    assert _same_as_reference(tmp_path, tasks)


def test_slurm_requeue_resumes_from_checkpoint(tmp_path, monkeypatch):
    """A preempted (timed-out) task is checkpointed by submitit, requeued and resumes where it stopped."""
    submitit = pytest.importorskip("submitit")
    monkeypatch.setenv("PYTHONPATH", _pythonpath())
    from symscale.study.slurm import CheckpointableRun

    task = _tasks(tmp_path / "runs", 1, steps=30, sleep=0.1)[0]
    ex = submitit.LocalExecutor(folder=tmp_path / "slurm", max_num_timeout=3)
    ex.update_parameters(timeout_min=5)
    job = ex.submit(CheckpointableRun(), task)
    ckpt = Path(task.run_dir) / "checkpoints" / "last.json"
    import time

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (ckpt.exists() and json.loads(ckpt.read_text())["step"] >= 3):
        time.sleep(0.05)
    # the signal submitit's controller sends to a task before its time limit (SLURM: at preemption)
    pid = json.loads(lock_path(task.run_dir).read_text())["pid"]
    os.kill(pid, signal.SIGUSR2)
    outcome = job.result()
    assert outcome.status == "finished"
    logs = "".join(p.read_text() for p in (tmp_path / "slurm").glob("*_log.*"))
    assert "requeue" in logs.lower()
    steps = [json.loads(line)["step"] for line in (Path(task.run_dir) / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 31))  # resumed: every step once
    assert _same_as_reference(tmp_path, [task])
