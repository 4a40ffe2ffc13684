"""Faults between processes and inside a run (issue 14, items 3, 6, 9, 13): concurrent catalogue refreshes
and laws exports, a study that validates before its first run, divergence recorded as a failure, a full disk
at a checkpoint write, and resuming with another thread count.

Concurrency is real (several Python processes started together on one study, bounded loops); file-system
faults are injected (a writer that raises ENOSPC).
"""

from __future__ import annotations

import csv
import errno
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from symscale import rundir
from symscale.errors import SymscaleError
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


# ----------------------------------------------------------------------------------------------------------
# item 13: divergence below NaN, and a full disk at a checkpoint write


def _tiny(**kw):
    from symscale.config import RunConfig

    base = {"arch": "mpnn", "width": 4, "data": "toy", "n_val": 10, "batch_size": 8, "eval_points": 4,
            "eval_first_fraction": 0.1, "compute_accounting": False, "progress": "off", "warmup_steps": 2,
            "equivariance_structures": 0}  # fmt: skip
    base.update(kw)
    return RunConfig.from_dict(base)


@pytest.fixture(scope="module")
def toy90():
    from symscale.data.toy import toy_structures

    return toy_structures(90, seed=3)


def test_divergence_rules():
    from symscale.train.loop import divergence

    assert divergence([1.0, 0.5, 0.4], 1e3, 6) is None
    assert "1000 x its first" in divergence([1.0, 0.5, 2.8e21], 1e3, 6)
    assert "non-finite" in divergence([1.0, float("nan")], 1e3, 6)
    rising = [1.0, 0.2, 0.3, 0.5, 0.8, 1.1]
    assert "rose at 4 evaluations" in divergence(rising, 1e3, 4)
    assert divergence(rising, 1e3, 0) is None  # 0: off
    assert divergence([1.0, 0.2, 0.3, 0.5, 0.8, 0.9], 1e3, 4) is None  # overfitting, still below where it started


def _inflate_after_first(monkeypatch, factor=1e22):
    from symscale.train import loop

    real = loop._Run.evaluate
    calls = []

    def evaluate(self):
        line = real(self)
        calls.append(line["step"])
        if len(calls) > 1:
            line["val_loss"] *= factor  # a finite loss that says the run blew up (2.8e21 in the issue)
        return line

    monkeypatch.setattr(loop._Run, "evaluate", evaluate)


def test_a_diverged_run_is_failed_with_its_reason_and_left_out_of_the_laws(tmp_path, toy90, monkeypatch):
    from symscale.train.loop import train_run

    _inflate_after_first(monkeypatch)
    study = tmp_path / "study"
    run = study / "runs" / "mpnn-w4"
    rundir.write_plan(run, {"run_id": run.name, "arch": "mpnn", "width": 4, "seed": 0, "prefix": 1.0})
    result = train_run(_tiny(), run, dataset=toy90)
    status = rundir.read_status(run)
    assert result.status == "failed" and status["status"] == "failed"
    assert status["reason"].startswith("diverged: validation loss") and "\n" not in status["reason"]
    assert not (run / "checkpoints" / "final.pt").exists()
    Catalogue(study).refresh()
    assert export_laws(Catalogue(study), study / "laws.csv") == 0  # kept out of the fits
    assert export_laws(Catalogue(study), study / "laws.csv", include_diverged=True) == 2  # unless asked for


def test_divergence_settings_are_checked_and_leave_old_run_ids_alone():
    from symscale.errors import SymscaleError

    assert _tiny().config_hash() == _tiny(divergence_factor=1e3, divergence_patience=6).config_hash()
    assert _tiny().config_hash() != _tiny(divergence_factor=10.0).config_hash()
    with pytest.raises(SymscaleError, match="divergence_factor"):
        _tiny(divergence_factor=0.5)


def _full_disk(err_path=None):
    return OSError(errno.ENOSPC, "No space left on device", err_path)


