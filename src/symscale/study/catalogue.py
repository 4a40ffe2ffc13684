"""The catalogue of a study: run directories are the truth, a SQLite file indexes them.

Run directories may sit on a cluster's shared file system, so the database is only an index and can always
be rebuilt: `Catalogue.refresh` (the study process: at the end of a study, and several studies or a
`--retry-failed` may refresh one study at once) rescans `runs/*/`, re-reads the runs whose files changed (a
signature of mtimes and sizes) and drops rows of vanished runs. Readers (`symscale runs`, the report) call
`Catalogue.runs`, which reads the run directories and never opens the database.

Between processes: the database is in WAL mode (readers never block the writer) with a busy timeout of
`BUSY_TIMEOUT_S`, and a refresh writes in one `BEGIN IMMEDIATE` transaction, so that two refreshes queue
instead of failing with "database is locked". A missing, corrupt or old-schema file is rebuilt under an
exclusive `flock` on `catalogue.sqlite.lock`: into a unique temporary file beside it, then renamed over it
(with its stale `-wal`/`-shm` removed first), so that no process ever opens a half-built database and a
rebuild never unlinks a good database another process has open (the state is checked again under the lock).
`flock` is advisory and, on some network file systems, local to a host: keep one study's refreshes on one
host (the study process does them; workers on other nodes never open the database). Every run is read by
`symscale.rundir.read_run` into its one `RunRecord`, planned runs (a plan file, no directory yet) included.

Columns follow the words of DESIGN.md: N parameters, D atoms seen, C FLOPs (measured, corrected), H
device-hours, loss = validation loss (the training loss formula), loss_energy and loss_force its energy and force
terms, options the model options that make a family's runs a group of their own (`symscale.fit.results.options_label`
of the run's model_overrides and forces: "l4" for eSEN at lmax 4).
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import logging
import os
import sqlite3
from dataclasses import astuple, fields
from pathlib import Path
from typing import Any

from symscale.errors import SymscaleError
from symscale.quantities import device_hours, finite
from symscale.rundir import (
    METRICS,
    RUN_INFO,
    STATUS,
    RunRecord,
    atomic_path,
    plan_path,
    read_metrics,
    read_run,
    scan_study,
    study_run_dirs,
    write_text,
)

log = logging.getLogger(__name__)

SCHEMA_VERSION = 4  # 2: the columns of rundir.RunRecord; 3: its options, the evals' loss terms; 4: run_fraction
DB_NAME = "catalogue.sqlite"
BUSY_TIMEOUT_S = 60.0  # how long a writer waits for another before "database is locked"
LAWS_TERMS = ("options", "loss_energy", "loss_force", "energy_mae_mev_per_atom", "force_mae_mev_per_A")
LAWS_COLUMNS = ("arch", "run", "width", "N", "D", "C", "H", "loss", "step", "seed", "mode", "run_fraction", "prefix")
LAWS_COLUMNS += LAWS_TERMS
_SIGNED_FILES = (RUN_INFO, STATUS, METRICS)
_RECORD_FIELDS = tuple(f.name for f in fields(RunRecord))
_EVAL_KEYS = (
    "step", "run_fraction", "structures_seen", "atoms_seen", "flops", "flops_raw", "device_seconds", "val_loss",
    "energy_mae_mev_per_atom", "force_mae_mev_per_A", "force_cos", "equivariance_error_forces",
    "val_energy_loss", "val_force_loss",
)  # fmt: skip

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY, arch TEXT, width INTEGER, seed INTEGER, mode TEXT, prefix REAL,
    status TEXT, reason TEXT, N INTEGER, D REAL, C REAL, H REAL, loss REAL, step INTEGER, n_evals INTEGER,
    kappa REAL, updated_utc TEXT, options TEXT, signature TEXT);
CREATE TABLE evals (
    run_id TEXT, step INTEGER, run_fraction REAL, structures_seen REAL, atoms_seen REAL, flops REAL,
    flops_raw REAL, device_seconds REAL, val_loss REAL, energy_mae REAL, force_mae REAL, force_cos REAL,
    equivariance_error REAL, val_energy_loss REAL, val_force_loss REAL);
CREATE INDEX evals_run ON evals(run_id);
"""


