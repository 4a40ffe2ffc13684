"""The run directory: the one owner of its layout, status, metrics log, plan, lock and record.

Every process that writes or reads a run goes through this module: the training loop (`symscale train` and
every study worker), the study's engines, the catalogue, `symscale runs` and the report. A run directory:

    config.yaml      the resolved RunConfig
    stats.json       DatasetStats of the training prefix
    run.json         arch, width, N, kappa, seed, mode, prefix, dataset, steps, FLOP model, provenance
    metrics.jsonl    one JSON line per evaluation, appended (see `train.loop.METRIC_KEYS`)
    status.json      the status schema below
    checkpoints/     last.pt, final.pt
    train.log        progress lines
    error.txt        the traceback of a run function that raised (study runs only)

and beside it, so that the directory itself holds only what the loop writes:

    <run>.plan.json  the study's record of a run before it starts: grid coordinates and configuration
    <run>.lock       the lock of the run: {pid, host, owner, started}, its mtime the owner's heartbeat

Status schema (status.json), one for every writer: `{"status": STATUS, "reason": str | None, "updated_utc":
ISO-8601 UTC to the second, "step": int, "total_steps": int, "config_hash": str}`; the last three are kept
from the previous status when a later writer (an engine recording a dead worker) does not know them. A run
with no readable status.json is "pending". Older files with an epoch `updated` read the same.

Writes are atomic: a unique temporary file beside the target, fsynced, then renamed over it, so that a crash
or a full disk leaves either the old file or the new one, and a leftover temporary file (even a 0-byte one)
never blocks a later write. `atomic_path` / `atomic_file` are the package's one atomic writer (checkpoints,
user output files, datasets, the catalogue, the report use them too): on any exception the temporary file
is removed. The metrics log is append-only; its reader skips a torn last line (a run killed
mid-write, a full disk) and `repair_metrics` cuts it off before the loop appends again.

A lock is stale when its owner is gone (same host and pid dead, or the same scheduler job requeued) or when
its heartbeat is older than `STALE_AFTER_S`, whatever process the pid now names: a pid reused after a reboot
or in another container cannot hold a run forever. A live owner touches its lock every `HEARTBEAT_S`.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from symscale.errors import SymscaleError
from symscale.quantities import device_hours, finite, implied_kappa

log = logging.getLogger(__name__)

# ---------------------------------------------------------------- layout

CONFIG = "config.yaml"
STATS = "stats.json"
RUN_INFO = "run.json"
METRICS = "metrics.jsonl"
STATUS = "status.json"
CHECKPOINTS = "checkpoints"
TRAIN_LOG = "train.log"
ERROR = "error.txt"
PLAN_SUFFIX = ".plan.json"
LOCK_SUFFIX = ".lock"

STATUSES = ("pending", "running", "finished", "failed")  # pending: planned or not yet started
# the reason of a run stopped by a write the file system refused (disk full, quota, read-only): recorded as
# failed, but not the run's fault, so a study resumes it from its last checkpoint without --retry-failed
STOPPED_BY_FILESYSTEM = "stopped by the file system: "
HEARTBEAT_S = 20.0  # a lock's owner touches it this often
STALE_AFTER_S = 600.0  # a lock whose heartbeat is older than this is stale, whoever its pid names now


def plan_path(run_dir: str | os.PathLike) -> Path:
    """`runs/<id>.plan.json`: the study's record of a run, beside its directory."""
    run_dir = _absolute(run_dir)
    return run_dir.with_name(run_dir.name + PLAN_SUFFIX)


def lock_path(run_dir: str | os.PathLike) -> Path:
    """`runs/<id>.lock`: the lock of a run directory, beside it."""
    run_dir = _absolute(run_dir)
    return run_dir.with_name(run_dir.name + LOCK_SUFFIX)


def _absolute(run_dir: str | os.PathLike) -> Path:
    path = Path(run_dir)
    return path if path.name else path.resolve()  # "." has no name to put a sibling beside


