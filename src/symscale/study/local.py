"""The local engine: a pool of spawned worker processes on this machine, each running `execute_run`.

Each worker has its own torch thread count and, with GPUs, its own CUDA_VISIBLE_DEVICES slice. A worker
killed mid-run (SIGKILL, the OOM killer) is replaced and its run restarted from its checkpoint; workers die
with the study process.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing as mp
import os
import signal
import threading
import time
from dataclasses import replace
from multiprocessing.connection import wait as mp_wait

import torch

from symscale.study.executors import FinishFn, RunOutcome, RunTask, StartFn, execute_run, noop, record_failure

log = logging.getLogger(__name__)


class LocalExecutor:
    """A pool of `workers` spawned processes on this machine, each with `threads` torch threads (default
    cores // workers) and, with GPUs, its own CUDA_VISIBLE_DEVICES slice. A worker killed mid-run (SIGKILL,
    OOM killer) is replaced and its run restarted from its checkpoint up to `max_restarts` times, then
    recorded as failed with the signal; the other workers are not affected. Workers die with the study."""

    def __init__(self, workers: int = 1, threads: int | None = None, max_restarts: int = 1, gpus: int | None = None):
        self.workers = workers
        self.threads = threads or max(1, (os.cpu_count() or 1) // workers)
        self.max_restarts = max_restarts
        self.gpus = _count_gpus() if gpus is None else gpus

    def run(self, tasks: list[RunTask], on_start: StartFn = noop, on_finish: FinishFn = noop) -> list[RunOutcome]:
        if not tasks:
            return []
        pool = _WorkerPool(min(self.workers, max(1, len(tasks))), self.threads, self.gpus)
        try:
            return pool.drive(list(tasks), self.max_restarts, on_start, on_finish)
        finally:
            pool.close()


def _count_gpus() -> int:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip()])
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _worker_main(conn, threads: int, gpu_ids: str | None, parent_pid: int) -> None:
    """Body of a local worker: receive tasks, execute them, send outcomes; die with the parent."""
    _die_with_parent(parent_pid)
    if gpu_ids is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu_ids
    os.environ["OMP_NUM_THREADS"] = str(threads)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C
    while True:
        try:
            task = conn.recv()
        except EOFError:
            return
        if task is None:
            return
        conn.send(execute_run(replace(task, threads=task.threads or threads)))


def _die_with_parent(parent_pid: int) -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG

    def watch():
        while True:
            time.sleep(1.0)
            if os.getppid() != parent_pid:
                os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="symscale-parent-watch", daemon=True).start()


class _Worker:
    def __init__(self, ctx, threads: int, gpu_ids: str | None):
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_worker_main, args=(child, threads, gpu_ids, os.getpid()), daemon=True)
        self.process.start()
        child.close()
        self.task: RunTask | None = None
        self.gpu_ids = gpu_ids


class _WorkerPool:
    def __init__(self, n: int, threads: int, gpus: int):
        self.ctx = mp.get_context("spawn")
        self.threads = threads
        slices = [str(i % gpus) for i in range(n)] if gpus else [None] * n
        self.workers = [_Worker(self.ctx, threads, s) for s in slices]

    def drive(self, queue: list[RunTask], max_restarts: int, on_start: StartFn, on_finish: FinishFn):
        outcomes, restarts = [], {}
        while queue or any(w.task for w in self.workers):
            for w in self.workers:
                if w.task is None and queue:
                    w.task = queue.pop(0)
                    on_start(w.task)
                    w.conn.send(w.task)
            busy = [w for w in self.workers if w.task is not None]
            ready = mp_wait([w.conn for w in busy] + [w.process.sentinel for w in busy])
            for w in busy:
                if w.conn not in ready and w.process.sentinel not in ready:
                    continue
                outcome = self._receive(w)
                if outcome is None:
                    outcome = self._replace_dead(w, queue, restarts, max_restarts)
                task, w.task = w.task, None
                if outcome is not None:
                    outcomes.append(outcome)
                    on_finish(task, outcome)
        return outcomes

    @staticmethod
    def _receive(w: _Worker) -> RunOutcome | None:
        try:
            if w.conn.poll():
                return w.conn.recv()
        except (EOFError, OSError):
            pass
        return None

    def _replace_dead(self, w: _Worker, queue: list[RunTask], restarts: dict, max_restarts: int):
        task = w.task
        w.process.join(timeout=5)
        code = w.process.exitcode
        reason = f"worker killed by signal {-code}" if code is not None and code < 0 else f"worker exited ({code})"
        log.warning("run %s: %s", task.run_id, reason)
        self.workers[self.workers.index(w)] = _Worker(self.ctx, self.threads, w.gpu_ids)
        restarts[task.run_id] = restarts.get(task.run_id, 0) + 1
        if restarts[task.run_id] <= max_restarts:
            queue.insert(0, task)  # resume from its checkpoint next
            return None
        record_failure(task.run_dir, reason)
        return RunOutcome(task.run_id, "failed", reason, 0.0, {"pid": w.process.pid})

    def close(self) -> None:
        for w in self.workers:
            with contextlib.suppress(OSError, BrokenPipeError):
                w.conn.send(None)
        for w in self.workers:
            w.process.join(timeout=5)
            if w.process.is_alive():
                w.process.kill()
