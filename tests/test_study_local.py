"""The local engine: a pool of worker processes that survives killed workers (fake run function)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

from fake_runs import fake_config, fake_run
from symscale.rundir import lock_path, read_status
from symscale.study.executors import RunTask, execute_run
from symscale.study.local import LocalExecutor


def _task(tmp_path, name, **cfg) -> RunTask:
    return RunTask(name, str(tmp_path / name), fake_config(**cfg), fake_run)


def kill_owner_when(run_dir: Path, ready: str | None = None, timeout_s: float = 30.0) -> threading.Thread:
    """In the background: SIGKILL the process holding run_dir's lock once `ready` (a file) exists."""

    def watch():
        lock, deadline = lock_path(run_dir), time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if lock.exists() and (ready is None or (run_dir / ready).exists()):
                try:
                    os.kill(json.loads(lock.read_text())["pid"], signal.SIGKILL)
                    return
                except (ValueError, OSError):
                    pass
            time.sleep(0.01)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_local_pool_runs_all_and_survives_a_killed_worker(tmp_path):
    tasks = [_task(tmp_path, f"r{i}", width=2 + i, steps=6, sleep=0.15) for i in range(4)]
    finished = []
    killer = kill_owner_when(tmp_path / "r1", "checkpoints/last.json")
    outcomes = LocalExecutor(workers=2, threads=1, max_restarts=1).run(
        tasks, on_finish=lambda t, o: finished.append(t.run_id)
    )
    killer.join()
    assert sorted(finished) == ["r0", "r1", "r2", "r3"]
    assert all(o.status == "finished" for o in outcomes)
    reference = tmp_path / "ref"
    execute_run(RunTask("r1", str(reference), tasks[1].config, fake_run))
    assert (tmp_path / "r1" / "metrics.jsonl").read_text() == (reference / "metrics.jsonl").read_text()


def test_worker_killed_twice_is_failed_with_signal(tmp_path):
    task = _task(tmp_path, "k", steps=50, sleep=0.1)
    run_dir = tmp_path / "k"

    def twice():
        kill_owner_when(run_dir, "checkpoints/last.json").join()
        time.sleep(0.3)
        kill_owner_when(run_dir).join()  # the restarted worker, as soon as it holds the lock

    killer = threading.Thread(target=twice, daemon=True)
    killer.start()
    outcomes = LocalExecutor(workers=1, threads=1, max_restarts=1).run([task])
    killer.join()
    assert [o.status for o in outcomes] == ["failed"]
    assert "signal 9" in read_status(tmp_path / "k")["reason"]
