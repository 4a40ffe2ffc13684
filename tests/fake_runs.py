"""Stand-ins for `train_run` used by the study tests (a module of their own: the engines pickle them by
reference, so worker processes, submitit jobs and Ray tasks import them from here)."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

from symscale import rundir
from symscale.config import RunConfig
from symscale.study.executors import RunTask, execute_run


def fake_config(arch: str = "mpnn", width: int = 4, steps: int = 3, sleep: float = 0.0, **keys) -> RunConfig:
    """A RunConfig for `fake_run`: `steps` evaluations (eval_points), `sleep` seconds per step (carried in
    eval_first_fraction, a fraction in (0, 1]; 0 is stored as the default and sleeps that long)."""
    first = {"eval_first_fraction": sleep} if sleep else {}
    return RunConfig.from_dict({"arch": arch, "width": width, "eval_points": steps, **first, **keys})


def fake_run(config: RunConfig, run_dir: Path) -> None:
    """`steps` steps (eval_points) of `sleep` seconds (eval_first_fraction), a checkpoint (the step) after
    each, one metrics line per step whose loss depends only on the run's identity and the step; NaN (status
    failed) when lr > 100; KeyError for arch "boom"."""
    if config.arch == "boom":
        raise KeyError("boom")
    steps, sleep = config.evaluation.eval_points, config.evaluation.eval_first_fraction
    run_dir = Path(run_dir)
    ckpt = run_dir / "checkpoints" / "last.json"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    start = json.loads(ckpt.read_text())["step"] if ckpt.exists() else 0
    rundir.write_status(run_dir, "running")
    rundir.write_json(run_dir / "run.json", {"arch": config.arch, "width": config.width, "N": 10 * config.width})
    seed = int(config.config_hash()[:6], 16)  # threads are not part of the identity
    metrics = (run_dir / "metrics.jsonl").read_text().splitlines()[:start] if start else []
    for step in range(start + 1, steps + 1):
        time.sleep(sleep)
        loss = float("nan") if config.training.lr > 100 else (seed % 97 + 1) / (step * config.width)
        if math.isnan(loss):
            rundir.write_status(run_dir, "failed", "non-finite loss")
            return
        line = {
            "step": step, "run_fraction": step / steps, "atoms_seen": 100 * step, "flops": 1e6 * step * config.width,
            "device_seconds": 0.1 * step, "val_loss": loss,
        }  # fmt: skip
        metrics.append(json.dumps(line))
        # atomic writes, as the real run's are: a SIGKILL mid-write must not leave a truncated log or checkpoint
        rundir.write_text(run_dir / "metrics.jsonl", "\n".join(metrics) + "\n")
        rundir.write_text(ckpt, json.dumps({"step": step}))
    rundir.write_status(run_dir, "finished")


def fake_diverging_esen(config: RunConfig, run_dir: Path) -> None:
    """`fake_run`, diverging (lr 1e6) for the esen family."""
    fake_run(config.updated({"lr": 1e6}) if config.arch == "esen" else config, run_dir)


def fake_lr_run(config: RunConfig, run_dir: Path) -> None:
    """`fake_run` whose final validation loss is lowest at lr 3e-2 (a known optimum for the tuning stage),
    split into an energy term (0.3 of it) and a force term (0.7); failed (NaN) when lr > 100, like `fake_run`."""
    fake_run(config, run_dir)
    if rundir.read_status(run_dir)["status"] != "finished":
        return
    lines = [json.loads(x) for x in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    for line in lines:
        line["val_loss"] = 1.0 + abs(math.log10(config.training.lr / 3e-2)) + 1.0 / line["step"]
        line["val_energy_loss"], line["val_force_loss"] = 0.3 * line["val_loss"], 0.7 * line["val_loss"]
    (Path(run_dir) / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))


# ---------------------------------------------------------------- shared by the engines' tests

TESTS = str(Path(__file__).parent)


def pythonpath() -> str:
    """The tests folder (the fake run functions) before the caller's PYTHONPATH (the checkout under test)."""
    return TESTS + os.pathsep + os.environ.get("PYTHONPATH", "")


def fake_tasks(root: Path, n: int = 3, **cfg) -> list[RunTask]:
    """`n` fake runs (widths 2, 3, ...) under `root`."""
    return [
        RunTask(f"r{i}", str(root / f"r{i}"), fake_config(width=2 + i, **{"steps": 3, **cfg}), fake_run)
        for i in range(n)
    ]


def same_as_reference(tmp_path: Path, tasks: list[RunTask]) -> bool:
    """Whether each task's metrics log equals that of the same run executed in this process."""
    for t in tasks:
        ref = tmp_path / "ref" / t.run_id
        execute_run(RunTask(t.run_id, str(ref), t.config, fake_run))
        if (Path(t.run_dir) / "metrics.jsonl").read_text() != (ref / "metrics.jsonl").read_text():
            return False
    return True
