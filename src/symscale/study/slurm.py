"""The SLURM engine: one sbatch job per run (named by its run id) through submitit, each running `execute_run`.

Resources follow the run: a run whose `training.device` is `cuda` asks for one GPU (`gpus_per_task`
overrides), a CPU run for none; CPUs are `cpus_per_task` (default: the executor's `threads_per_worker`, else
1). Every sbatch option a user needs is in the spec's `executor.slurm` (partition, qos, account, time_min,
mem_gb, cpus_per_task, gpus_per_task, constraint, setup lines, extra sbatch options).

The job id of every submitted run is recorded in `<study>/slurm/jobs.json`; before submitting, the recorded
jobs still in `squeue` (pending, running, requeued) are followed instead of submitted again, so rerunning
`symscale study` while jobs run never starts a second job per run. A refused `sbatch` is one line
(SymscaleError) and leaves no submission files behind.

Preempted or timed-out jobs get USR2 (`--signal=USR2@90`); submitit's handler requeues the same job
(`scontrol requeue`) and the requeued job resumes from the run's checkpoint, taking over its own lock
(`symscale.rundir`) because it keeps its scheduler token.

Departs from the earlier engine: one job per run instead of one array, because an array has one name for all
its tasks; `max_running` bounds how many jobs this study keeps in the queue at once while it waits.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import subprocess
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from symscale import rundir
from symscale.errors import SymscaleError
from symscale.study.executors import (
    MISSING_EXTRA,
    FinishFn,
    RunOutcome,
    RunTask,
    StartFn,
    execute_run,
    noop,
    record_failure,
)

log = logging.getLogger(__name__)

SLURM_NO_WORKERS = "no --workers with the slurm executor (one job per run; executor.slurm.max_running bounds them)"
JOBS_FILE = "jobs.json"  # {run_id: job_id} of every job this study submitted, in the engine's folder
# squeue states of a job that is, or will again be, running: such a run is not submitted again
LIVE_STATES = frozenset(
    "PENDING RUNNING REQUEUED REQUEUE_HOLD REQUEUE_FED CONFIGURING COMPLETING SUSPENDED RESIZING SIGNALING "
    "STAGE_OUT PREEMPTED".split()
)


def run_resources(settings: Any, task: RunTask, threads: int | None = None) -> dict[str, Any]:
    """submitit's SlurmExecutor parameters for one run: the spec's options plus what the run's device needs.

    Args:
        settings: the spec's `executor.slurm` (a SlurmSpec).
        task: the run; its `config.runtime.device` decides the GPU request unless `gpus_per_task` is set.
        threads: the executor's threads_per_worker, the default CPU count.

    Returns:
        keyword arguments for `submitit.SlurmExecutor.update_parameters` (None values left out).
    """
    s = settings
    gpus = s.gpus_per_task
    if gpus is None:
        gpus = 1 if task.config.runtime.device == "cuda" else 0
    params: dict[str, Any] = {
        "job_name": task.run_id,
        "time": s.time_min,
        "nodes": 1,
        "ntasks_per_node": 1,
        "cpus_per_task": s.cpus_per_task or threads or 1,
        "gpus_per_node": gpus or None,  # no --gpus-per-node at all on a CPU run (a GPU-less cluster refuses 0)
        "partition": s.partition,
        "qos": s.qos,
        "account": s.account,
        "constraint": s.constraint,
        "mem": None if s.mem_gb is None else f"{int(round(s.mem_gb * 1024))}M",
        "setup": list(s.setup) or None,
        "additional_parameters": dict(s.extra) or None,
    }
    return {k: v for k, v in params.items() if v is not None}


class SlurmExecutor:
    """One sbatch job per run, named by its run id, through submitit; job ids recorded in `folder/jobs.json`
    and checked against `squeue` before submitting. `local=True` uses submitit's local executor (no sbatch,
    no job records: the same code path for tests)."""

    def __init__(self, folder: str | Path, settings: Any, threads: int | None = None):
        try:
            import submitit  # noqa: F401
        except ImportError:
            raise SymscaleError(MISSING_EXTRA["slurm"]) from None
        self.folder = Path(folder)
        self.settings = settings
        self.threads = threads

    # ------------------------------------------------------------ submission

    def _executor(self, task: RunTask):
        import submitit

        s = self.settings
        if s.local:
            ex = submitit.LocalExecutor(folder=self.folder, max_num_timeout=s.max_requeues)
            ex.update_parameters(timeout_min=s.time_min)
            return ex
        ex = submitit.SlurmExecutor(folder=self.folder, max_num_timeout=s.max_requeues)
        ex.update_parameters(**run_resources(s, task, self.threads))
        return ex

    def submit(self, task: RunTask):
        """Submit one run; SymscaleError (one line) when sbatch refuses it, with its submission files removed."""
        self.folder.mkdir(parents=True, exist_ok=True)
        before = set(self.folder.iterdir())  # submitit writes its files here, none in subfolders
        try:
            job = self._executor(task).submit(CheckpointableRun(), task)
        except Exception as err:  # sbatch refused the job (bad gres, partition, account...) or is missing
            for path in set(self.folder.iterdir()) - before:
                with contextlib.suppress(OSError):
                    shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
            raise SymscaleError(f"sbatch refused run {task.run_id}: {_last_line(err)}") from None
        if not self.settings.local:
            self._record(task.run_id, job.job_id)
        log.info("submitted run %s as job %s", task.run_id, job.job_id)
        return job

    def _record(self, run_id: str, job_id: str) -> None:
        jobs = self.recorded_jobs()
        jobs[run_id] = str(job_id)
        rundir.write_json(self.folder / JOBS_FILE, jobs)

    def recorded_jobs(self) -> dict[str, str]:
        """{run_id: job_id} of the jobs this study submitted (empty before the first submission)."""
        path = self.folder / JOBS_FILE
        return {str(k): str(v) for k, v in rundir.read_json(path).items()} if path.exists() else {}

    def live_jobs(self) -> dict[str, str]:
        """{run_id: job_id} of the recorded jobs that squeue lists as pending, running or requeued."""
        jobs = self.recorded_jobs()
        if not jobs or self.settings.local:
            return {}
        states = squeue_states()
        return {run: job for run, job in jobs.items() if states.get(job) in LIVE_STATES}

    # ------------------------------------------------------------ the study's loop

    def run(self, tasks: list[RunTask], on_start: StartFn = noop, on_finish: FinishFn = noop) -> list[RunOutcome]:
        if not tasks:
            return []
        threads = self.threads or self.settings.cpus_per_task or 1  # torch threads = the CPUs asked for
        tasks = [replace(t, threads=t.threads or threads) for t in tasks]
        live = self.live_jobs()
        for t in tasks:
            if t.run_id in live:
                log.info("run %s is already queued or running as job %s: not submitted again", t.run_id, live[t.run_id])
        followed = [(t, self._follow(live[t.run_id])) for t in tasks if t.run_id in live]
        queue = [t for t in tasks if t.run_id not in live]
        if not self.settings.wait:  # submit and return: the jobs run on; a later `symscale study` follows them
            for t in queue:
                self.submit(t)
            return []
        return self._drive(queue, followed, on_start, on_finish)

    def _follow(self, job_id: str):
        import submitit

        return submitit.SlurmJob(folder=self.folder, job_id=job_id)

    def _drive(self, queue: list[RunTask], pending: list, on_start: StartFn, on_finish: FinishFn) -> list:
        """Submit while fewer than `max_running` jobs are pending or running; poll until every job is done.
        `on_start` is called when squeue first shows a run's job running (at once with the local executor)."""
        outcomes: list[RunOutcome] = []
        watch = _QueueWatch(self.settings.local)
        started: set[str] = set()
        while queue or pending:
            while queue and len(pending) < self.settings.max_running:
                task = queue.pop(0)
                pending.append((task, self.submit(task)))
            still = []
            for task, job in pending:
                done = watch.done(job)
                if task.run_id not in started and (done or watch.running(job)):
                    started.add(task.run_id)
                    on_start(task)
                if done:
                    outcome = _submitit_outcome(task, job)
                    outcomes.append(outcome)
                    on_finish(task, outcome)
                else:
                    still.append((task, job))
            pending = still
            if pending:
                time.sleep(self.settings.poll_s)
        return outcomes