def _signature(run_dir: Path) -> str:
    parts = []
    for path in [plan_path(run_dir), *(run_dir / name for name in _SIGNED_FILES)]:
        try:
            st = path.stat()
            parts.append(f"{st.st_mtime_ns}:{st.st_size}")
        except OSError:
            parts.append("-")
    return "|".join(parts)


def scan_run(run_dir: Path) -> tuple[RunRecord, list[tuple]]:
    """Read one run directory (through `symscale.rundir`) into its record and its evaluation rows."""
    metrics = read_metrics(run_dir)
    evals = [(run_dir.name, *(m.get(k) for k in _EVAL_KEYS)) for m in metrics]
    return read_run(run_dir, metrics), evals


class Catalogue:
    """SQLite index of `study_dir/runs/*/`, refreshed from the run directories."""

    def __init__(self, study_dir: str | Path):
        self.study_dir = Path(study_dir)
        self.path = self.study_dir / DB_NAME

    def _open(self, path: Path) -> sqlite3.Connection:
        con = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)  # transactions are explicit
        con.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        return con

    def _usable(self) -> sqlite3.Connection | None:
        """A connection in WAL mode to a database of this schema, or None (missing, corrupt, old)."""
        if not self.path.exists():
            return None
        con = None
        try:
            con = self._open(self.path)
            version = con.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            if version and int(version[0]) == SCHEMA_VERSION:
                con.execute("PRAGMA journal_mode = WAL")
                return con
        except (sqlite3.DatabaseError, ValueError):
            pass
        if con is not None:
            con.close()
        return None

    def _connect(self) -> sqlite3.Connection:
        con = self._usable()
        if con is not None:
            return con
        with self._rebuild_lock():
            con = self._usable()  # another process may have rebuilt it while we waited
            if con is None:
                self._rebuild()
                con = self._usable()
        if con is None:
            raise SymscaleError(f"could not build the catalogue {self.path}")
        return con

    @contextlib.contextmanager
    def _rebuild_lock(self):
        lock = self.path.with_name(self.path.name + ".lock")
        try:
            fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o644)
        except OSError as err:
            raise SymscaleError(f"could not lock the catalogue {lock}: {err.strerror or err}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the flock

    def _rebuild(self) -> None:
        """An empty database of this schema built in a temporary file and renamed over `self.path`."""
        log.info("building catalogue %s from the run directories", self.path)
        try:
            with atomic_path(self.path, companions=("-journal",)) as tmp:  # removed if anything fails
                con = sqlite3.connect(tmp)  # rollback journal while it is private: one file to rename
                con.executescript(_SCHEMA)
                con.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
                con.commit()
                con.close()
                for suffix in ("-wal", "-shm"):  # of the bad database: never to be paired with the new one
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(f"{self.path}{suffix}")
        except (OSError, sqlite3.Error) as err:
            raise SymscaleError(f"could not build the catalogue {self.path}: {err}") from None

    def refresh(self) -> list[RunRecord]:
        """Bring the index up to date with the run directories and return every run's record."""
        dirs = study_run_dirs(self.study_dir)  # run directories and planned runs that have not started yet
        con = self._connect()
        try:
            con.execute("BEGIN IMMEDIATE")  # the write lock now: a read that upgrades later cannot wait
            known = dict(con.execute("SELECT run_id, signature FROM runs").fetchall())
            for gone in set(known) - set(dirs):
                self._delete(con, gone)
            for name, path in dirs.items():
                sig = _signature(path)
                if known.get(name) != sig:
                    self._upsert(con, path, sig)
            con.execute("COMMIT")
            return self._records(con)
        finally:
            con.close()

    @staticmethod
    def _delete(con: sqlite3.Connection, run_id: str) -> None:
        con.execute("DELETE FROM runs WHERE run_id = ?", (run_id,))
        con.execute("DELETE FROM evals WHERE run_id = ?", (run_id,))

    def _upsert(self, con: sqlite3.Connection, path: Path, sig: str) -> None:
        record, evals = scan_run(path)
        self._delete(con, record.run_id)
        values = (*astuple(record), sig)
        con.execute(f"INSERT INTO runs VALUES ({', '.join('?' * len(values))})", values)
        con.executemany(f"INSERT INTO evals VALUES ({', '.join('?' * (len(_EVAL_KEYS) + 1))})", evals)

    @staticmethod
    def _records(con: sqlite3.Connection) -> list[RunRecord]:
        rows = con.execute("SELECT * FROM runs ORDER BY arch, width, seed, mode, prefix, run_id").fetchall()
        return [RunRecord(*row[: len(_RECORD_FIELDS)]) for row in rows]

    def runs(self) -> list[RunRecord]:
        """Every run's record read from the run directories, writing nothing (for readers: the report,
        `symscale runs`); in the same order as `refresh`."""
        key = lambda r: tuple((v is not None, v) for v in (r.arch, r.width, r.seed, r.mode, r.prefix)) + (r.run_id,)  # noqa: E731
        return sorted(scan_study(self.study_dir), key=key)

    def evaluations(self, run_ids: list[str] | None = None) -> list[dict[str, Any]]:
        """Evaluation rows joined with their run's coordinates (after a `refresh`)."""
        con = self._connect()
        con.row_factory = sqlite3.Row
        try:
            sql = (
                "SELECT e.*, r.arch, r.width, r.seed, r.mode, r.prefix, r.N, r.status, r.reason, r.options "
                "FROM evals e JOIN runs r USING (run_id) ORDER BY r.arch, r.width, r.run_id, e.step"
            )
            rows = [dict(r) for r in con.execute(sql)]
        finally:
            con.close()
        if run_ids is not None:
            keep = set(run_ids)
            rows = [r for r in rows if r["run_id"] in keep]
        return rows


def export_laws(
    catalogue: Catalogue, path: str | Path, run_ids: list[str] | None = None, *, include_diverged: bool = False
) -> int:
    """Write the laws table (one row per evaluation point of every finished run) and return its row count.
    Columns: arch, run, width, N (parameters), D (atoms seen), C (FLOPs), H (device-hours), loss (validation),
    step, seed, mode, run_fraction (of the run's training done at that point), prefix (training-set fraction), then
    `LAWS_TERMS`: options (model options), loss_energy and loss_force (the validation loss's energy and force
    terms), energy_mae_mev_per_atom and force_mae_mev_per_A (empty where the run's metrics lack them).
    A diverged run (failed, its reason starting "diverged", see `train.loop.divergence`) is left out unless
    `include_diverged` (then its finite points are in, up to where it stopped)."""
    rows = [r for r in catalogue.evaluations(run_ids) if _in_laws(r, include_diverged) and finite(r["val_loss"])]
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(LAWS_COLUMNS)
    for r in rows:
        writer.writerow(
            [
                r["arch"], r["run_id"], r["width"], r["N"], r["atoms_seen"], r["flops"],
                device_hours(r["device_seconds"]), r["val_loss"], r["step"], r["seed"], r["mode"], r["run_fraction"],
                r["prefix"], r["options"] or "", r["val_energy_loss"], r["val_force_loss"], r["energy_mae"],
                r["force_mae"],
            ]
        )  # fmt: skip
    write_text(path, buffer.getvalue())  # a unique temporary file: concurrent exports never collide
    return len(rows)


def _in_laws(row: dict[str, Any], include_diverged: bool) -> bool:
    if row["status"] == "finished":
        return True
    return include_diverged and row["status"] == "failed" and str(row.get("reason") or "").startswith("diverged")