# ---------------------------------------------------------------- atomic writes


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str = ".tmp", companions: tuple[str, ...] = ()) -> Iterator[Path]:
    """The one atomic writer of the package: a unique temporary file beside `path` (created empty, named
    `.<name>.<random><suffix>`) for the block to fill; when the block ends normally it is fsynced and renamed
    over `path`. When anything is raised (a full disk, a bad record, Ctrl-C) the temporary file is removed
    and `path` is left as it was. The files its writer leaves beside it (`companions`: suffixes such as
    "-lock", "-journal") are removed either way. An OSError that names no file or names the temporary one
    is raised again naming `path`.

        with atomic_path(out) as tmp:
            write_something(tmp)
    """
    path = Path(path)
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    except OSError as err:
        raise _naming(err, path, None) from None
    tmp = Path(name)
    with contextlib.suppress(OSError):  # mkstemp's 0600 would make a user's file private
        os.fchmod(fd, _mode_for(path))
    os.close(fd)
    leftovers = [Path(f"{tmp}{c}") for c in companions]
    try:
        yield tmp
        _remove(leftovers)
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException as err:
        _remove([tmp, *leftovers])
        named = _naming(err, path, tmp) if isinstance(err, OSError) else err
        if named is err:
            raise
        raise named from err
    with contextlib.suppress(OSError):  # durability of the new name only: some network mounts cannot
        _fsync(path.parent)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """An open file (text "w" or binary "wb") that replaces `path` atomically when the block ends normally;
    on any exception `path` is left as it was and nothing is left behind (see `atomic_path`)."""
    with atomic_path(path) as tmp, open(tmp, mode) as fh:
        yield fh
        fh.flush()
        os.fsync(fh.fileno())


def _mode_for(path: Path) -> int:
    """The permission bits of a new `path`: those of the file it replaces, else 0666 less the umask."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        umask = os.umask(0o022)  # read it (there is no other way), then put it back
        os.umask(umask)
        return 0o666 & ~umask


def _remove(paths: list[Path]) -> None:
    for p in paths:
        with contextlib.suppress(OSError):  # gone already, or a read-only file system that refuses even this
            p.unlink()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _naming(err: OSError, path: Path, tmp: Path | None) -> OSError:
    """`err` as an OSError of the same errno (and class) that names `path`, the file the user asked for."""
    if err.errno is None or (err.filename is not None and (tmp is None or str(err.filename) != str(tmp))):
        return err
    return OSError(err.errno, err.strerror or os.strerror(err.errno), str(path))


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` atomically (`atomic_file`). Raises SymscaleError naming the path when the disk
    is full or the file system refuses; `path` is then left as it was and nothing is left behind."""
    path = Path(path)
    try:
        with atomic_file(path) as fh:
            fh.write(text)
    except OSError as err:
        raise SymscaleError(f"could not write {path}: {err.strerror or err}") from None


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """`obj` as indented JSON, written atomically (see `write_text`)."""
    write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def read_json(path: str | os.PathLike) -> dict[str, Any]:
    """A JSON object file; {} when missing, unreadable or not an object."""
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


# ---------------------------------------------------------------- status


def utc_now() -> str:
    """The status timestamp: ISO-8601 UTC to the second."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def read_status(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The run's status.json; {"status": "pending", "reason": None} when absent or unreadable."""
    status = read_json(Path(run_dir) / STATUS)
    if status.get("status") not in STATUSES:
        return {"status": "pending", "reason": None}
    return status


def stopped_by_filesystem(status: dict[str, Any]) -> bool:
    """True for a run that failed only because the file system refused a write (`STOPPED_BY_FILESYSTEM`):
    to be resumed, not left failed."""
    return status.get("status") == "failed" and str(status.get("reason") or "").startswith(STOPPED_BY_FILESYSTEM)


def write_status(run_dir: str | os.PathLike, status: str, reason: str | None = None, **extra: Any) -> None:
    """Record the run's status (schema in the module docstring); keeps step, total_steps and config_hash
    from the previous status unless given."""
    if status not in STATUSES:
        raise ValueError(f"unknown run status {status!r}")  # a programming error, not user input
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    old = read_json(run_dir / STATUS)
    kept = {k: old[k] for k in ("step", "total_steps", "config_hash") if k in old}
    write_json(run_dir / STATUS, {**kept, "status": status, "reason": reason, "updated_utc": utc_now(), **extra})


