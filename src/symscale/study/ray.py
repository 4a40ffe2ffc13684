"""The Ray engine: one Ray task per run with resource requests, each running `execute_run`.

On an existing cluster (`address`, e.g. `auto`) or a local one started here; a task whose worker dies is
retried by Ray (`max_retries`) and resumes from the run's checkpoint. `workers` (the CLI's `--workers`, or the
spec's `executor.workers`) bounds the runs in flight at once; without it the cluster's resources decide.

A run's task is a Ray generator: it yields once when it starts on a worker and then its outcome, so the study
prints "start" when a run starts, not when it is queued.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

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

STARTED = "started"  # what a run's task yields first, on its worker


def run_task(task: RunTask):
    """The body of a run's Ray task: say it started, then run it."""
    yield STARTED
    yield execute_run(task)


class RayExecutor:
    """Ray tasks with resource requests (cpus_per_run, gpus_per_run), on an existing cluster (`address`) or
    a local one started here; at most `workers` runs in flight (None: as the resources allow). A task whose
    worker dies is retried by Ray (`max_retries`), resuming from the run's checkpoint."""

    def __init__(self, settings: Any, threads: int | None = None, workers: int | None = None):
        try:
            import ray  # noqa: F401
        except ImportError:
            raise SymscaleError(MISSING_EXTRA["ray"]) from None
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
            raise SymscaleError.invalid("workers", workers, "an integer >= 1 (runs in flight at once)")
        self.settings = settings
        self.threads = threads
        self.workers = workers

    def run(self, tasks: list[RunTask], on_start: StartFn = noop, on_finish: FinishFn = noop) -> list[RunOutcome]:
        import ray

        if not tasks:
            return []
        started_here = not ray.is_initialized()
        if started_here:
            _init(self.settings)
        try:
            return self._drive(list(tasks), on_start, on_finish)
        finally:
            if started_here:
                ray.shutdown()

    def _drive(self, queue: list[RunTask], on_start: StartFn, on_finish: FinishFn) -> list[RunOutcome]:
        import ray

        s = self.settings
        remote = ray.remote(run_task).options(
            num_cpus=s.cpus_per_run, num_gpus=s.gpus_per_run, max_retries=s.max_retries, num_returns="streaming"
        )
        threads = self.threads or max(1, int(s.cpus_per_run))
        limit = self.workers or len(queue)
        flight: list[_Flight] = []
        outcomes: list[RunOutcome] = []
        while queue or flight:
            while queue and len(flight) < limit:
                task = queue.pop(0)
                task = replace(task, threads=task.threads or threads)
                flight.append(_Flight(task, remote.remote(task)))
            for f in flight:
                f.poll(on_start)
            for f in [f for f in flight if f.outcome is not None]:
                flight.remove(f)
                outcomes.append(f.outcome)
                on_finish(f.task, f.outcome)
            if flight and all(f.outcome is None for f in flight):
                time.sleep(0.2)
        return outcomes


class _Flight:
    """A run's task in flight: its generator, whether it has started, and its outcome once done."""

    def __init__(self, task: RunTask, gen):
        self.task, self.gen = task, gen
        self.started = False
        self.outcome: RunOutcome | None = None

    def poll(self, on_start: StartFn) -> None:
        import ray

        while self.outcome is None:
            ready, _ = ray.wait([self.gen], timeout=0)
            if not ready:
                return
            try:
                value = ray.get(next(self.gen))
            except StopIteration:
                value = RunOutcome(self.task.run_id, "failed", "ray task ended without an outcome")
            except ray.exceptions.RayError as err:
                value = _failed(self.task, err)
            if value == STARTED:
                if not self.started:  # a retried task says it started again
                    self.started = True
                    on_start(self.task)
                continue
            if not self.started:
                self.started = True
                on_start(self.task)
            self.outcome = value


def _failed(task: RunTask, err: Exception) -> RunOutcome:
    reason = f"ray task failed: {type(err).__name__}"
    record_failure(task.run_dir, reason)
    return RunOutcome(task.run_id, "failed", reason)


def _init(s: Any) -> None:
    """ray.init on the spec's cluster, or a local one; one line (SymscaleError) when there is none."""
    import ray

    kwargs = {"address": s.address} if s.address else {"num_cpus": s.num_cpus}
    try:
        ray.init(**kwargs, include_dashboard=False, log_to_driver=False, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise SymscaleError(
            f"no Ray cluster at executor.ray.address {s.address!r}: {first} "
            "(start one with `ray start --head`, or leave address out to start a local one)"
        ) from None
