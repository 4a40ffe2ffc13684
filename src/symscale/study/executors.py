"""Executors: one interface, three engines (local worker processes, SLURM through submitit, Ray).

Every engine ends up calling `execute_run(task)` somewhere: it takes the run's lock (`runs/<id>.lock`,
beside the run directory, holding the pid, host and job of its owner), skips a finished run, calls the run
function (by default `train_run`, which resumes from the run's checkpoint) and reads the run's `status.json`
back. The lock makes a run single-owner even when two studies, a requeued SLURM job and a Ray retry race for
it; a lock whose owner is dead is stale and is broken atomically (renamed away by exactly one claimant).

    executor = make_executor(spec.executor, study_dir)
    outcomes = executor.run(tasks, on_start=..., on_finish=...)
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import multiprocessing as mp
import os
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from multiprocessing.connection import wait as mp_wait
from pathlib import Path
from typing import Any

from symscale.errors import SymscaleError

log = logging.getLogger(__name__)

DEFAULT_RUN_FN = "symscale.study.executors:train_from_config"
LOCK_SUFFIX = ".lock"  # the lock of runs/<id>/ is runs/<id>.lock (the run directory belongs to the run)
HEARTBEAT_S = 20.0  # the lock owner touches its lock this often
STALE_AFTER_S = 600.0  # a lock from another host untouched this long is stale

MISSING_EXTRA = {
    "slurm": "the slurm executor needs submitit: pip install 'symscale[slurm]'",
    "ray": "the ray executor needs ray: pip install 'symscale[ray]'",
}


@dataclass(frozen=True)
class RunTask:
    """One run to execute: where it lives and its resolved configuration (a plain, JSON-able dict)."""

    run_id: str
    run_dir: str
    config: dict[str, Any]
    run_fn: str = DEFAULT_RUN_FN  # "module:function" called as fn(config: dict, run_dir: Path)
    threads: int | None = None  # torch intra-op threads (None: leave as is)
    estimated_flops: float = 0.0  # 3 kappa N D, used for the ETA


@dataclass(frozen=True)
class RunOutcome:
    """How an execution of a run ended: finished | failed | busy (locked by a live owner) | interrupted."""

    run_id: str
    status: str
    reason: str | None = None
    wall_s: float = 0.0
    worker: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- run status and lock


def read_status(run_dir: str | Path) -> dict[str, Any]:
    """The run's status.json ({"status": ...}); {"status": "pending"} when absent or unreadable."""
    path = Path(run_dir) / "status.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {"status": "pending", "reason": None}


def write_status(run_dir: str | Path, status: str, reason: str | None) -> None:
    """Atomically write status.json (used when a run dies before it can record its own failure)."""
    old = read_status(run_dir)
    old.update(status=status, reason=reason, updated=time.time())
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    _atomic_write(Path(run_dir) / "status.json", json.dumps(old, indent=1))


def reset_for_retry(run_dir: str | Path) -> None:
    """Make a failed run retryable: status pending; a run that died before the training loop wrote its
    config.yaml loses the files the study wrote for it, so that the loop starts it in an empty directory."""
    run_dir = Path(run_dir)
    if (run_dir / "config.yaml").exists():
        write_status(run_dir, "pending", "retrying a failed run")
        return
    for name in ("status.json", "error.txt"):
        with contextlib.suppress(FileNotFoundError):
            (run_dir / name).unlink()


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _owner_token() -> str:
    """The scheduler job this process belongs to (a requeued job keeps its token), or ''."""
    env = os.environ
    if "SLURM_ARRAY_JOB_ID" in env:
        return f"slurm:{env['SLURM_ARRAY_JOB_ID']}_{env.get('SLURM_ARRAY_TASK_ID', '')}"
    if "SLURM_JOB_ID" in env:
        return f"slurm:{env['SLURM_JOB_ID']}"
    return ""


def lock_path(run_dir: str | Path) -> Path:
    """Where the lock of a run directory lives: beside it, so that the run directory holds only the run."""
    run_dir = Path(run_dir)
    return run_dir.with_name(run_dir.name + LOCK_SUFFIX)