@pytest.mark.parametrize("status_write_fails_too", [False, True])
def test_enospc_at_the_final_checkpoint_leaves_status_failed(tmp_path, toy90, monkeypatch, status_write_fails_too):
    from symscale.train import checkpoint, loop

    real_save, real_write = checkpoint.save_checkpoint, rundir.write_text
    full = {"on": False}

    def save(path, ckpt):
        if Path(path).name == "final.pt":
            full["on"] = status_write_fails_too
            raise _full_disk(str(path))
        return real_save(path, ckpt)

    def write_text(path, text):
        if full["on"]:
            from symscale.errors import SymscaleError

            raise SymscaleError(f"could not write {path}: No space left on device")
        return real_write(path, text)

    monkeypatch.setattr(checkpoint, "save_checkpoint", save)
    monkeypatch.setattr(rundir, "write_text", write_text)
    out = tmp_path / "run"
    with pytest.raises(OSError):
        loop.train_run(_tiny(), out, dataset=toy90)
    status = rundir.read_status(out)
    assert status["status"] == "failed", status
    assert "no space left" in status["reason"].lower() and "\n" not in status["reason"]
    assert rundir.stopped_by_filesystem(status)  # not the run's failure: a study resumes it
    assert not list(out.rglob("*.tmp"))


# ----------------------------------------------------------------------------------------------------------
# item 9: a study validates everything it can before its first run, and writes nothing when it cannot


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def bad_data(tmp_path_factory):
    import dataclasses

    from symscale.data.readers import write_structures
    from symscale.data.toy import toy_structures

    root = tmp_path_factory.mktemp("study-data")
    good = toy_structures(60, seed=0)
    write_structures(root / "good.xyz", good)
    (root / "empty.xyz").write_text("")
    write_structures(root / "nan.xyz", [dataclasses.replace(s, energy=float("nan")) if i == 7 else s
                                         for i, s in enumerate(good)])  # fmt: skip
    write_structures(root / "unlabelled.xyz", [dataclasses.replace(s, energy=None, forces=None) for s in good])
    text = (root / "good.xyz").read_text()
    (root / "truncated.xyz").write_text(text[: len(text) // 2])  # cut mid-frame
    return root


def _spec_yaml(path: Path, data: Path, *, family: str = "{arch: mpnn, widths: [2, 4]}", val: int = 10) -> Path:
    path.write_text(
        textwrap.dedent(
            f"""
            name: tiny
            dataset: {{path: {data}, val: {val}}}
            families:
              - {family}
            prefixes: [0.5, 1.0]
            evaluation: {{eval_points: 2, eval_first_fraction: 0.5, equivariance_structures: 0}}
            training: {{batch_size: 8, device: cpu, compute_accounting: false}}
            executor: {{kind: local, workers: 1}}
            report: false
            """
        )
    )
    return path


MPNN = "{arch: mpnn, widths: [2, 4], overrides: {num_layers: %s}}"
BAD_STUDIES = {
    "unknown arch": ({"family": "{arch: mpnnn, widths: [2, 4]}"}, "good.xyz", "mpnnn"),
    "num_layers 0": ({"family": MPNN % "0"}, "good.xyz", "num_layers"),
    "num_layers abc": ({"family": MPNN % "abc"}, "good.xyz", "num_layers"),
    "num_layers 2.5": ({"family": MPNN % "2.5"}, "good.xyz", "num_layers"),
    "unknown option": ({"family": "{arch: egnn, widths: [2, 4], overrides: {nonsense: 1}}"}, "good.xyz", "nonsense"),
    "empty dataset": ({}, "empty.xyz", "empty.xyz"),
    "truncated dataset": ({}, "truncated.xyz", "truncated.xyz"),
    "NaN label": ({}, "nan.xyz", "nan"),
    "no labels": ({}, "unlabelled.xyz", "energ"),
    "val larger than the data": ({"val": 100}, "good.xyz", "val"),
    "missing dataset": ({}, "absent.xyz", "absent.xyz"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_STUDIES))
def test_an_invalid_study_fails_in_one_line_before_anything_is_written(tmp_path, bad_data, capsys, case):
    from symscale.cli import main
    from symscale.study.runner import init_study_dir
    from symscale.study.spec import load_spec

    study = tmp_path / "study"
    init_study_dir(load_spec(_spec_yaml(tmp_path / "good.yaml", bad_data / "good.xyz")), study)  # an existing study
    before = _snapshot(study)
    options, data, expected = BAD_STUDIES[case]
    bad = _spec_yaml(tmp_path / "bad.yaml", bad_data / data, **options)
    code = main(["study", str(bad), "--dir", str(study)])
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert expected.lower() in err.lower(), err
    assert _snapshot(study) == before  # spec.yaml untouched, no run directory, plan, catalogue or laws.csv


# ----------------------------------------------------------------------------------------------------------
# item 3: CPU results depend on the thread count; a run resumes only with the count it started with


@pytest.fixture
def restore_threads():
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _interrupted_run(out: Path, toy90, monkeypatch, threads: int = 1) -> None:
    from symscale.train import loop

    real, calls = loop._Run.evaluate, []

    def evaluate(self):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # killed after the second evaluation's checkpoint
        return real(self)

    monkeypatch.setattr(loop._Run, "evaluate", evaluate)
    with pytest.raises(KeyboardInterrupt):
        loop.train_run(_tiny(threads=threads), out, dataset=toy90)
    monkeypatch.setattr(loop._Run, "evaluate", real)
    assert (out / "checkpoints" / "last.pt").exists() and rundir.read_status(out)["status"] == "running"


def test_resuming_with_another_thread_count_is_refused_in_one_line(tmp_path, toy90, monkeypatch, restore_threads):
    from symscale.errors import SymscaleError
    from symscale.train.loop import train_run

    out = tmp_path / "run"
    _interrupted_run(out, toy90, monkeypatch)
    assert rundir.read_json(out / "run.json")["threads"] == 1
    before = _snapshot(out)
    with pytest.raises(SymscaleError, match="trained with 1 torch threads, this process has 2") as err:
        train_run(_tiny(threads=2), out, dataset=toy90)
    assert "\n" not in str(err.value) and "--threads 1" in str(err.value)
    assert _snapshot(out) == before  # nothing written
    assert not Path(str(out) + ".lock").exists()
    result = train_run(_tiny(threads=1), out, dataset=toy90)  # the same count resumes
    assert result.status == "finished"


def test_a_study_engine_resumes_a_run_with_its_recorded_thread_count(tmp_path, toy90, monkeypatch, restore_threads):
    import torch

    from symscale.study.executors import RunTask, execute_run

    out = tmp_path / "runs" / "mpnn-w4"
    _interrupted_run(out, toy90, monkeypatch)
    seen = {}

    def run_fn(config, run_dir):
        seen.update(config=config.runtime.threads, torch=torch.get_num_threads())
        from symscale.train.loop import train_run

        train_run(config, run_dir, progress=False, dataset=toy90)

    # the study resumed with another --workers: its engine offers 2 threads, the run started with 1
    outcome = execute_run(RunTask("mpnn-w4", str(out), _tiny(), run_fn, threads=2))
    assert outcome.status == "finished", outcome.reason
    assert seen == {"config": 1, "torch": 1}


def test_a_failure_is_recorded_even_when_the_log_line_hits_a_full_disk(tmp_path, toy90, monkeypatch):
    from symscale.train import loop, progress

    _inflate_after_first(monkeypatch)
    real_log = progress.Progress.log

    def log(self, text):
        if text.startswith("failed"):
            raise _full_disk(str(self.log_path))
        return real_log(self, text)

    monkeypatch.setattr(progress.Progress, "log", log)
    result = loop.train_run(_tiny(), tmp_path / "run", dataset=toy90)
    assert result.status == "failed"
    assert rundir.read_status(tmp_path / "run")["reason"].startswith("diverged")


# ----------------------------------------------------------------------------------------------------------
# a study into a full disk, end to end: `symscale study` in a child process whose workers see ENOSPC at one
# write of the first run; one line, no traceback, nothing torn that the readers cannot read, and the same
# command after space is freed finishes the study, redoing at most the steps since the last checkpoint

_FULL_DISK = textwrap.dedent(
    """
    # loaded by every process of the child study (parent and spawned workers) through PYTHONPATH
    import errno, multiprocessing, os
    flag, target, nth = os.environ["FULL_DISK_FLAG"], os.environ["FULL_DISK_AT"], int(os.environ["FULL_DISK_NTH"])
    real_fsync, seen = os.fsync, []

    def _hit(name):
        return {"metrics": name == "metrics.jsonl", "checkpoint": name.startswith(".last.pt."),
                "status": name.startswith(".status.json.")}[target]

    def fsync(fd):
        if os.path.exists(flag) and multiprocessing.parent_process() is not None:  # a worker, disk "full"
            path = os.readlink(f"/proc/self/fd/{fd}")
            if _hit(os.path.basename(path)) and (target == "metrics" or path not in seen):
                seen.append(path)
                if len(seen) == nth:
                    if target == "metrics":  # half of the line reached the disk
                        os.ftruncate(fd, os.fstat(fd).st_size - 25)
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    os.fsync = fsync

    from symscale.train import loop  # every training step of every run, counted by run

    real_step = loop._Run.train_step

    def train_step(self, batch):
        with open(os.environ["FULL_DISK_STEPS"], "a") as fh:
            fh.write(self.out.name + "\\n")
        return real_step(self, batch)

    loop._Run.train_step = train_step
    """
)


@pytest.fixture(scope="module")
def toy_xyz72(tmp_path_factory) -> Path:
    from symscale.data.readers import write_structures
    from symscale.data.toy import toy_structures

    path = tmp_path_factory.mktemp("toy72") / "toy.xyz"
    write_structures(path, toy_structures(72, seed=0))
    return path


def _study_cli(spec: Path, study: Path, env: dict) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "symscale", "study", str(spec), "--dir", str(study), "--no-progress"]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=400)


