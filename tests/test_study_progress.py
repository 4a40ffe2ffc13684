"""The study-level progress bar: runs done of the total, FLOPs done, ETA; on stderr, off unless a terminal."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
import yaml

from fake_runs import fake_config, fake_run
from symscale.study.executors import RunOutcome, RunTask
from symscale.study.progress import StudyBar

TESTS = str(Path(__file__).parent)


def _tasks(*flops: float) -> list[RunTask]:
    return [RunTask(f"r{i}", f"runs/r{i}", fake_config(width=2 + i), fake_run, None, c) for i, c in enumerate(flops)]


def _screen(buffer: io.StringIO) -> str:
    """What the terminal shows last: the text after the last carriage return."""
    return buffer.getvalue().split("\r")[-1]


def test_bar_shows_runs_flops_and_eta():
    buffer = io.StringIO()
    tasks = _tasks(1e9, 3e9)
    bar = StudyBar(tasks, enabled=True, file=buffer)
    bar.start(tasks[0])
    bar.start(tasks[1])
    assert "runs 0/2 done, 2 running" in _screen(buffer)
    bar.finish(tasks[0], RunOutcome("r0", "finished"))
    shown = _screen(buffer)
    assert "runs 1/2 done, 1 running" in shown and "1.00G/4.00G FLOPs" in shown, shown
    eta = shown.rsplit("<", 1)[1]
    assert eta[0].isdigit(), shown  # an ETA in time, not "?"
    bar.finish(tasks[1], RunOutcome("r1", "failed", "nan"))
    bar.close()
    assert "runs 2/2 done, 0 running, 1 failed" in _screen(buffer)
    assert "4.00G/4.00G FLOPs" in _screen(buffer)


def test_bar_counts_runs_without_estimates():
    buffer = io.StringIO()
    tasks = _tasks(0.0, 0.0, 0.0)
    bar = StudyBar(tasks, enabled=True, file=buffer)
    bar.finish(tasks[0], RunOutcome("r0", "finished"))
    shown = _screen(buffer)
    assert "runs 1/3 done" in shown and "FLOPs not estimated" in shown and "<" in shown, shown


def test_bar_is_off_when_not_a_terminal_unless_asked():
    buffer = io.StringIO()  # isatty() is False
    bar = StudyBar(_tasks(1e9), file=buffer)
    bar.finish(_tasks(1e9)[0], RunOutcome("r0", "finished"))
    bar.close()
    assert buffer.getvalue() == ""


@pytest.mark.parametrize(("flag", "expected"), [([], None), (["--progress"], True), (["--no-progress"], False)])
def test_cli_progress_flag(tmp_path, monkeypatch, flag, expected):
    from symscale.cli import main
    from symscale.study import runner

    seen = {}

    def fake_run_study(spec, study_dir, **kwargs):
        seen.update(kwargs)
        return runner.StudyResult(str(study_dir), 0, 0, 0, 0, 0)

    monkeypatch.setattr(runner, "run_study", fake_run_study)
    spec = tmp_path / "s.yaml"
    spec.write_text("dataset: {builtin: 20}\nfamilies: [{arch: mpnn, widths: [4]}]\n")
    assert main(["study", str(spec), "--dir", str(tmp_path / "st"), *flag]) == 0
    assert seen["progress"] is expected


def test_study_draws_the_bar_on_stderr(tmp_path, monkeypatch, capsys):
    from symscale.data.readers import write_structures
    from symscale.data.toy import toy_structures
    from symscale.study.runner import run_study
    from symscale.study.spec import load_spec

    monkeypatch.setenv("PYTHONPATH", TESTS + os.pathsep + os.environ.get("PYTHONPATH", ""))
    data = tmp_path / "toy.xyz"
    write_structures(data, toy_structures(24, seed=0))
    raw = {
        "dataset": {"path": str(data), "val": 4},
        "families": [{"arch": "mpnn", "widths": [4, 6]}],
        "evaluation": {"eval_points": 2},
        "executor": {"kind": "local", "workers": 1, "threads_per_worker": 1},
        "report": False,
    }
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(raw))
    run_study(load_spec(tmp_path / "s.yaml"), tmp_path / "st", run_fn=fake_run, progress=True, finalize=False)
    err = capsys.readouterr().err.split("\r")[-1]
    assert "runs 2/2 done, 0 running" in err and "FLOPs [" in err and "not estimated" not in err, err
