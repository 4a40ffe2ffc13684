"""The slurm engine on a real SLURM cluster (sbatch, squeue, scancel): a tiny study with the real training loop,
one job preempted with USR2 once it has a checkpoint, requeued, resumed to the metrics of an uninterrupted run.

Needs a cluster that `sinfo` reaches (`.ci/slurm-up.sh` starts a single-node one and prints its SLURM_CONF);
without one every test here is skipped with the reason (`pytest -ra` lists it).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from symscale.errors import SymscaleError
from symscale.study.runner import run_study
from symscale.study.slurm import JOBS_FILE, SlurmExecutor, squeue_states
from symscale.study.spec import expand_runs, load_spec
from test_study_real import deterministic_metrics

pytest.importorskip("submitit", reason="the slurm tests need submitit (pip install 'symscale[slurm]')")


def _cluster_reason() -> str | None:
    """None when `sinfo` answers with a usable node, else why the tests cannot run."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return "no SLURM client here (sinfo/sbatch not on PATH); .ci/slurm-up.sh starts a single-node cluster"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "sinfo did not answer within 20 s (is slurmctld running? is SLURM_CONF set?)"
    if out.returncode != 0:
        return f"sinfo failed: {(out.stderr.strip().splitlines() or ['no output'])[-1]}"
    if not any(s.strip("*~#") in ("idle", "mixed", "allocated") for s in out.stdout.split()):
        return f"no SLURM node is up (sinfo states: {' '.join(out.stdout.split()) or 'none'})"
    return None


REASON = _cluster_reason()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"no SLURM cluster: {REASON}")


@pytest.fixture(scope="module")
def toy_xyz(tmp_path_factory) -> Path:
    from symscale.data.readers import write_structures
    from symscale.data.toy import toy_structures

    path = tmp_path_factory.mktemp("data") / "toy.xyz"
    write_structures(path, toy_structures(48, seed=0))
    return path


def slurm_spec(tmp_path: Path, data: Path, **slurm) -> Path:
    """Two CPU runs of 60 steps each (batch 2, 3 epochs), a checkpoint at each of 5 evaluations."""
    raw = {
        "name": "tinyslurm",
        "dataset": {"path": str(data), "val": 8},
        "families": [{"arch": "mpnn", "widths": [8]}, {"arch": "egnn", "widths": [8]}],
        "evaluation": {"eval_points": 5, "eval_first_fraction": 0.2, "eval_batch_size": 8},
        "training": {"batch_size": 2, "epochs": 3, "lr": 3e-3, "warmup_steps": 2, "device": "cpu"},
        "executor": {
            "kind": "slurm",
            "threads_per_worker": 1,
            # append: the requeued job keeps the first attempt's log (SLURM truncates it by default)
            "slurm": {"time_min": 10, "poll_s": 1, "extra": {"open-mode": "append"}, **slurm},
        },
        "report": False,
    }
    path = tmp_path / "tinyslurm.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_sbatch_refusal_is_one_line_and_leaves_nothing(tmp_path, toy_xyz):
    """A GPU asked of a GPU-less cluster: sbatch refuses; one SymscaleError line, no .pkl left, no job."""
    spec = load_spec(slurm_spec(tmp_path, toy_xyz, gpus_per_task=1))
    with pytest.raises(SymscaleError) as err:
        run_study(spec, tmp_path / "study", out=lambda line: None)
    message = str(err.value)
    assert "\n" not in message and message.startswith("sbatch refused run "), message
    assert not list((tmp_path / "study").rglob("*.pkl"))
    assert not list((tmp_path / "study" / "slurm").rglob("*.sh"))
    assert not (tmp_path / "study" / "slurm" / JOBS_FILE).exists()


def _wait_for(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def _checkpointed_run(study: Path) -> str | None:
    ckpts = [p for p in study.glob("runs/*/checkpoints/last.pt") if not (p.parent / "final.pt").exists()]
    return ckpts[0].parent.parent.name if ckpts else None


def test_preempted_job_is_requeued_and_resumes_bit_identical(tmp_path, toy_xyz):
    """Submit through sbatch (one job per run, named by its run id); rerunning while the jobs are queued
    submits nothing; USR2 to one job after its first checkpoint requeues it (same job id), and the study's
    metrics equal an uninterrupted local run's (timing fields excluded)."""
    spec_path = slurm_spec(tmp_path, toy_xyz)
    study = tmp_path / "study"
    script = (
        "from symscale.study.runner import run_study; from symscale.study.spec import load_spec; "
        f"run_study(load_spec({str(spec_path)!r}), {str(study)!r}, out=print)"
    )
    log = (tmp_path / "study.log").open("w")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=log, stderr=subprocess.STDOUT)
    try:
        jobs_file = study / "slurm" / JOBS_FILE
        jobs = _wait_for(lambda: jobs_file.exists() and len(json.loads(jobs_file.read_text())) == 2 and
                         json.loads(jobs_file.read_text()), 120, "two submitted jobs")  # fmt: skip
        names = subprocess.run(["squeue", "--me", "-h", "-o", "%i %j"], capture_output=True, text=True).stdout
        for run_id, job_id in jobs.items():
            assert f"{job_id} {run_id}" in names, names  # jobs are named by their run id

        # a second invocation while the jobs are queued or running submits nothing
        spec = load_spec(spec_path, overrides={"executor": {"slurm": {"wait": False}}})
        tasks_again = [_task(p, study) for p in expand_runs(spec)]
        SlurmExecutor(study / "slurm", spec.executor.slurm, 1).run(tasks_again)
        assert json.loads(jobs_file.read_text()) == jobs
        assert len([j for j in squeue_states() if j in jobs.values()]) == 2

        run_id = _wait_for(lambda: _checkpointed_run(study), 240, "a checkpoint of a running job")
        job_id = jobs[run_id]
        subprocess.run(["scancel", "--signal=USR2", job_id], check=True, timeout=30)
        # SLURM holds a requeued job back for about two minutes (its begin time); start it now instead
        _wait_for(lambda: squeue_states().get(job_id) == "PENDING", 120, f"job {job_id} requeued (pending)")
        subprocess.run(["scontrol", "update", f"jobid={job_id}", "StartTime=now"], check=True, timeout=30)
        assert proc.wait(timeout=420) == 0, (tmp_path / "study.log").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            subprocess.run(["scancel", *json.loads((study / "slurm" / JOBS_FILE).read_text()).values()])
    logs = "".join(p.read_text() for p in (study / "slurm").glob(f"{job_id}_*_log.*"))
    assert f"Requeued job {job_id}" in logs, logs[-2000:]
    assert (study / "study.json").exists() and json.loads((study / "study.json").read_text())["finished"] == 2

    clean = tmp_path / "clean"
    run_study(load_spec(spec_path), clean, kind="local", out=lambda line: None)
    preempted, reference = deterministic_metrics(study), deterministic_metrics(clean)
    assert set(preempted) == set(reference) and len(preempted) == 2
    assert preempted == reference
    steps = [m["step"] for m in preempted[run_id]]
    assert steps == sorted(set(steps))  # every evaluation once, although the job ran twice


def _task(plan, study: Path):
    from symscale.study.executors import RunTask

    return RunTask(plan.run_id, str(study / "runs" / plan.run_id), plan.config)
