"""Faults between processes and inside a run (issue 14, items 3, 6, 9, 13): concurrent catalogue refreshes
and laws exports, a study that validates before its first run, divergence recorded as a failure, a full disk
at a checkpoint write, and resuming with another thread count.

Concurrency is real (several Python processes started together on one study, bounded loops); file-system
faults are injected (a writer that raises ENOSPC).
"""

from __future__ import annotations

import csv
import errno
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from symscale import rundir
from symscale.study.catalogue import DB_NAME, Catalogue, export_laws

SRC = str(Path(__file__).resolve().parents[1] / "src")


# ----------------------------------------------------------------------------------------------------------
# item 6: the catalogue and the laws export between processes


def _finished_study(root: Path, n_runs: int = 6) -> Path:
    for k in range(n_runs):
        run = root / "runs" / f"mpnn-w{k + 1}"
        rundir.write_plan(run, {"run_id": run.name, "arch": "mpnn", "width": k + 1, "seed": 0, "prefix": 1.0})
        run.mkdir()
        rundir.write_json(run / "run.json", {"arch": "mpnn", "width": k + 1, "N": 100 * (k + 1)})
        for step in (1, 2, 3):
            line = {"step": step, "fraction": step / 3, "atoms_seen": 1e3 * step, "flops": 1e9 * step,
                    "device_seconds": 1.0 * step, "val_loss": 1.0 / (step + k)}  # fmt: skip
            rundir.append_metrics(run, line)
        rundir.write_status(run, "finished")
    return root


_WORKER = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from symscale.study.catalogue import Catalogue, export_laws
    study, go, me, loops = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    while not go.exists():
        time.sleep(0.005)
    for i in range(loops):
        records = Catalogue(study).refresh()
        assert len(records) == 6, len(records)
        rows = export_laws(Catalogue(study), study / "laws.csv")
        assert rows == 18, rows
        if me == 0 and i % 5 == 4:  # touch a run: the others re-read it in their refresh
            os.utime(study / "runs" / "mpnn-w1" / "metrics.jsonl")
    """
)


def _race(study: Path, tmp_path: Path, processes: int = 4, loops: int = 15) -> list[subprocess.CompletedProcess]:
    go = tmp_path / "go"
    env = {"PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(study), str(go), str(k), str(loops)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for k in range(processes)
    ]
    time.sleep(1.5)  # let them all import and wait at the gate
    go.touch()
    results = []
    for p in procs:
        out, err = p.communicate(timeout=240)
        results.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    return results


@pytest.mark.parametrize("start", ["missing", "old-schema", "corrupt"])
def test_concurrent_refreshes_and_exports_never_fail_or_tear(tmp_path, start):
    study = _finished_study(tmp_path / "study")
    db = study / DB_NAME
    if start == "old-schema":  # every process finds it stale at once and wants to rebuild it
        con = sqlite3.connect(db)
        con.executescript(
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT); INSERT INTO meta VALUES ('schema', '1');"
        )
        con.commit()
        con.close()
    elif start == "corrupt":
        db.write_bytes(b"not a database" * 100)
    results = _race(study, tmp_path)
    for r in results:
        assert r.returncode == 0, r.stderr[-2000:]
    with (study / "laws.csv").open() as fh:
        assert len(list(csv.DictReader(fh))) == 18  # whole, never a torn or empty export
    assert not [p.name for p in study.iterdir() if p.name.endswith(".tmp")]  # no temporary file left behind
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 6
    con.close()


def test_catalogue_is_in_wal_mode_with_a_busy_timeout(tmp_path):
    study = _finished_study(tmp_path / "study")
    Catalogue(study).refresh()
    con = sqlite3.connect(study / DB_NAME)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.close()
    # a writer holding the database for a moment makes a refresh wait, not fail with "database is locked"
    holder = sqlite3.connect(study / DB_NAME, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    script = f"from symscale.study.catalogue import Catalogue; print(len(Catalogue({str(study)!r}).refresh()))"
    env = {"PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen(
        [sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    time.sleep(7.0)  # longer than sqlite3's default timeout of 5 s
    holder.execute("COMMIT")
    holder.close()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]
    assert out.strip() == "6"


def test_readers_never_open_or_create_the_catalogue(tmp_path, capsys):
    from symscale.cli import main

    study = _finished_study(tmp_path / "study")
    assert main(["runs", str(study)]) == 0
    assert len(Catalogue(study).runs()) == 6
    assert not (study / DB_NAME).exists() and not list(study.glob(DB_NAME + "*"))
    export_laws  # noqa: B018 (the writer is the study's: tested above)