def _pid_alive(pid: int) -> bool:
    """True when `pid` is a live process on this host (a zombie, killed but not reaped, is dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS): trust kill(0)
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


class RunLock:
    """An exclusive per-run lock file {pid, host, owner, started}, created with O_EXCL and kept fresh by a
    heartbeat thread. Stale when its owner is dead: same host and pid gone, same scheduler job (a requeued
    job taking over), or no heartbeat for `STALE_AFTER_S`."""

    def __init__(self, run_dir: str | Path):
        self.path = lock_path(run_dir)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def holder(self) -> dict[str, Any] | None:
        try:
            info = json.loads(self.path.read_text())
            info["age_s"] = time.time() - self.path.stat().st_mtime
            return info
        except (OSError, ValueError):
            return None

    def is_stale(self, info: dict[str, Any]) -> bool:
        if info.get("host") == socket.gethostname():
            return info.get("pid") == os.getpid() or not _pid_alive(int(info.get("pid", -1)))
        token = _owner_token()
        if token and info.get("owner") == token:
            return True
        return info.get("age_s", 0.0) > STALE_AFTER_S

    def acquire(self) -> bool:
        """Take the lock (breaking a stale one); False when a live owner holds it."""
        for _ in range(3):
            if self._create():
                self._start_heartbeat()
                return True
            info = self.holder()
            if info is not None and not self.is_stale(info):
                return False
            self._break()
        return False

    def _create(self) -> bool:
        info = {"pid": os.getpid(), "host": socket.gethostname(), "owner": _owner_token(), "started": time.time()}
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as fh:
            json.dump(info, fh)
        return True

    def _break(self) -> None:
        # rename is atomic: of several claimants breaking the same stale lock, one succeeds
        graveyard = self.path.with_name(f".{self.path.name}.stale.{socket.gethostname()}.{os.getpid()}")
        with contextlib.suppress(FileNotFoundError):
            os.rename(self.path, graveyard)
            log.info("broke stale lock %s", self.path)
            graveyard.unlink()

    def _start_heartbeat(self) -> None:
        def beat():
            while not self._stop.wait(HEARTBEAT_S):
                with contextlib.suppress(OSError):
                    os.utime(self.path)

        self._thread = threading.Thread(target=beat, name="symscale-lock-heartbeat", daemon=True)
        self._thread.start()

    def release(self) -> None:
        self._stop.set()
        info = self.holder()
        if info is not None and info.get("pid") == os.getpid() and info.get("host") == socket.gethostname():
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()


# ---------------------------------------------------------------- one run


def resolve_run_fn(path: str) -> Callable[[dict[str, Any], Path], Any]:
    """Import "module:function"."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def train_from_config(config: dict[str, Any], run_dir: Path) -> None:
    """The default run function: validate the dict as a RunConfig and train (resuming if possible)."""
    from symscale.config import RunConfig
    from symscale.train.loop import train_run

    train_run(RunConfig.from_dict(config), run_dir, progress=False)


def _set_threads(threads: int | None) -> None:
    """Torch intra-op threads of this process (torch is imported by the run function when it needs it; the
    run configuration carries `threads` too, and OMP_NUM_THREADS is set in local workers)."""
    torch = sys.modules.get("torch")
    if threads is None or torch is None:
        return
    torch.set_num_threads(threads)


def execute_run(task: RunTask) -> RunOutcome:
    """Run one task under its lock and return how it ended. A finished run returns at once; an exception in
    the run function is recorded in status.json (status failed, with the reason) and does not propagate."""
    t0 = time.monotonic()
    run_dir = Path(task.run_dir)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    worker = {"pid": os.getpid(), "host": socket.gethostname()}
    if read_status(run_dir).get("status") == "finished":
        return RunOutcome(task.run_id, "finished", None, 0.0, worker)
    lock = RunLock(run_dir)
    if not lock.acquire():
        holder = lock.holder() or {}
        reason = f"locked by pid {holder.get('pid')} on {holder.get('host')}"
        return RunOutcome(task.run_id, "busy", reason, 0.0, worker)
    try:
        status = _call_run_fn(task, run_dir)
    finally:
        lock.release()
    return RunOutcome(task.run_id, status["status"], status.get("reason"), time.monotonic() - t0, worker)


def _call_run_fn(task: RunTask, run_dir: Path) -> dict[str, Any]:
    if read_status(run_dir).get("status") == "finished":  # finished by another owner before we got the lock
        return read_status(run_dir)
    _set_threads(task.threads)
    config = task.config if task.threads is None else {**task.config, "threads": task.threads}
    try:
        resolve_run_fn(task.run_fn)(config, run_dir)
    except Exception as err:  # the run failed: record why, the study goes on with the others
        log.warning("run %s failed: %s", task.run_id, err)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "error.txt").write_text(traceback.format_exc())
        if read_status(run_dir).get("status") != "failed":
            write_status(run_dir, "failed", f"{type(err).__name__}: {err}")
    status = read_status(run_dir)
    if status.get("status") not in ("finished", "failed"):
        status = {"status": "interrupted", "reason": f"run function returned with status {status.get('status')}"}
    return status


