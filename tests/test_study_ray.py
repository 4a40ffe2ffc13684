"""The ray engine on a local cluster (fake run function)."""

from __future__ import annotations

import pytest

from fake_runs import fake_tasks, pythonpath, same_as_reference
from symscale.errors import SymscaleError
from symscale.study.ray import RayExecutor
from symscale.study.spec import RaySpec


def test_ray_local_cluster_workers_bound_runs_and_start_means_started(tmp_path, monkeypatch):
    """A real local Ray cluster with room for two runs at once: workers=1 runs them one after the other,
    and each run's "start" comes when it starts (after the previous one finished), not at submission."""
    pytest.importorskip("ray")
    monkeypatch.setenv("PYTHONPATH", pythonpath())
    tasks = fake_tasks(tmp_path / "runs", sleep=0.3)
    events = []
    ex = RayExecutor(RaySpec(num_cpus=2, cpus_per_run=1), threads=1, workers=1)
    outcomes = ex.run(
        tasks,
        on_start=lambda t: events.append(("start", t.run_id)),
        on_finish=lambda t, o: events.append(("end", t.run_id)),
    )
    assert all(o.status == "finished" for o in outcomes), outcomes
    assert events == [(kind, f"r{i}") for i in range(3) for kind in ("start", "end")], events
    assert same_as_reference(tmp_path, tasks)


def test_ray_workers_must_be_a_positive_integer():
    pytest.importorskip("ray")
    with pytest.raises(SymscaleError, match="invalid workers: got 0"):
        RayExecutor(RaySpec(), workers=0)


def test_ray_address_without_a_cluster_is_one_line(tmp_path, monkeypatch):
    pytest.importorskip("ray")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))  # no session of another test or user is found
    with pytest.raises(SymscaleError) as err:
        RayExecutor(RaySpec(address="auto")).run(fake_tasks(tmp_path / "runs", 1))
    message = str(err.value)
    assert "\n" not in message and message.startswith("no Ray cluster at executor.ray.address 'auto'"), message
    assert not (tmp_path / "runs").exists()  # nothing ran