def squeue_states() -> dict[str, str]:
    """{job_id: state} of this user's jobs that squeue lists; SymscaleError when squeue cannot answer."""
    try:
        out = subprocess.run(
            ["squeue", "--me", "--noheader", "--format=%i|%T"], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise SymscaleError(f"cannot check this study's SLURM jobs: squeue failed ({err})") from None
    if out.returncode != 0:
        raise SymscaleError(f"cannot check this study's SLURM jobs: squeue failed ({_last_line(out.stderr)})")
    states = {}
    for line in out.stdout.splitlines():
        job, _, state = line.strip().partition("|")
        if job:
            states[job] = state.strip()
    return states


class _QueueWatch:
    """Is a job done? Its result file is there, or squeue no longer lists it as live (one squeue call per
    poll, cached for `every_s`): submitit alone asks sacct, which a cluster without accounting cannot answer,
    and would wait forever for a job cancelled before it wrote a result."""

    def __init__(self, local: bool, every_s: float = 2.0):
        self.local = local
        self.every_s = every_s
        self._states: dict[str, str] = {}
        self._at = -1e9
        self._missing: dict[str, int] = {}

    def _state(self, job) -> str | None:
        if time.monotonic() - self._at > self.every_s:
            self._states, self._at = squeue_states(), time.monotonic()
        return self._states.get(str(job.job_id))

    def running(self, job) -> bool:
        return self.local or self._state(job) == "RUNNING"

    def done(self, job) -> bool:
        if self.local:
            return job.done()
        if job.paths.result_pickle.exists():
            return True
        if self._state(job) in LIVE_STATES:
            self._missing.pop(job.job_id, None)
            return False
        # gone from the queue: give the result file a few polls to appear (shared file systems lag)
        self._missing[job.job_id] = self._missing.get(job.job_id, 0) + 1
        return self._missing[job.job_id] > 3


def _last_line(err: Any) -> str:
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__


def _submitit_outcome(task: RunTask, job) -> RunOutcome:
    try:
        if not job.paths.result_pickle.exists() and not isinstance(job, _local_job_class()):
            raise RuntimeError("the job left the queue without a result")
        return job.result()
    except Exception as err:  # the job died (cancelled, node failure): the run directory says how far it got
        status = rundir.read_status(task.run_dir)
        if status["status"] in ("finished", "failed"):
            return RunOutcome(task.run_id, status["status"], status.get("reason"))
        reason = f"job {job.job_id} ended without a result: {_last_line(err)}"
        record_failure(task.run_dir, reason)
        return RunOutcome(task.run_id, "failed", reason)


def _local_job_class():
    import submitit

    return submitit.LocalJob


class CheckpointableRun:
    """The submitit callable: `execute_run` plus `checkpoint`, which submitit calls on preemption or timeout
    to requeue the same task; the requeued task resumes from the run's last checkpoint."""

    def __call__(self, task: RunTask) -> RunOutcome:
        return execute_run(task)

    def checkpoint(self, task: RunTask):
        import submitit

        log.info("requeueing run %s", task.run_id)
        return submitit.helpers.DelayedSubmission(CheckpointableRun(), task)
