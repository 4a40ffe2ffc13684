"""Studies end to end with a fake run function: resumption, failures, catalogue, laws.csv."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from fake_runs import fake_diverging_esen, fake_run
from symscale.study.catalogue import LAWS_COLUMNS, Catalogue
from symscale.study.executors import execute_run
from symscale.study.runner import plan_tasks, run_study
from symscale.study.spec import expand_runs, load_spec

FAKE = fake_run
TESTS = str(Path(__file__).parent)


def _spec_file(tmp_path: Path, steps: int = 4, sleep: float | None = None) -> Path:
    data = tmp_path / "data.xyz"
    data.write_text("")  # the fake run function never reads it; the study only checks it exists
    raw = {
        "name": "fake",
        "dataset": {"path": str(data), "val": 5},
        "families": [{"arch": "mpnn", "widths": [3, 5]}, {"arch": "egnn", "widths": [2, 4]}],
        # the fake run function reads eval_points as its steps and eval_first_fraction as seconds per step
        "evaluation": {"eval_points": steps, **({"eval_first_fraction": sleep} if sleep else {})},
        "executor": {"kind": "local", "workers": 2, "threads_per_worker": 1},
        "report": False,
        # these tests are about runs, not fits: few resamples keep the study's fit stage to a second
        "fits": {"bootstrap": 20},
    }
    path = tmp_path / "fake.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _metrics(study: Path) -> dict[str, str]:
    return {p.parent.name: p.read_text() for p in sorted((study / "runs").glob("*/metrics.jsonl"))}


def test_tiny_study_catalogue_and_laws(tmp_path):
    spec = load_spec(_spec_file(tmp_path))
    study = tmp_path / "study"
    lines = []
    result = run_study(spec, study, run_fn=FAKE, out=lines.append)
    assert (result.n_runs, result.finished, result.failed, result.pending) == (4, 4, 0, 0)
    assert sum("start" in line for line in lines) == 4 and any("ETA" in line for line in lines)
    with (study / "laws.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == LAWS_COLUMNS
    assert len(rows) == 4 * 4 and {r["arch"] for r in rows} == {"mpnn", "egnn"}
    assert all(float(r["H"]) > 0 and float(r["N"]) > 0 for r in rows)
    first = _metrics(study)
    # the catalogue is an index: deleted, it is rebuilt from the run directories with the same content
    before = Catalogue(study).refresh()
    (study / "catalogue.sqlite").unlink()
    assert Catalogue(study).refresh() == before
    (study / "catalogue.sqlite").write_text("not a database")
    assert Catalogue(study).refresh() == before
    # stale rows are re-read: a run directory that changed is indexed again
    some = sorted(p for p in (study / "runs").glob("*") if p.is_dir())[0]
    with (some / "metrics.jsonl").open("a") as fh:
        fh.write(json.dumps({"step": 99, "val_loss": 0.5, "atoms_seen": 1e4}) + "\n")
    record = {r.run_id: r for r in Catalogue(study).refresh()}[some.name]
    assert (record.n_evals, record.step, record.loss) == (5, 99, 0.5)
    (some / "metrics.jsonl").write_text("".join(line + "\n" for line in first[some.name].splitlines()))
    # a finished study is not rerun
    lines.clear()
    again = run_study(spec, study, run_fn=FAKE, out=lines.append)
    assert again.finished == 4 and _metrics(study) == first
    assert "all 4 runs of fake are finished" in lines[0] and not any("start" in line for line in lines)


def test_failing_run_is_recorded_and_the_study_goes_on(tmp_path):
    path = _spec_file(tmp_path)
    raw = yaml.safe_load(path.read_text())
    raw["families"].append({"arch": "esen", "widths": [2], "overrides": {"lr_boost": 1}})
    path.write_text(yaml.safe_dump(raw))
    spec = load_spec(path, overrides={"training": {"lr": 1e-3}})
    # make the esen run diverge: a per-family override the fake does not know -> KeyError? no: use lr
    bad = [p for p in expand_runs(spec) if p.arch == "esen"][0]
    study = tmp_path / "study"
    (study / "runs" / bad.run_id).mkdir(parents=True)
    result = run_study(spec, study, run_fn=fake_diverging_esen, out=lambda s: None)
    assert (result.finished, result.failed) == (4, 1)
    assert result.failures == ((bad.run_id, "non-finite loss"),)
    # failed stays failed on a rerun, unless retried
    result = run_study(spec, study, run_fn=fake_diverging_esen, out=lambda s: None)
    assert result.failed == 1
    result = run_study(spec, study, run_fn=FAKE, retry_failed=True, out=lambda s: None)
    assert (result.finished, result.failed) == (5, 0)


def test_sigkill_of_the_study_then_rerun_gives_identical_metrics(tmp_path):
    spec_path = _spec_file(tmp_path, steps=8, sleep=0.2)
    study = tmp_path / "killed"
    script = (
        f"import sys; sys.path.insert(0, {TESTS!r}); from symscale.study.runner import run_study; "
        f"from symscale.study.spec import load_spec; from fake_runs import fake_run; "
        f"run_study(load_spec({str(spec_path)!r}), {str(study)!r}, run_fn=fake_run)"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # wait until two runs are mid-way
        ckpts = list(study.glob("runs/*/checkpoints/last.json"))
        if len(ckpts) >= 2 and all(json.loads(c.read_text())["step"] >= 2 for c in ckpts[:2]):
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    statuses = [json.loads(p.read_text())["status"] for p in study.glob("runs/*/status.json")]
    assert "running" in statuses and statuses.count("finished") < 4
    resumed = run_study(load_spec(spec_path), study, run_fn=FAKE, out=lambda s: None)
    assert resumed.finished == 4
    clean = tmp_path / "clean"  # the uninterrupted reference, run in this process
    for task in plan_tasks(clean, expand_runs(load_spec(spec_path)), {}, retry_failed=False, run_fn=FAKE):
        execute_run(task)
    assert _metrics(study) == _metrics(clean) and len(_metrics(clean)) == 4
    assert not list(study.glob("runs/*.lock"))


def test_missing_dataset_stops_before_any_run(tmp_path):
    spec = load_spec(_spec_file(tmp_path), overrides={"dataset": {"path": str(tmp_path / "nope")}})
    with pytest.raises(Exception, match="dataset not found"):
        run_study(spec, tmp_path / "s", run_fn=FAKE, out=lambda s: None)
    assert not list((tmp_path / "s" / "runs").glob("*"))


@pytest.mark.parametrize(
    "module, cls, extra", [("submitit", "slurm", "symscale[slurm]"), ("ray", "ray", "symscale[ray]")]
)
def test_missing_extra_is_one_clear_line(monkeypatch, tmp_path, module, cls, extra):
    from symscale.errors import SymscaleError
    from symscale.study.runner import make_executor
    from symscale.study.spec import ExecutorSpec

    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    with pytest.raises(
        SymscaleError,
        match=rf"the {cls} executor needs {module}: pip install '{extra}'".replace("[", r"\[").replace("]", r"\]"),
    ):
        make_executor(ExecutorSpec(), tmp_path, kind=cls)


def test_the_grid_is_typed_once_and_the_plan_file_says_the_prefix(tmp_path):
    """One typed path: each task carries the RunConfig the spec expanded (not a dict to validate again), and
    the plan beside the run records its grid prefix and the config that gives its id."""
    from symscale import rundir
    from symscale.config import RunConfig

    spec = load_spec(_spec_file(tmp_path))
    plans = expand_runs(spec)
    tasks = plan_tasks(tmp_path / "study", plans, {}, retry_failed=False, run_fn=FAKE)
    assert [t.config for t in tasks] == [p.config for p in plans]
    assert all(isinstance(t.config, RunConfig) and t.run_fn is fake_run for t in tasks)
    for plan in plans:
        saved = rundir.read_plan(tmp_path / "study" / "runs" / plan.run_id)
        assert saved["prefix"] == plan.prefix == 1.0
        assert plan.run_id.endswith(RunConfig.from_dict(saved["config"]).config_hash()[:10])
