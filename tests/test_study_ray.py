"""The ray engine on a local cluster (fake run function)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fake_runs import fake_config, fake_run
from symscale.study.executors import RunTask, execute_run
from symscale.study.ray import RayExecutor
from symscale.study.spec import RaySpec

TESTS = str(Path(__file__).parent)


def _pythonpath() -> str:
    """The tests folder (the fake run functions) before the caller's PYTHONPATH (the checkout under test)."""
    return TESTS + os.pathsep + os.environ.get("PYTHONPATH", "")


def _tasks(root: Path, n: int = 3, **cfg) -> list[RunTask]:
    return [
        RunTask(f"r{i}", str(root / f"r{i}"), fake_config(width=2 + i, **{"steps": 3, **cfg}), fake_run)
        for i in range(n)
    ]


def _same_as_reference(tmp_path: Path, tasks: list[RunTask]) -> bool:
    for t in tasks:
        ref = tmp_path / "ref" / t.run_id
        execute_run(RunTask(t.run_id, str(ref), t.config, fake_run))
        if (Path(t.run_dir) / "metrics.jsonl").read_text() != (ref / "metrics.jsonl").read_text():
            return False
    return True


@pytest.mark.slow
def test_ray_executor_local_cluster(tmp_path, monkeypatch):
    pytest.importorskip("ray")
    monkeypatch.setenv("PYTHONPATH", _pythonpath())
    tasks = _tasks(tmp_path / "runs")
    finished = []
    ex = RayExecutor(RaySpec(num_cpus=2, cpus_per_run=1), threads=1)
    outcomes = ex.run(tasks, on_finish=lambda t, o: finished.append(t.run_id))
    assert sorted(finished) == ["r0", "r1", "r2"]
    assert all(o.status == "finished" for o in outcomes), outcomes
    assert _same_as_reference(tmp_path, tasks)
