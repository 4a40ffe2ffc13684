"""The slurm engine through submitit's local executor: array tasks, requeue on preemption (fake run)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from fake_runs import fake_config, fake_tasks, pythonpath, same_as_reference
from symscale.errors import SymscaleError
from symscale.rundir import lock_path
from symscale.study.executors import RunTask
from symscale.study.slurm import JOBS_FILE, SlurmExecutor
from symscale.study.spec import SlurmSpec


def test_slurm_executor_via_submitit_local(tmp_path, monkeypatch):
    pytest.importorskip("submitit")
    monkeypatch.setenv("PYTHONPATH", pythonpath())  # the job processes import the fake run function
    tasks = fake_tasks(tmp_path / "runs")
    finished = []
    ex = SlurmExecutor(tmp_path / "slurm", SlurmSpec(local=True, time_min=5), threads=1)
    outcomes = ex.run(tasks, on_finish=lambda t, o: finished.append(t.run_id))
    assert sorted(finished) == ["r0", "r1", "r2"]
    assert all(o.status == "finished" for o in outcomes), outcomes
    assert same_as_reference(tmp_path, tasks)


def test_slurm_requeue_resumes_from_checkpoint(tmp_path, monkeypatch):
    """A preempted (timed-out) task is checkpointed by submitit, requeued and resumes where it stopped."""
    submitit = pytest.importorskip("submitit")
    monkeypatch.setenv("PYTHONPATH", pythonpath())
    from symscale.study.slurm import CheckpointableRun

    task = fake_tasks(tmp_path / "runs", 1, steps=30, sleep=0.1)[0]
    ex = submitit.LocalExecutor(folder=tmp_path / "slurm", max_num_timeout=3)
    ex.update_parameters(timeout_min=5)
    job = ex.submit(CheckpointableRun(), task)
    ckpt = Path(task.run_dir) / "checkpoints" / "last.json"
    import time

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (ckpt.exists() and json.loads(ckpt.read_text())["step"] >= 3):
        time.sleep(0.05)
    # the signal submitit's controller sends to a task before its time limit (SLURM: at preemption)
    pid = json.loads(lock_path(task.run_dir).read_text())["pid"]
    os.kill(pid, signal.SIGUSR2)
    outcome = job.result()
    assert outcome.status == "finished"
    logs = "".join(p.read_text() for p in (tmp_path / "slurm").glob("*_log.*"))
    assert "requeue" in logs.lower()
    steps = [json.loads(line)["step"] for line in (Path(task.run_dir) / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 31))  # resumed: every step once
    assert same_as_reference(tmp_path, [task])


# ---------------------------------------------------------------- sbatch options, records, errors (no cluster)


def _slurm_script(task: RunTask, settings: SlurmSpec, threads: int | None = None) -> str:
    """The sbatch script submitit would submit for `task` (nothing is submitted)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the current submitit option names: no deprecation warning
        ex = SlurmExecutor(Path("/nonexistent-folder"), settings, threads)._executor(task)
        return ex._make_submission_file_text("python -m run", "uid")


def test_sbatch_options_follow_the_spec_and_the_run_device(tmp_path):
    pytest.importorskip("submitit")
    settings = SlurmSpec(
        partition="gpu", qos="high", account="chem", time_min=90, mem_gb=16, constraint="a100",
        setup=("module load cuda/12", "source venv/bin/activate"), extra={"mail-type": "END", "exclusive": True},
    )  # fmt: skip
    cpu = RunTask("mpnn-w8-abc", str(tmp_path / "a"), fake_config(device="cpu"))
    script = _slurm_script(cpu, settings, threads=2)
    for flag in (
        "--job-name=mpnn-w8-abc", "--partition=gpu", "--qos=high", "--account=chem", "--time=90", "--mem=16384M",
        "--constraint=a100", "--cpus-per-task=2", "--mail-type=END", "--exclusive",
    ):  # fmt: skip
        assert f"#SBATCH {flag}\n" in script, (flag, script)
    assert "module load cuda/12\nsource venv/bin/activate\n" in script
    assert "gpus" not in script and "gres" not in script  # a CPU run asks for no GPU
    gpu = RunTask("esen-w8-abc", str(tmp_path / "b"), fake_config(device="cuda"))
    assert "#SBATCH --gpus-per-node=1\n" in _slurm_script(gpu, SlurmSpec())
    assert "#SBATCH --gpus-per-node=2\n" in _slurm_script(cpu, SlurmSpec(gpus_per_task=2))
    assert "#SBATCH --cpus-per-task=1\n" in _slurm_script(cpu, SlurmSpec())