@pytest.mark.parametrize(
    ("target", "nth"),
    [
        pytest.param("metrics", 3, marks=pytest.mark.slow),  # the third evaluation's line of the first run, torn
        pytest.param("checkpoint", 3, marks=pytest.mark.slow),  # its third last.pt
        pytest.param("status", 2, marks=pytest.mark.slow),  # its `finished` status
    ],
)
def test_a_study_into_a_full_disk_stops_in_one_line_and_resumes(tmp_path, toy_xyz72, target, nth):
    """Slow (two studies of two tiny runs in child processes: about 40 s each on an idle 2-core machine);
    the engine's part of it is in the default suite below."""
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(_FULL_DISK)
    flag, steps = tmp_path / "disk-is-full", tmp_path / "steps.txt"
    flag.touch()
    env = {"PYTHONPATH": f"{inject}{os.pathsep}{SRC}", "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin",
           "FULL_DISK_FLAG": str(flag), "FULL_DISK_AT": target, "FULL_DISK_NTH": str(nth),
           "FULL_DISK_STEPS": str(steps), "HOME": str(tmp_path)}  # fmt: skip
    spec = _spec_yaml(tmp_path / "s.yaml", toy_xyz72, family="{arch: mpnn, widths: [4, 8]}", val=8)
    text = spec.read_text().replace("prefixes: [0.5, 1.0]", "prefixes: [1.0]")
    text = text.replace("eval_points: 2, eval_first_fraction: 0.5", "eval_points: 4, eval_first_fraction: 0.25")
    spec.write_text(text)
    study = tmp_path / "study"

    done = _study_cli(spec, study, env)
    err = done.stderr.strip()
    assert done.returncode == 2, (done.returncode, err[-3000:])
    assert "Traceback" not in err, err
    lines = err.splitlines()  # the data's warning (no molecule ids) from the study and its worker, then:
    assert [x for x in lines if "error" in x.lower() or "disk" in x.lower()] == lines[-1:], err
    err = lines[-1]
    assert err.startswith("symscale study: error: no space left on device (disk full): cannot write "), err
    assert "no space left on device (disk full)" in err and "the study stopped" in err, err
    where = {"metrics": "metrics.jsonl", "checkpoint": "last.pt", "status": "status.json"}[target]
    assert where in err, err  # what was being written, and where
    first = steps.read_text().split()
    (hit,) = set(first)  # the study stopped at the first run: it did not go on to fail run after run
    run = study / "runs" / hit
    json.loads((run / "status.json").read_text())  # whole JSON, never torn
    status = rundir.read_status(run)
    assert status["status"] in ("running", "failed"), status
    if status["status"] == "failed":
        assert rundir.stopped_by_filesystem(status), status
    lines = rundir.read_metrics(run)  # the tolerant reader reads what is there
    assert len(lines) == (2 if target == "metrics" else 3 if target == "checkpoint" else 4)
    assert (rundir.torn_bytes(run) > 0) == (target == "metrics")
    assert not [p for p in study.rglob("*") if p.name.endswith(".tmp")]
    assert not list(study.glob("runs/*.lock"))

    flag.unlink()  # space is freed: the same command finishes the study
    again = _study_cli(spec, study, env)
    assert again.returncode == 0, again.stderr[-3000:]
    info = rundir.read_json(run / "run.json")
    evals, total = info["eval_steps"], info["total_steps"]
    checkpointed = {"metrics": evals[1], "checkpoint": evals[1], "status": total}[target]
    redone = steps.read_text().split().count(hit) - total  # the file holds both invocations' steps
    assert 0 <= redone <= len(first) - checkpointed, (redone, evals)  # at most the steps since the checkpoint
    for run_dir in (p for p in (study / "runs").iterdir() if p.is_dir()):
        assert rundir.read_status(run_dir)["status"] == "finished"
        assert [m["step"] for m in rundir.read_metrics(run_dir)] == rundir.read_json(run_dir / "run.json")[
            "eval_steps"]  # fmt: skip
        assert rundir.torn_bytes(run_dir) == 0
    assert json.loads((study / "study.json").read_text())["finished"] == 2


