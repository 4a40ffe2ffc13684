"""What every execution engine shares: a run task, how it ended, and `execute_run`, which runs one task.

Every engine (`study/local.py`, `study/slurm.py`, `study/ray.py`; chosen by `study.runner.make_executor`)
ends up calling `execute_run(task)` somewhere: it takes the run directory's lock (`symscale.rundir.RunLock`),
skips a finished run, calls the task's run function (by default `train_config`, which resumes from the run's
checkpoint) and reads the run's status back. The lock makes a run single-owner even when two studies, a
requeued SLURM job and a Ray retry race for it.

    outcomes = make_executor(spec.executor, study_dir).run(tasks, on_start=..., on_finish=...)
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from symscale import rundir
from symscale.config import RunConfig
from symscale.errors import SymscaleError, filesystem_fault
from symscale.train.loop import train_run

log = logging.getLogger(__name__)

RunFn = Callable[[RunConfig, Path], Any]
StartFn = Callable[["RunTask"], None]
FinishFn = Callable[["RunTask", "RunOutcome"], None]

MISSING_EXTRA = {
    "slurm": "the slurm executor needs submitit: pip install 'symscale[slurm]'",
    "ray": "the ray executor needs ray: pip install 'symscale[ray]'",
}


def train_config(config: RunConfig, run_dir: Path) -> None:
    """The default run function: train (or resume) `config` in `run_dir`."""
    train_run(config, run_dir, progress=False)


@dataclass(frozen=True)
class RunTask:
    """One run to execute: where it lives, its validated configuration and the function that runs it (a
    module-level callable, so that it pickles by reference to worker processes, submitit and Ray)."""

    run_id: str
    run_dir: str
    config: RunConfig
    run_fn: RunFn = train_config  # called as run_fn(config, run_dir)
    threads: int | None = None  # torch intra-op threads (None: leave as is)
    estimated_flops: float = 0.0  # 3 kappa N D, used for the ETA


@dataclass(frozen=True)
class RunOutcome:
    """How an execution of a run ended: finished | failed | busy (locked by a live owner) | interrupted |
    stopped (the file system refused a write: disk full, read-only; the study stops, the run resumes later)."""

    run_id: str
    status: str
    reason: str | None = None
    wall_s: float = 0.0
    worker: dict[str, Any] = field(default_factory=dict)


def noop(*args: Any) -> None:
    return None


def reset_for_retry(run_dir: str | Path) -> None:
    """Make a failed run retryable: status pending; a run that died before the training loop wrote its
    config.yaml loses the files the study wrote for it, so that the loop starts it in an empty directory."""
    run_dir = Path(run_dir)
    if (run_dir / rundir.CONFIG).exists():
        rundir.write_status(run_dir, "pending", "retrying a failed run")
        return
    for name in (rundir.STATUS, rundir.ERROR):
        with contextlib.suppress(FileNotFoundError):
            (run_dir / name).unlink()


def record_failure(run_dir: str | Path, reason: str) -> None:
    """Mark a run failed with `reason` unless it finished (an engine that saw its worker die)."""
    if rundir.read_status(run_dir)["status"] != "finished":
        rundir.write_status(run_dir, "failed", reason)


def execute_run(task: RunTask) -> RunOutcome:
    """Run one task under its lock and return how it ended. A finished run returns at once; an exception in
    the run function is recorded in status.json (status failed, with the reason) and does not propagate."""
    t0 = time.monotonic()
    run_dir = Path(task.run_dir)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    worker = {"pid": os.getpid(), "host": socket.gethostname()}
    if rundir.read_status(run_dir)["status"] == "finished":
        return RunOutcome(task.run_id, "finished", None, 0.0, worker)
    lock = rundir.RunLock(run_dir)
    if not lock.acquire():
        return RunOutcome(task.run_id, "busy", lock.describe(), 0.0, worker)
    try:
        status = _call_run_fn(task, run_dir)
    finally:
        lock.release()
    return RunOutcome(task.run_id, status["status"], status.get("reason"), time.monotonic() - t0, worker)


def _call_run_fn(task: RunTask, run_dir: Path) -> dict[str, Any]:
    if rundir.read_status(run_dir)["status"] == "finished":  # finished by another owner before we got the lock
        return rundir.read_status(run_dir)
    config = task.config
    threads = rundir.read_json(run_dir / rundir.RUN_INFO).get("threads") or task.threads
    if threads is not None:
        # a started run resumes with the thread count it started with (CPU results depend on it, see
        # train.loop.check_threads), whatever --workers gives now; a new run takes the engine's count
        threads = int(threads)
        torch.set_num_threads(threads)
        config = replace(config, runtime=replace(config.runtime, threads=threads))
    try:
        task.run_fn(config, run_dir)
    except Exception as err:  # the run failed: record why, the study goes on with the others
        fault = filesystem_fault(err, f"in run {task.run_id}")
        if fault is not None:  # a refused write (disk full): not the run's failure; the study stops
            return _stopped(run_dir, fault)
        log.warning("run %s failed: %s", task.run_id, err)
        run_dir.mkdir(parents=True, exist_ok=True)
        rundir.write_text(run_dir / rundir.ERROR, traceback.format_exc())
        if rundir.read_status(run_dir)["status"] != "failed":
            rundir.write_status(run_dir, "failed", f"{type(err).__name__}: {err}")
    status = rundir.read_status(run_dir)
    if status["status"] not in ("finished", "failed"):
        status = {"status": "interrupted", "reason": f"run function returned with status {status['status']}"}
    return status


def _stopped(run_dir: Path, fault: str) -> dict[str, Any]:
    """The outcome of a run stopped by the file system (`fault`: its one line). Its status says so when it
    can be written (the loop has usually written it); the run resumes from its last checkpoint later."""
    log.info("run %s stopped: %s", run_dir.name, fault)
    if rundir.read_status(run_dir)["status"] in ("pending", "running"):
        with contextlib.suppress(SymscaleError, OSError):  # on a full disk this write may be refused too
            rundir.write_status(run_dir, "failed", rundir.STOPPED_BY_FILESYSTEM + fault)
    return {"status": "stopped", "reason": fault}
