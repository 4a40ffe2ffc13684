"""execute_run: one run under its lock, with the fake run function: idempotence, failures, busy runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from fake_runs import fake_config, fake_run
from symscale.rundir import lock_path, read_status
from symscale.study.executors import RunTask, execute_run


def _task(tmp_path, name, **cfg) -> RunTask:
    return RunTask(name, str(tmp_path / name), fake_config(**cfg), fake_run)


def test_execute_run_finishes_and_is_idempotent(tmp_path):
    task = _task(tmp_path, "a")
    out = execute_run(task)
    assert out.status == "finished"
    before = (tmp_path / "a" / "metrics.jsonl").read_text()
    assert execute_run(task).status == "finished"  # skipped, not rerun
    assert (tmp_path / "a" / "metrics.jsonl").read_text() == before
    assert not lock_path(tmp_path / "a").exists()


def test_failing_run_recorded_with_reason(tmp_path):
    out = execute_run(_task(tmp_path, "nan", lr=1e6))
    assert out.status == "failed" and out.reason == "non-finite loss"
    out = execute_run(_task(tmp_path, "boom", arch="boom"))  # KeyError in the run fn
    assert out.status == "failed" and "KeyError" in out.reason
    assert read_status(tmp_path / "boom")["status"] == "failed"


def test_a_run_locked_by_a_live_owner_is_busy_and_untouched(tmp_path):
    run_dir = tmp_path / "r"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        lock_path(run_dir).write_text(json.dumps({"pid": sleeper.pid, "host": os.uname().nodename}))
        outcome = execute_run(_task(tmp_path, "r"))
        assert outcome.status == "busy" and f"pid {sleeper.pid}" in outcome.reason
        assert not run_dir.exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    assert execute_run(_task(tmp_path, "r")).status == "finished"  # the owner is dead: its lock is stale
    assert not lock_path(run_dir).exists()
