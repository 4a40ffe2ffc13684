"""The run directory's one reader and writer: status schema, metrics log (torn lines), atomic writes, plan,
lock staleness (dead owner, reused pid with an old heartbeat), re-entrancy, the record of a run."""

from __future__ import annotations

import datetime
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from symscale import rundir
from symscale.errors import SymscaleError
from symscale.rundir import RunLock, lock_path


def _lines(n: int) -> str:
    return "".join(json.dumps({"step": i, "val_loss": 1.0 / i}) + "\n" for i in range(1, n + 1))


def test_torn_last_line_is_skipped_then_repaired(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(_lines(3) + '{"step": 4, "val_lo')  # killed mid-write
    assert [m["step"] for m in rundir.read_metrics(tmp_path)] == [1, 2, 3]
    assert rundir.torn_bytes(tmp_path) == len('{"step": 4, "val_lo')
    assert (tmp_path / "metrics.jsonl").read_text().endswith("val_lo")  # the reader writes nothing
    assert rundir.repair_metrics(tmp_path) > 0
    assert (tmp_path / "metrics.jsonl").read_text() == _lines(3)
    rundir.append_metrics(tmp_path, {"step": 4, "val_loss": 0.25})  # appends start on a fresh line
    assert [m["step"] for m in rundir.read_metrics(tmp_path)] == [1, 2, 3, 4]
    assert rundir.repair_metrics(tmp_path) == 0 and rundir.torn_bytes(tmp_path) == 0
    assert rundir.read_metrics(tmp_path / "absent") == [] and rundir.repair_metrics(tmp_path / "absent") == 0


def test_keep_metrics_drops_later_steps_and_a_torn_tail(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(_lines(5) + "{")
    rundir.keep_metrics(tmp_path, 3)
    assert (tmp_path / "metrics.jsonl").read_text() == _lines(3)


def test_status_schema_one_timestamp_and_kept_position(tmp_path):
    assert rundir.read_status(tmp_path / "none") == {"status": "pending", "reason": None}
    rundir.write_status(tmp_path, "running", step=3, total_steps=10, config_hash="abc")
    rundir.write_status(tmp_path, "failed", "worker killed by signal 9")  # an engine: knows no position
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["status"] == "failed" and status["reason"] == "worker killed by signal 9"
    assert (status["step"], status["total_steps"], status["config_hash"]) == (3, 10, "abc")
    assert datetime.datetime.fromisoformat(status["updated_utc"]).tzinfo is not None
    assert "updated" not in status
    (tmp_path / "status.json").write_text("{not json")
    assert rundir.read_status(tmp_path)["status"] == "pending"


def test_a_stale_zero_byte_temporary_file_never_blocks_a_write(tmp_path):
    (tmp_path / ".status.json.tmp").write_text("")  # left by a write that hit a full disk
    rundir.write_status(tmp_path, "running")
    assert rundir.read_status(tmp_path)["status"] == "running"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".status.json.tmp", "status.json"]


def test_a_failed_write_is_one_error_and_leaves_the_old_file(tmp_path, monkeypatch):
    rundir.write_json(tmp_path / "run.json", {"N": 1})

    def full_disk(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(rundir.os, "replace", full_disk)
    with pytest.raises(SymscaleError, match=r"could not write .*run\.json: No space left on device"):
        rundir.write_json(tmp_path / "run.json", {"N": 2})
    assert json.loads((tmp_path / "run.json").read_text()) == {"N": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]  # no temporary file left behind


def test_plan_lives_beside_the_run_and_old_plans_read_as_prefix(tmp_path):
    run = tmp_path / "runs" / "mpnn-w4-abc"
    rundir.write_plan(run, {"run_id": run.name, "arch": "mpnn", "prefix": 0.3})
    assert rundir.plan_path(run) == tmp_path / "runs" / "mpnn-w4-abc.plan.json" and not run.exists()
    assert rundir.read_plan(run)["prefix"] == 0.3
    rundir.plan_path(run).write_text(json.dumps({"arch": "mpnn", "fraction": 0.1}))  # written before 0.x
    assert rundir.read_plan(run)["prefix"] == 0.1 and rundir.read_run(run).prefix == 0.1
    assert rundir.read_run(run).status == "pending"


def _fake_lock(run_dir, pid: int, age_s: float = 0.0) -> None:
    path = lock_path(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "owner": "", "started": "x"}))
    if age_s:
        then = time.time() - age_s
        os.utime(path, (then, then))