def test_a_run_stopped_by_a_full_disk_stops_the_study_and_is_resumed_without_retry_failed(tmp_path):
    from fake_runs import fake_config
    from symscale.study.executors import RunTask, execute_run
    from symscale.study.runner import plan_tasks
    from symscale.study.spec import RunPlan

    run = tmp_path / "runs" / "mpnn-w4"
    outcome = execute_run(RunTask("mpnn-w4", str(run), fake_config(), _disk_full_run))
    assert outcome.status == "stopped" and "no space left on device" in outcome.reason, outcome
    assert str(run / "checkpoints" / "last.pt") in outcome.reason  # what and where
    status = rundir.read_status(run)
    assert status["status"] == "failed" and rundir.stopped_by_filesystem(status), status
    assert not (run / rundir.ERROR).exists()  # no traceback file: it is not the run's failure
    plan = RunPlan("mpnn-w4", "mpnn", 4, 0, "none", 1.0, fake_config())
    (task,) = plan_tasks(tmp_path, [plan], {}, retry_failed=False, run_fn=_disk_full_run)  # resumed
    assert rundir.read_status(run)["status"] == "pending"
    rundir.write_status(run, "failed", "non-finite loss")  # a run's own failure stays failed
    assert plan_tasks(tmp_path, [plan], {}, retry_failed=False, run_fn=_disk_full_run) == []


