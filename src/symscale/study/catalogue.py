"""The catalogue of a study: run directories are the truth, a SQLite file indexes them.

Run directories may sit on a cluster's shared file system where concurrent writers to one database are
unsafe, so only the study process writes `catalogue.sqlite`, and it can always be rebuilt: `Catalogue.refresh`
rescans `runs/*/`, re-reads the runs whose files changed (a signature of mtimes and sizes) and drops rows
of vanished runs; a missing, corrupt or old-schema file is rebuilt from scratch.

Columns follow the words of DESIGN.md: N parameters, D atoms seen, C FLOPs (measured, corrected), H
device-hours, loss = validation loss (the training loss formula), loss_energy and loss_force its energy and force
terms, options the model options that make a family's runs a group of their own (`symscale.fit.results.options_label`
of the run's model_overrides and forces: "l4" for eSEN at lmax 4).
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from symscale.fit.results import options_label

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2
DB_NAME = "catalogue.sqlite"
LAWS_TERMS = ("options", "loss_energy", "loss_force", "energy_mae_mev_per_atom", "force_mae_mev_per_A")
LAWS_COLUMNS = ("arch", "run", "width", "N", "D", "C", "H", "loss", "step", "seed", "mode", "fraction", "prefix")
LAWS_COLUMNS += LAWS_TERMS
_SIGNED_FILES = ("run.json", "status.json", "metrics.jsonl")
PLAN_SUFFIX = ".plan.json"

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY, arch TEXT, width INTEGER, seed INTEGER, mode TEXT, prefix REAL,
    status TEXT, reason TEXT, n_params INTEGER, atoms_seen REAL, flops REAL, device_hours REAL,
    last_loss REAL, last_step INTEGER, n_evals INTEGER, options TEXT, signature TEXT);
CREATE TABLE evals (
    run_id TEXT, step INTEGER, fraction REAL, structures_seen REAL, atoms_seen REAL, flops REAL,
    flops_raw REAL, device_seconds REAL, val_loss REAL, energy_mae REAL, force_mae REAL, force_cos REAL,
    equivariance_error REAL, val_energy_loss REAL, val_force_loss REAL);
CREATE INDEX evals_run ON evals(run_id);
"""


@dataclass(frozen=True)
class RunRecord:
    """One run as the catalogue sees it (None where the run has not said yet)."""

    run_id: str
    arch: str | None
    width: int | None
    seed: int | None
    mode: str | None
    prefix: float | None  # training-set fraction of the run
    status: str
    reason: str | None
    n_params: int | None  # N
    atoms_seen: float | None  # D at the last evaluation
    flops: float | None  # C at the last evaluation, FLOPs
    device_hours: float | None  # H at the last evaluation
    last_loss: float | None
    last_step: int | None
    n_evals: int
    options: str = ""  # model options of the run's group ("l4"), "" for the family as registered


def plan_path(run_dir: str | Path) -> Path:
    """runs/<id>.plan.json, the study's record of a run's grid coordinates."""
    run_dir = Path(run_dir)
    return run_dir.with_name(run_dir.name + PLAN_SUFFIX)


def _signature(run_dir: Path) -> str:
    parts = []
    for path in [plan_path(run_dir), *(run_dir / name for name in _SIGNED_FILES)]:
        try:
            st = path.stat()
            parts.append(f"{st.st_mtime_ns}:{st.st_size}")
        except OSError:
            parts.append("-")
    return "|".join(parts)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The run's evaluation lines (metrics.jsonl); a torn last line (a run killed mid-write) is skipped."""
    rows = []
    try:
        lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    except OSError:
        return rows
    for line in lines:
        with contextlib.suppress(ValueError):
            rows.append(json.loads(line))
    return rows


def _float(x: Any) -> float | None:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _options(plan: dict[str, Any], run_dir: Path) -> str:
    """The run's model options from its plan's configuration, else its config.yaml."""
    config = plan.get("config")
    if not isinstance(config, dict):
        try:
            config = yaml.safe_load((run_dir / "config.yaml").read_text())
        except (OSError, yaml.YAMLError):
            config = None
    if not isinstance(config, dict):
        return ""
    overrides = config.get("model_overrides")
    return options_label(overrides if isinstance(overrides, dict) else None, config.get("forces"))


def scan_run(run_dir: Path) -> tuple[RunRecord, list[tuple]]:
    """Read one run directory into a record and its evaluation rows."""
    plan = _read_json(plan_path(run_dir))
    info, status = (_read_json(run_dir / n) for n in ("run.json", "status.json"))
    metrics = read_metrics(run_dir)
    last = metrics[-1] if metrics else {}
    pick = lambda key: info.get(key, plan.get(key))
    n_params = info.get("N", info.get("n_params"))
    dev_s = _float(last.get("device_seconds"))
    record = RunRecord(
        run_id=run_dir.name,
        arch=pick("arch"),
        width=pick("width"),
        seed=pick("seed"),
        mode=plan.get("mode", info.get("mode")),
        prefix=plan.get("fraction"),
        status=status.get("status", "pending"),
        reason=status.get("reason"),
        n_params=None if n_params is None else int(n_params),
        atoms_seen=_float(last.get("atoms_seen")),
        flops=_float(last.get("flops")),
        device_hours=None if dev_s is None else dev_s / 3600.0,
        last_loss=_float(last.get("val_loss")),
        last_step=last.get("step"),
        n_evals=len(metrics),
        options=_options(plan, run_dir),
    )
    keys = (
        "step",
        "fraction",
        "structures_seen",
        "atoms_seen",
        "flops",
        "flops_raw",
        "device_seconds",
        "val_loss",
        "energy_mae_mev_per_atom",
        "force_mae_mev_per_A",
        "force_cos",
        "equivariance_error_forces",
        "val_energy_loss",
        "val_force_loss",
    )
    evals = [(run_dir.name, *(m.get(k) for k in keys)) for m in metrics]
    return record, evals