# ---------------------------------------------------------------- metrics log


def _complete_lines(data: bytes) -> Iterator[tuple[int, dict]]:
    """(end offset, row) of every decodable line; stops at the first torn or undecodable one."""
    offset = 0
    for raw in data.splitlines(keepends=True):
        end = offset + len(raw)
        if not raw.endswith(b"\n") and raw.strip():
            return  # torn: a write that never finished
        text = raw.strip()
        if text:
            try:
                row = json.loads(text)
            except ValueError:
                return
            if not isinstance(row, dict):
                return
            yield end, row
        offset = end


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The run's evaluation lines, oldest first; [] when none. A torn last line is skipped (never an error);
    the reader writes nothing (see `repair_metrics`)."""
    try:
        data = (Path(run_dir) / METRICS).read_bytes()
    except OSError:
        return []
    return [_current_names(row) for _, row in _complete_lines(data)]


def _current_names(row: dict[str, Any]) -> dict[str, Any]:
    """A metrics line with its deprecated keys under their names of today (`fraction` is `run_fraction`)."""
    if "fraction" in row and "run_fraction" not in row:
        row["run_fraction"] = row.pop("fraction")
    return row


def _whole_length(data: bytes) -> int:
    good = 0
    for end, _ in _complete_lines(data):
        good = end
    return good


def torn_bytes(run_dir: str | os.PathLike) -> int:
    """How many bytes of metrics.jsonl follow its last whole line (0 when the log is whole or absent)."""
    try:
        data = (Path(run_dir) / METRICS).read_bytes()
    except OSError:
        return 0
    return len(data) - _whole_length(data)


def repair_metrics(run_dir: str | os.PathLike) -> int:
    """Cut a torn tail off metrics.jsonl (in place, atomically) so that appends start on a fresh line;
    returns the number of bytes dropped (0 when the log was whole or absent)."""
    path = Path(run_dir) / METRICS
    try:
        data = path.read_bytes()
    except OSError:
        return 0
    good = _whole_length(data)
    if good == len(data):
        return 0
    log.warning("%s: dropped a torn tail of %d bytes", path, len(data) - good)
    write_text(path, data[:good].decode())
    return len(data) - good


def keep_metrics(run_dir: str | os.PathLike, last_step: int) -> None:
    """Rewrite metrics.jsonl with the lines up to `last_step` (a resumed run recomputes the later ones)."""
    kept = [m for m in read_metrics(run_dir) if m.get("step", 0) <= last_step]
    write_text(Path(run_dir) / METRICS, "".join(json.dumps(m) + "\n" for m in kept))


def append_metrics(run_dir: str | os.PathLike, line: dict[str, Any]) -> None:
    """Append one evaluation line and fsync it."""
    path = Path(run_dir) / METRICS
    try:
        with open(path, "a") as fh:
            fh.write(json.dumps(line) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as err:
        raise SymscaleError(f"could not append to {path}: {err.strerror or err}") from None


# ---------------------------------------------------------------- plan


def write_plan(run_dir: str | os.PathLike, plan: dict[str, Any]) -> None:
    """Write the study's plan of a run (only when it changed, so that the catalogue's signature stays)."""
    path = plan_path(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(plan, indent=1, sort_keys=True, default=str)
    with contextlib.suppress(OSError):
        if path.read_text() == text:
            return
    write_text(path, text)


def read_plan(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The study's plan of a run ({} for a run made by `symscale train`). An older plan's `fraction` is
    read as `prefix`."""
    plan = read_json(plan_path(run_dir))
    if "prefix" not in plan and "fraction" in plan:
        plan["prefix"] = plan.pop("fraction")
    return plan


# ---------------------------------------------------------------- lock


def _owner_token() -> str:
    """The scheduler job this process belongs to (a requeued job keeps its token), or ''."""
    env = os.environ
    if "SLURM_ARRAY_JOB_ID" in env:
        return f"slurm:{env['SLURM_ARRAY_JOB_ID']}_{env.get('SLURM_ARRAY_TASK_ID', '')}"
    if "SLURM_JOB_ID" in env:
        return f"slurm:{env['SLURM_JOB_ID']}"
    return ""


