"""The SLURM engine: submitit job arrays, one run per array task, each running `execute_run`.

Preempted or timed-out tasks are requeued by submitit's checkpointing and resume from the run's checkpoint;
a requeued job keeps its scheduler token, so it takes over its own lock (`symscale.rundir`).
"""

from __future__ import annotations

import logging
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
    collect,
    execute_run,
    noop,
    record_failure,
)

log = logging.getLogger(__name__)


class SlurmExecutor:
    """submitit job arrays, one run per array task. Preempted or timed-out tasks are requeued by submitit's
    checkpointing and resume from the run's checkpoint. `local=True` uses submitit's local executor."""

    def __init__(self, folder: str | Path, settings: Any, threads: int | None = None):
        try:
            import submitit  # noqa: F401
        except ImportError:
            raise SymscaleError(MISSING_EXTRA["slurm"]) from None
        self.folder = Path(folder)
        self.settings = settings
        self.threads = threads

    def _executor(self):
        import submitit

        s = self.settings
        if s.local:
            ex = submitit.LocalExecutor(folder=self.folder, max_num_timeout=s.max_requeues)
            ex.update_parameters(timeout_min=s.time_min, gpus_per_node=0)
            return ex
        ex = submitit.AutoExecutor(folder=self.folder, max_num_timeout=s.max_requeues)
        params = {
            "timeout_min": s.time_min,
            "gpus_per_node": s.gpus_per_task,
            "cpus_per_task": s.cpus_per_task,
            "tasks_per_node": 1,
            "nodes": 1,
            "slurm_array_parallelism": s.array_parallelism,
        }
        extra = {"slurm_partition": s.partition, "mem_gb": s.mem_gb, "slurm_account": s.account}
        extra["slurm_constraint"] = s.constraint
        ex.update_parameters(**params, **{k: v for k, v in extra.items() if v is not None})
        return ex

    def run(self, tasks: list[RunTask], on_start: StartFn = noop, on_finish: FinishFn = noop) -> list[RunOutcome]:
        if not tasks:
            return []
        threads = self.threads or self.settings.cpus_per_task
        tasks = [replace(t, threads=t.threads or threads) for t in tasks]
        jobs = self._executor().map_array(CheckpointableRun(), tasks)
        log.info("submitted %d array tasks (first job id %s)", len(jobs), jobs[0].job_id)
        for t in tasks:
            on_start(t)
        if not self.settings.wait:
            return []
        return collect(list(zip(tasks, jobs)), _submitit_outcome, lambda j: j.done(), on_finish)


def _submitit_outcome(task: RunTask, job) -> RunOutcome:
    try:
        return job.result()
    except Exception as err:  # the job died (killed, node failure): the run directory says how far it got
        status = rundir.read_status(task.run_dir)
        if status["status"] in ("finished", "failed"):
            return RunOutcome(task.run_id, status["status"], status.get("reason"))
        reason = f"job {job.job_id} ended without a result: {str(err).strip().splitlines()[-1:] or err}"
        record_failure(task.run_dir, reason)
        return RunOutcome(task.run_id, "failed", reason)


class CheckpointableRun:
    """The submitit callable: `execute_run` plus `checkpoint`, which submitit calls on preemption or timeout
    to requeue the same task; the requeued task resumes from the run's last checkpoint."""

    def __call__(self, task: RunTask) -> RunOutcome:
        return execute_run(task)

    def checkpoint(self, task: RunTask):
        import submitit

        log.info("requeueing run %s", task.run_id)
        return submitit.helpers.DelayedSubmission(CheckpointableRun(), task)