# ---------------------------------------------------------------- engines

StartFn = Callable[[RunTask], None]
FinishFn = Callable[[RunTask, RunOutcome], None]


def _noop(*args: Any) -> None:
    return None


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

    def run(self, tasks: list[RunTask], on_start: StartFn = _noop, on_finish: FinishFn = _noop) -> list[RunOutcome]:
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
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except ImportError:
        return 0


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
        import ctypes

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
        if read_status(task.run_dir).get("status") != "finished":
            write_status(task.run_dir, "failed", reason)
        return RunOutcome(task.run_id, "failed", reason, 0.0, {"pid": w.process.pid})

    def close(self) -> None:
        for w in self.workers:
            with contextlib.suppress(OSError, BrokenPipeError):
                w.conn.send(None)
        for w in self.workers:
            w.process.join(timeout=5)
            if w.process.is_alive():
                w.process.kill()


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

    def run(self, tasks: list[RunTask], on_start: StartFn = _noop, on_finish: FinishFn = _noop) -> list[RunOutcome]:
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
        return _collect(list(zip(tasks, jobs)), _submitit_outcome, lambda j: j.done(), on_finish)


def _submitit_outcome(task: RunTask, job) -> RunOutcome:
    try:
        return job.result()
    except Exception as err:  # the job died (killed, node failure): the run directory says how far it got
        status = read_status(task.run_dir)
        if status.get("status") in ("finished", "failed"):
            return RunOutcome(task.run_id, status["status"], status.get("reason"))
        reason = f"job {job.job_id} ended without a result: {str(err).strip().splitlines()[-1:] or err}"
        write_status(task.run_dir, "failed", reason)
        return RunOutcome(task.run_id, "failed", reason)


def _collect(pending: list, outcome_of: Callable, is_done: Callable, on_finish: FinishFn, poll_s: float = 0.5):
    outcomes = []
    while pending:
        still = []
        for task, handle in pending:
            if is_done(handle):
                outcome = outcome_of(task, handle)
                outcomes.append(outcome)
                on_finish(task, outcome)
            else:
                still.append((task, handle))
        pending = still
        if pending:
            time.sleep(poll_s)
    return outcomes


class CheckpointableRun:
    """The submitit callable: `execute_run` plus `checkpoint`, which submitit calls on preemption or timeout
    to requeue the same task; the requeued task resumes from the run's last checkpoint."""

    def __call__(self, task: RunTask) -> RunOutcome:
        return execute_run(task)

    def checkpoint(self, task: RunTask):
        import submitit

        log.info("requeueing run %s", task.run_id)
        return submitit.helpers.DelayedSubmission(CheckpointableRun(), task)


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

    def run(self, tasks: list[RunTask], on_start: StartFn = _noop, on_finish: FinishFn = _noop) -> list[RunOutcome]:
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
            return _collect(pending, _ray_outcome, done, on_finish)
        finally:
            if started_here:
                ray.shutdown()


def _ray_outcome(task: RunTask, ref) -> RunOutcome:
    import ray

    try:
        return ray.get(ref)
    except ray.exceptions.RayError as err:
        reason = f"ray task failed: {type(err).__name__}"
        if read_status(task.run_dir).get("status") != "finished":
            write_status(task.run_dir, "failed", reason)
        return RunOutcome(task.run_id, "failed", reason)


def make_executor(settings: Any, study_dir: str | Path, *, kind: str | None = None, workers: int | None = None):
    """The executor the spec's `executor` section asks for (`kind` and `workers` override it)."""
    kind = kind or settings.kind
    if kind == "local":
        n = workers or settings.workers
        return LocalExecutor(n, settings.threads_per_worker, settings.max_restarts)
    if kind == "slurm":
        return SlurmExecutor(Path(study_dir) / "slurm", settings.slurm, settings.threads_per_worker)
    if kind == "ray":
        return RayExecutor(settings.ray, settings.threads_per_worker)
    raise SymscaleError.invalid("executor", kind, "local, slurm or ray")