def pid_alive(pid: int) -> bool:
    """True when `pid` is a live process on this host (a zombie, killed but not reaped, is dead)."""
    if pid <= 0:
        return False
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


_HELD: dict[Path, int] = {}  # locks this process holds -> how many times acquired (re-entrant)
_HELD_GUARD = threading.Lock()


class RunLock:
    """The exclusive lock of one run directory, a file created with O_EXCL beside it and kept fresh by a
    heartbeat thread. Re-entrant within a process (a study worker holds it, the loop it calls takes it
    again). Stale rules in the module docstring.

        with RunLock(out).held():   # raises SymscaleError when a live owner holds it
            ...
    """

    def __init__(self, run_dir: str | os.PathLike):
        self.path = Path(os.path.abspath(lock_path(run_dir)))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def holder(self) -> dict[str, Any] | None:
        """The owner's record plus `age_s` (seconds since its last heartbeat); None when unlocked."""
        try:
            info = json.loads(self.path.read_text())
            info["age_s"] = time.time() - self.path.stat().st_mtime
        except (OSError, ValueError, TypeError):
            return None
        return info if isinstance(info, dict) else None

    @staticmethod
    def is_stale(info: dict[str, Any]) -> bool:
        """True when the lock described by `info` (from `holder`) has no live owner."""
        if info.get("age_s", 0.0) > STALE_AFTER_S:
            return True  # no heartbeat: whoever the pid names now is not the owner
        if info.get("host") == socket.gethostname():
            try:
                pid = int(info.get("pid", -1))
            except (TypeError, ValueError):
                return True
            return pid == os.getpid() or not pid_alive(pid)  # our own pid: left behind, we do not hold it
        token = _owner_token()
        return bool(token) and info.get("owner") == token

    def acquire(self) -> bool:
        """Take the lock (breaking a stale one); False when a live owner holds it."""
        with _HELD_GUARD:
            if self.path in _HELD:
                _HELD[self.path] += 1
                return True
        for _ in range(3):
            if self._create():
                with _HELD_GUARD:
                    _HELD[self.path] = 1
                self._start_heartbeat()
                return True
            info = self.holder()
            if info is not None and not self.is_stale(info):
                return False
            self._break()
        return False

    def release(self) -> None:
        """Give the lock up (the file goes when the outermost holder in this process releases it)."""
        with _HELD_GUARD:
            count = _HELD.get(self.path, 0) - 1
            if count > 0:
                _HELD[self.path] = count
                return
            _HELD.pop(self.path, None)
        self._stop.set()
        info = self.holder()
        if info is not None and info.get("pid") == os.getpid() and info.get("host") == socket.gethostname():
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    @contextlib.contextmanager
    def held(self) -> Iterator[RunLock]:
        """Hold the lock for a block; SymscaleError naming the owner when it is busy."""
        if not self.acquire():
            raise SymscaleError(f"run directory {self.path.with_suffix('')} is in use: {self.describe()}")
        try:
            yield self
        finally:
            self.release()

    def describe(self) -> str:
        """Who holds the lock, in words."""
        info = self.holder() or {}
        return f"locked by pid {info.get('pid')} on {info.get('host')} ({self.path})"

    def _create(self) -> bool:
        info = {"pid": os.getpid(), "host": socket.gethostname(), "owner": _owner_token(), "started": utc_now()}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(info, fh)
        except OSError as err:  # a full or read-only disk: no half-written lock left behind, the path named
            with contextlib.suppress(OSError):
                self.path.unlink()
            raise SymscaleError(f"cannot take the lock {self.path}: {err.strerror or err}") from None
        return True

    def _break(self) -> None:
        # rename is atomic: of several claimants breaking the same stale lock, one succeeds
        graveyard = self.path.with_name(f".{self.path.name}.stale.{socket.gethostname()}.{os.getpid()}")
        with contextlib.suppress(FileNotFoundError):
            os.rename(self.path, graveyard)
            log.info("broke stale lock %s", self.path)
            graveyard.unlink()

    def _start_heartbeat(self) -> None:
        self._stop.clear()

        def beat() -> None:
            while not self._stop.wait(HEARTBEAT_S):
                with contextlib.suppress(OSError):
                    os.utime(self.path)

        self._thread = threading.Thread(target=beat, name="symscale-lock-heartbeat", daemon=True)
        self._thread.start()