class Catalogue:
    """SQLite index of `study_dir/runs/*/`, refreshed from the run directories."""

    def __init__(self, study_dir: str | Path):
        self.study_dir = Path(study_dir)
        self.path = self.study_dir / DB_NAME

    def _connect(self) -> sqlite3.Connection:
        try:
            con = sqlite3.connect(self.path)
            version = con.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            if version and int(version[0]) == SCHEMA_VERSION:
                return con
            con.close()
        except sqlite3.DatabaseError:
            pass
        return self._create()

    def _create(self) -> sqlite3.Connection:
        log.info("building catalogue %s from the run directories", self.path)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        con = sqlite3.connect(self.path)
        con.executescript(_SCHEMA)
        con.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        con.commit()
        return con

    def refresh(self) -> list[RunRecord]:
        """Bring the index up to date with the run directories and return every run's record."""
        runs = self.study_dir / "runs"
        dirs = {p.name: p for p in sorted(runs.glob("*")) if p.is_dir()}
        for plan in sorted(runs.glob(f"*{PLAN_SUFFIX}")):  # planned runs that have not started yet
            dirs.setdefault(plan.name.removesuffix(PLAN_SUFFIX), runs / plan.name.removesuffix(PLAN_SUFFIX))
        con = self._connect()
        try:
            known = dict(con.execute("SELECT run_id, signature FROM runs").fetchall())
            for gone in set(known) - set(dirs):
                self._delete(con, gone)
            for name, path in dirs.items():
                sig = _signature(path)
                if known.get(name) != sig:
                    self._upsert(con, path, sig)
            con.commit()
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
        con.execute(f"INSERT INTO runs VALUES ({', '.join('?' * 17)})", (*record.__dict__.values(), sig))
        con.executemany(f"INSERT INTO evals VALUES ({', '.join('?' * 15)})", evals)

    @staticmethod
    def _records(con: sqlite3.Connection) -> list[RunRecord]:
        rows = con.execute("SELECT * FROM runs ORDER BY arch, width, seed, mode, prefix, run_id").fetchall()
        return [RunRecord(*row[:-1]) for row in rows]

    def evaluations(self, run_ids: list[str] | None = None) -> list[dict[str, Any]]:
        """Evaluation rows joined with their run's coordinates (after a `refresh`)."""
        con = self._connect()
        con.row_factory = sqlite3.Row
        try:
            sql = (
                "SELECT e.*, r.arch, r.width, r.seed, r.mode, r.prefix, r.n_params, r.status, r.options FROM evals e "
                "JOIN runs r USING (run_id) ORDER BY r.arch, r.width, r.run_id, e.step"
            )
            rows = [dict(r) for r in con.execute(sql)]
        finally:
            con.close()
        if run_ids is not None:
            keep = set(run_ids)
            rows = [r for r in rows if r["run_id"] in keep]
        return rows


def export_laws(catalogue: Catalogue, path: str | Path, run_ids: list[str] | None = None) -> int:
    """Write the laws table (one row per evaluation point of every finished run) and return its row count.
    Columns: arch, run, width, N (parameters), D (atoms seen), C (FLOPs), H (device-hours), loss (validation),
    step, seed, mode, fraction (of the run's training done at that point), prefix (training-set fraction), then
    `LAWS_TERMS`: options (model options), loss_energy and loss_force (the validation loss's energy and force
    terms), energy_mae_mev_per_atom and force_mae_mev_per_A (empty where the run's metrics lack them)."""
    rows = [r for r in catalogue.evaluations(run_ids) if r["status"] == "finished" and _float(r["val_loss"])]
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(LAWS_COLUMNS)
        for r in rows:
            hours = None if r["device_seconds"] is None else r["device_seconds"] / 3600.0
            writer.writerow(
                [
                    r["arch"],
                    r["run_id"],
                    r["width"],
                    r["n_params"],
                    r["atoms_seen"],
                    r["flops"],
                    hours,
                    r["val_loss"],
                    r["step"],
                    r["seed"],
                    r["mode"],
                    r["fraction"],
                    r["prefix"],
                    r["options"] or "",
                    r["val_energy_loss"],
                    r["val_force_loss"],
                    r["energy_mae"],
                    r["force_mae"],
                ]
            )
    tmp.replace(path)
    return len(rows)
