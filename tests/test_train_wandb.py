"""W&B logging for real, in offline mode: project = study, group = study, id = run id, resume allowed."""

from __future__ import annotations

import pytest

from symscale.config import RunConfig
from symscale.train.progress import ExtraLoggers, wandb_identity


@pytest.fixture
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))


def _study_run(tmp_path, run_id="mpnn-w8-0123456789"):
    study = tmp_path / "studies" / "folder-name"
    (study / "runs" / run_id).mkdir(parents=True)
    (study / "spec.yaml").write_text("name: tiny-2x2\n")
    return study / "runs" / run_id


def test_study_run_logs_to_the_study_project_and_resumes_its_run(offline, tmp_path):
    pytest.importorskip("wandb", reason="wandb is in the test extras (pip install -e '.[test]')")
    out = _study_run(tmp_path)
    config = RunConfig.from_dict({"arch": "mpnn", "width": 8}).to_dict()
    first = ExtraLoggers(out, tensorboard=False, wandb=True, run_name=out.name, config=config)
    run = first.wb
    assert (run.project, run.group, run.id) == ("tiny-2x2", "tiny-2x2", "mpnn-w8-0123456789")
    first.write({"step": 1, "val_loss": 0.5})
    first.close()
    again = ExtraLoggers(out, tensorboard=False, wandb=True, run_name=out.name, config=config, start_step=1)
    assert again.wb.id == run.id  # the resumed run continues the same W&B run
    again.write({"step": 2, "val_loss": 0.4})
    again.close()
    offline_dirs = sorted(p.name for p in (out / "wandb").glob("offline-run-*"))
    assert offline_dirs and all(name.endswith(run.id) for name in offline_dirs)


def test_run_outside_a_study_has_a_stable_id(tmp_path):
    config = RunConfig.from_dict({"arch": "mpnn", "width": 8}).to_dict()
    other = RunConfig.from_dict({"arch": "mpnn", "width": 16}).to_dict()
    one = wandb_identity(tmp_path / "run", config)
    assert one == wandb_identity(tmp_path / "run", config)
    assert one["project"] == "symscale" and one["group"] is None and one["id"].startswith("run-")
    assert wandb_identity(tmp_path / "run", other)["id"] != one["id"]


def test_tensorboard_resume_drops_events_after_the_resumed_step(monkeypatch, tmp_path):
    # tensorboard is not a test dependency: a stand-in SummaryWriter records how it was opened
    import sys
    import types

    from symscale.train import progress

    opened = []
    fake = types.ModuleType("torch.utils.tensorboard")
    fake.SummaryWriter = lambda **kwargs: opened.append(kwargs) or types.SimpleNamespace(close=lambda: None)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)
    monkeypatch.setattr(progress.importlib.util, "find_spec", lambda name: object())
    out = _study_run(tmp_path)
    ExtraLoggers(out, tensorboard=True, wandb=False, run_name=out.name, config={}).close()
    ExtraLoggers(out, tensorboard=True, wandb=False, run_name=out.name, config={}, start_step=40).close()
    assert [o["purge_step"] for o in opened] == [None, 40]
    assert all(o["log_dir"] == str(out / "tensorboard") for o in opened)
