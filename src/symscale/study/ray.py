"""The Ray engine: one Ray task per run with resource requests, each running `execute_run`.

On an existing cluster (`address`) or a local one started here; a task whose worker dies is retried by Ray
(`max_retries`) and resumes from the run's checkpoint.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

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


class RayExecutor:
    """Ray tasks with resource requests (cpus_per_run, gpus_per_run), on an existing cluster (`address`) or
    a local one started here. A task whose worker dies is retried by Ray (`max_retries`), resuming."""

    def __init__(self, settings: Any, threads: int | None = None):
        try:
            import ray  # noqa: F401
        except ImportError:
            raise SymscaleError(MISSING_EXTRA["ray"]) from None
        self.settings = settings
        self.threads = threads

    def run(self, tasks: list[RunTask], on_start: StartFn = noop, on_finish: FinishFn = noop) -> list[RunOutcome]:
        import ray

        s = self.settings
        started_here = not ray.is_initialized()
        if started_here:
            kwargs = {"address": s.address} if s.address else {"num_cpus": s.num_cpus}
            ray.init(**kwargs, include_dashboard=False, log_to_driver=False, configure_logging=False)
        try:
            remote = ray.remote(execute_run).options(
                num_cpus=s.cpus_per_run, num_gpus=s.gpus_per_run, max_retries=s.max_retries
            )
            threads = self.threads or max(1, int(s.cpus_per_run))
            pending = []
            for t in tasks:
                t = replace(t, threads=t.threads or threads)
                pending.append((t, remote.remote(t)))
                on_start(t)
            done = lambda ref: bool(ray.wait([ref], timeout=0)[0])
            return collect(pending, _ray_outcome, done, on_finish)
        finally:
            if started_here:
                ray.shutdown()


def _ray_outcome(task: RunTask, ref) -> RunOutcome:
    import ray

    try:
        return ray.get(ref)
    except ray.exceptions.RayError as err:
        reason = f"ray task failed: {type(err).__name__}"
        record_failure(task.run_dir, reason)
        return RunOutcome(task.run_id, "failed", reason)