def _fake_slurm(tmp_path: Path, monkeypatch, *, refuse: bool = False) -> Path:
    """sbatch and squeue stand-ins first on PATH: sbatch answers job ids 101, 102, ... (or refuses) and
    counts its calls; squeue lists the jobs in `squeue.txt` ("id|STATE" lines)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    state = tmp_path / "fake"
    state.mkdir()
    (state / "squeue.txt").write_text("")
    sbatch = (
        f'echo x >> {state}/calls\n'
        + ('echo "sbatch: error: Invalid generic resource (gres) specification" >&2; exit 1\n' if refuse else
           f'echo "Submitted batch job $((100 + $(wc -l < {state}/calls)))"\n')
    )  # fmt: skip
    (bin_dir / "sbatch").write_text("#!/bin/sh\n" + sbatch)
    (bin_dir / "squeue").write_text(f"#!/bin/sh\ncat {state}/squeue.txt\n")
    for exe in bin_dir.iterdir():
        exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return state


def _sbatch_calls(state: Path) -> int:
    calls = state / "calls"
    return len(calls.read_text().splitlines()) if calls.exists() else 0


def test_sbatch_refusal_is_one_line_and_leaves_no_files(tmp_path, monkeypatch):
    pytest.importorskip("submitit")
    state = _fake_slurm(tmp_path, monkeypatch, refuse=True)
    folder = tmp_path / "study" / "slurm"
    ex = SlurmExecutor(folder, SlurmSpec(wait=False), threads=1)
    with pytest.raises(SymscaleError) as err:
        ex.run(fake_tasks(tmp_path / "runs", 2))
    message = str(err.value)
    assert message == "sbatch refused run r0: sbatch: error: Invalid generic resource (gres) specification"
    assert _sbatch_calls(state) == 1  # stopped at the first refusal
    assert [p for p in folder.rglob("*")] == []  # no .pkl, no submission script, no job record


def test_queued_or_running_runs_are_not_submitted_again(tmp_path, monkeypatch):
    pytest.importorskip("submitit")
    state = _fake_slurm(tmp_path, monkeypatch)
    folder = tmp_path / "study" / "slurm"
    tasks = fake_tasks(tmp_path / "runs", 2)
    SlurmExecutor(folder, SlurmSpec(wait=False), threads=1).run(tasks)
    jobs = json.loads((folder / JOBS_FILE).read_text())
    assert jobs == {"r0": "101", "r1": "102"} and _sbatch_calls(state) == 2
    (state / "squeue.txt").write_text("101|RUNNING\n102|PENDING\n")
    SlurmExecutor(folder, SlurmSpec(wait=False), threads=1).run(tasks)  # the study rerun while jobs are live
    assert _sbatch_calls(state) == 2
    (state / "squeue.txt").write_text("101|RUNNING\n102|FAILED\n")  # r1's job is over: r1 is submitted again
    SlurmExecutor(folder, SlurmSpec(wait=False), threads=1).run(tasks)
    assert _sbatch_calls(state) == 3
    assert json.loads((folder / JOBS_FILE).read_text()) == {"r0": "101", "r1": "103"}


def test_workers_with_slurm_is_refused_in_one_line(tmp_path, capsys):
    from symscale.cli import main

    spec = tmp_path / "s.yaml"
    spec.write_text("dataset: {builtin: 20}\nfamilies: [{arch: mpnn, widths: [4]}]\nexecutor: {kind: slurm}\n")
    assert main(["study", str(spec), "--workers", "4", "--dir", str(tmp_path / "st")]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--workers" in err and "slurm" in err, err
    assert not (tmp_path / "st").exists()


def test_waiting_study_follows_a_live_job_instead_of_submitting(tmp_path, monkeypatch):
    """r0's recorded job is running: the study follows it to its end (status from the run directory) and
    submits only r1, whose job leaves the queue without a result and is recorded as failed."""
    pytest.importorskip("submitit")
    import threading

    from symscale import rundir

    state = _fake_slurm(tmp_path, monkeypatch)
    folder = tmp_path / "study" / "slurm"
    folder.mkdir(parents=True)
    (folder / JOBS_FILE).write_text(json.dumps({"r0": "77"}))
    (state / "squeue.txt").write_text("77|RUNNING\n")
    tasks = fake_tasks(tmp_path / "runs", 2)

    def r0_finishes():
        rundir.write_status(tasks[0].run_dir, "finished")
        (state / "squeue.txt").write_text("")

    threading.Timer(1.0, r0_finishes).start()
    started, finished = [], {}
    outcomes = SlurmExecutor(folder, SlurmSpec(poll_s=0.1), threads=1).run(
        tasks, on_start=lambda t: started.append(t.run_id), on_finish=lambda t, o: finished.update({t.run_id: o})
    )
    assert _sbatch_calls(state) == 1 and len(outcomes) == 2
    assert finished["r0"].status == "finished"
    assert finished["r1"].status == "failed" and "without a result" in finished["r1"].reason
    assert started == ["r0", "r1"]  # r0 at the first look at squeue; r1, never seen running, when it ended
    assert json.loads((folder / JOBS_FILE).read_text()) == {"r0": "77", "r1": "101"}