def _disk_full_run(config, run_dir):
    from symscale.train import checkpoint

    rundir.write_status(run_dir, "running")
    (Path(run_dir) / "checkpoints").mkdir(parents=True, exist_ok=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(_full_disk()))
        checkpoint.save_checkpoint(Path(run_dir) / "checkpoints" / "last.pt", {"step": 1})


# ----------------------------------------------------------------------------------------------------------
# a bad structure deep in a prefix (row 5,000; the old up-front check read only the first 256): one line
# naming the file and the row, before any training step


@pytest.fixture(scope="module")
def deep_bad(tmp_path_factory) -> Path:
    import dataclasses

    import numpy as np

    from symscale.data.readers import write_structures
    from symscale.data.toy import toy_structures

    base = toy_structures(50, seed=4)
    rows = [base[i % 50] for i in range(6000)]
    rows[5000] = dataclasses.replace(rows[5000], forces=np.full_like(np.asarray(rows[5000].forces), np.nan))
    path = tmp_path_factory.mktemp("deep") / "deep.aselmdb"
    write_structures(path, rows)
    return path


def test_the_up_front_check_finds_a_bad_structure_at_row_5000(deep_bad):
    from symscale.data.prefix import check_run_data

    config = _tiny(data=str(deep_bad), n_val=50)
    with pytest.raises(SymscaleError, match="structure 5000: NaN or inf in forces") as info:
        check_run_data(config)
    assert str(deep_bad) in str(info.value) and "\n" not in str(info.value)
    check_run_data(_tiny(data=str(deep_bad), n_val=50, n_train=100))  # a prefix without it is fine