# ---------------------------------------------------------------- the record of a run


@dataclass(frozen=True)
class RunRecord:
    """One run as its directory (and its plan) says, at its last evaluation; None where it has not said yet.
    N parameters, D atoms seen, C FLOPs (measured, corrected), H device-hours, loss the validation loss."""

    run_id: str
    arch: str | None
    width: int | None
    seed: int | None
    mode: str | None
    prefix: float | None  # the nested fraction of the training data the run trains on
    status: str  # one of STATUSES
    reason: str | None
    N: int | None
    D: float | None
    C: float | None
    H: float | None
    loss: float | None
    step: int | None  # step of the last evaluation
    n_evals: int
    kappa: float | None  # forward FLOPs per atom per parameter (run.json; else C / (3 N D))
    updated_utc: str | None  # the status timestamp
    options: str = ""  # model options of the run's group ("l4"; `run_options`), "" for the family as registered


def read_run(run_dir: str | os.PathLike, metrics: list[dict] | None = None) -> RunRecord:
    """The record of one run directory (it may not exist yet: a planned run is read from its plan)."""
    run_dir = Path(run_dir)
    plan, info, status = read_plan(run_dir), read_json(run_dir / RUN_INFO), read_status(run_dir)
    metrics = read_metrics(run_dir) if metrics is None else metrics
    last = metrics[-1] if metrics else {}
    pick = lambda key: info.get(key, plan.get(key))  # noqa: E731
    n = info.get("N")
    n_params = None if n is None else int(n)
    atoms, flops = finite(last.get("atoms_seen")), finite(last.get("flops"))
    kappa = finite(info.get("kappa")) or implied_kappa(flops, n_params, atoms)
    return RunRecord(
        run_id=run_dir.name, arch=pick("arch"), width=pick("width"), seed=pick("seed"),
        mode=plan.get("mode", info.get("mode")), prefix=finite(plan.get("prefix", info.get("prefix"))),
        status=status["status"], reason=status.get("reason"), N=n_params, D=atoms, C=flops,
        H=device_hours(last.get("device_seconds")), loss=finite(last.get("val_loss")), step=last.get("step"),
        n_evals=len(metrics), kappa=kappa, updated_utc=status.get("updated_utc"), options=run_options(run_dir, plan),
    )  # fmt: skip


def run_options(run_dir: str | os.PathLike, plan: dict[str, Any] | None = None) -> str:
    """The model options that make a run's group (`symscale.fit.results.options_label` of its configuration's
    model_overrides and forces: "l4" for eSEN at lmax 4), from its plan's configuration, else its config.yaml;
    "" where neither says."""
    import yaml  # the fit package (numpy only, no torch) and yaml load here, not in every run's import

    from symscale.fit.results import options_label

    run_dir = Path(run_dir)
    config = (read_plan(run_dir) if plan is None else plan).get("config")
    if not isinstance(config, dict):
        try:
            config = yaml.safe_load((run_dir / CONFIG).read_text())
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            config = None
    if not isinstance(config, dict):
        return ""
    overrides = config.get("model_overrides")
    return options_label(overrides if isinstance(overrides, dict) else None, config.get("forces"))


def study_run_dirs(study_dir: str | os.PathLike) -> dict[str, Path]:
    """Every run of a study by id: `runs/<id>/` directories and planned runs (`runs/<id>.plan.json`)."""
    runs = Path(study_dir) / "runs"
    if not runs.is_dir():
        return {}
    dirs = {p.name: p for p in sorted(runs.iterdir()) if p.is_dir()}
    for plan in sorted(runs.glob(f"*{PLAN_SUFFIX}")):
        run_id = plan.name.removesuffix(PLAN_SUFFIX)
        dirs.setdefault(run_id, runs / run_id)
    return dict(sorted(dirs.items()))


def scan_study(study_dir: str | os.PathLike) -> list[RunRecord]:
    """The record of every run of a study (planned ones included), by run id."""
    return [read_run(path) for path in study_run_dirs(study_dir).values()]