@pytest.fixture
def live_pid():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc.pid
    proc.kill()
    proc.wait()


def test_lock_of_a_live_owner_holds_and_a_dead_owner_is_stale(tmp_path, live_pid):
    run = tmp_path / "r"
    _fake_lock(run, live_pid)
    assert not RunLock(run).acquire()
    with pytest.raises(SymscaleError, match=f"in use: locked by pid {live_pid}"):
        with RunLock(run).held():
            pass
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    _fake_lock(run, int(dead.stdout))  # that process has exited
    lock = RunLock(run)
    assert lock.acquire()
    assert json.loads(lock_path(run).read_text())["pid"] == os.getpid()
    lock.release()
    assert not lock_path(run).exists()


def test_reused_pid_with_an_old_heartbeat_is_stale(tmp_path, live_pid):
    """The pid names a live process (reused after the owner died) but nothing touched the lock for longer
    than STALE_AFTER_S: the lock is broken, it does not block the run forever."""
    run = tmp_path / "r"
    _fake_lock(run, live_pid, age_s=rundir.STALE_AFTER_S + 60)
    with RunLock(run).held():
        assert json.loads(lock_path(run).read_text())["pid"] == os.getpid()
    _fake_lock(run, live_pid, age_s=rundir.STALE_AFTER_S / 2)  # a recent heartbeat: still owned
    assert not RunLock(run).acquire()


def test_lock_is_reentrant_in_one_process_and_released_by_the_outermost(tmp_path):
    run = tmp_path / "r"
    with RunLock(run).held():
        with RunLock(run).held():  # a study worker holds it, the loop it calls takes it again
            pass
        assert lock_path(run).exists()
    assert not lock_path(run).exists()


def test_heartbeat_keeps_the_lock_fresh(tmp_path, monkeypatch):
    monkeypatch.setattr(rundir, "HEARTBEAT_S", 0.05)
    run = tmp_path / "r"
    with RunLock(run).held() as lock:
        then = time.time() - 1000
        os.utime(lock.path, (then, then))
        time.sleep(0.3)
        assert lock.holder()["age_s"] < 100


def test_record_of_a_run_reads_run_json_status_and_last_evaluation(tmp_path):
    run = tmp_path / "runs" / "egnn-w2-x"
    rundir.write_plan(run, {"arch": "egnn", "width": 2, "seed": 1, "mode": "augmentation", "prefix": 0.5})
    run.mkdir()
    rundir.write_json(run / "run.json", {"arch": "egnn", "width": 2, "N": 1000, "prefix": 0.005})
    rundir.write_status(run, "finished")
    line = {"step": 7, "atoms_seen": 200.0, "flops": 6e6, "device_seconds": 7200.0, "val_loss": 0.5}
    rundir.append_metrics(run, line)
    r = rundir.read_run(run)
    assert (r.arch, r.width, r.seed, r.mode, r.status, r.step, r.n_evals) == (
        "egnn",
        2,
        1,
        "augmentation",
        "finished",
        7,
        1,
    )
    assert r.prefix == 0.5  # the grid's prefix (the plan), not the run's own fraction of the data
    assert (r.N, r.D, r.C, r.H, r.loss) == (1000, 200.0, 6e6, 2.0, 0.5)
    assert r.kappa == pytest.approx(6e6 / (3 * 1000 * 200.0))
    assert [x.run_id for x in rundir.scan_study(tmp_path)] == ["egnn-w2-x"]


def test_metrics_written_before_the_rename_read_fraction_as_run_fraction(tmp_path):
    (tmp_path / rundir.METRICS).write_text('{"step": 1, "fraction": 0.5}\n{"step": 2, "run_fraction": 1.0}\n')
    assert [m["run_fraction"] for m in rundir.read_metrics(tmp_path)] == [0.5, 1.0]
    assert all("fraction" not in m for m in rundir.read_metrics(tmp_path))