def test_train_on_a_bad_structure_at_row_5000_fails_before_any_step(deep_bad, tmp_path, capsys, monkeypatch):
    from symscale.cli import main
    from symscale.train import loop

    steps = []
    real = loop._Run.train_step
    monkeypatch.setattr(loop._Run, "train_step", lambda self, batch: steps.append(1) or real(self, batch))
    out = tmp_path / "run"
    argv = ["train", "--arch", "mpnn", "--width", "4", "--data", str(deep_bad), "--out", str(out), "--no-progress"]
    code = main(argv + ["--set", "n_val=50", "--set", "pack_max_structures=0", "--set", "compute_accounting=false"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert f"{deep_bad}: structure 5000: NaN or inf in forces" in err, err
    assert steps == []  # it costs no training: found from the dataset index before the first step
    assert not (out / "checkpoints").exists()


# ----------------------------------------------------------------------------------------------------------
# item 5 as it happened: two `symscale train` started together on one --out


@pytest.mark.slow
def test_two_trains_started_together_on_one_out_train_it_once(tmp_path, toy_xyz72):
    """Slow (two child processes that import torch and train, about 30 s on an idle 2-core machine)."""
    out, go = tmp_path / "run", tmp_path / "go"
    gate = f"import pathlib, sys, time\nwhile not pathlib.Path({str(go)!r}).exists(): time.sleep(0.01)\n"
    start = gate + "from symscale.cli import main\nsys.exit(main(sys.argv[1:]))"
    argv = ["train", "--arch", "mpnn", "--width", "4", "--data", str(toy_xyz72), "--out", str(out),
            "--set", "n_val=8", "--no-progress"]  # fmt: skip
    env = {"PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    procs = [subprocess.Popen([sys.executable, "-c", start, *argv], env=env, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]  # fmt: skip
    time.sleep(8.0)  # both imported and waiting at the gate
    go.touch()
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    refused = [err for code, err in results if code == 2]
    assert codes in ([0, 0], [0, 2]), results  # one trains; the other waits its turn (finished) or is refused
    for err in refused:
        assert "is in use: locked by pid" in err and "Traceback" not in err, err
    steps = [m["step"] for m in rundir.read_metrics(out)]
    assert steps == rundir.read_json(out / "run.json")["eval_steps"]  # every evaluation once, never twice
    assert rundir.read_status(out)["status"] == "finished" and not rundir.lock_path(out).exists()


def _die_on_a_chunk_of_ones(weights):
    """A bootstrap chunk function whose worker is killed (SIGKILL, as the kernel's OOM killer does) on a chunk
    that starts with a 1."""
    import signal

    if weights[0, 0] == 1.0:
        os.kill(os.getpid(), signal.SIGKILL)
    return weights.sum(axis=1)


def test_a_killed_bootstrap_worker_ends_the_fit_with_one_line(monkeypatch):
    # multiprocessing.Pool.imap waited for the killed worker's chunk for ever
    import threading

    import numpy as np

    from symscale.fit import bootstrap
    from symscale.fit.bootstrap import map_chunks

    monkeypatch.setattr(bootstrap, "POOL_START_SECONDS", 0.0)  # a chunk this cheap would otherwise run here

    weights = np.zeros((16, 3))
    weights[8:, 0] = 1.0  # two workers, eight chunks of two: chunk 4 on kills its worker
    outcome: dict = {}

    def fit() -> None:
        try:
            outcome["value"] = map_chunks(_die_on_a_chunk_of_ones, weights, workers=2)
        except SymscaleError as err:
            outcome["error"] = str(err)

    thread = threading.Thread(target=fit, daemon=True)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "the fit still waits for the killed worker"
    assert "bootstrap worker process died" in outcome.get("error", "") and "\n" not in outcome["error"]
