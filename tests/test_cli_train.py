"""`symscale train`, `flops`, `tune-lr` from the command line: bad input is one line, exit 2, nothing written."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from symscale.cli import main
from symscale.data.readers import write_structures
from symscale.data.toy import toy_structures


@pytest.fixture(scope="module")
def toy_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "toy.xyz"
    write_structures(path, toy_structures(60, seed=3))
    return path


def train(out, data, *extra):
    args = ["train", "--arch", "mpnn", "--width", "4", "--data", str(data), "--out", str(out), "--no-progress"]
    return main(args + ["--set", "n_val=10", "--set", "eval_points=2", "--set", "flop_samples=1", *extra])


def _one_line_error(capsys, pattern):
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err and pattern in err, err


@pytest.mark.parametrize(
    "extra,pattern",
    [
        (["--arch", "mpnx"], "unknown arch 'mpnx'"),
        (["--width", "0"], "invalid width"),
        (["--structures", "1000"], "invalid --structures"),
        (["--set", "training.lrr=1"], "unknown config key 'training.lrr'"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, toy_file, capsys, extra, pattern):
    out = tmp_path / "run"
    assert train(out, toy_file, *extra) == 2
    _one_line_error(capsys, pattern)
    assert not out.exists()


def test_missing_data_and_data_without_forces(tmp_path, capsys):
    out = tmp_path / "run"
    assert train(out, tmp_path / "nope.xyz") == 2
    _one_line_error(capsys, "data not found")
    unlabeled = toy_structures(30, seed=4)
    for s in unlabeled:
        s.forces = None
    path = tmp_path / "noforces.xyz"
    write_structures(path, unlabeled)
    assert train(out, path) == 2
    _one_line_error(capsys, "forces")
    assert not out.exists()


def test_conflicting_set_on_an_existing_run_changes_nothing(tmp_path, toy_file, capsys):
    out = tmp_path / "run"
    assert train(out, toy_file, "--structures", "20") == 0
    capsys.readouterr()
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert train(out, toy_file, "--structures", "20", "--set", "training.lr=0.1") == 2
    _one_line_error(capsys, "training.lr differ")
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert train(out, toy_file, "--structures", "20") == 0  # same settings: finished, returns at once
    assert "finished" in capsys.readouterr().out


def test_flops_prints_kappa(capsys):
    assert main(["flops", "--arch", "mpnn", "--width", "8"]) == 0
    out = capsys.readouterr().out
    assert "kappa" in out and "mpnn" in out


def test_tune_lr_records_the_best(tmp_path, toy_file, capsys):
    record = tmp_path / "lr.yaml"
    code = main(
        ["tune-lr", "--arch", "mpnn", "--width", "4", "--data", str(toy_file), "--lrs", "1e-5,3e-3",
         "--structures", "40", "--out", str(tmp_path / "tune"), "--record", str(record), "--set", "n_val=10",
         "--set", "batch_size=4", "--set", "compute_accounting=false"]
    )  # fmt: skip
    assert code == 0
    import yaml

    from symscale.config import RunConfig

    data = yaml.safe_load(record.read_text())
    assert data["training"]["lr"] in (1e-5, 3e-3)
    results = json.loads((tmp_path / "tune" / "tune_lr.json").read_text())
    assert len(results["runs"]) == 2 and results["best_lr"] == data["training"]["lr"]
    base = RunConfig.from_dict({"arch": "mpnn", "width": 4, **data})
    assert base.training.lr == data["training"]["lr"]


HOLD_LOCK = "import sys, time; from symscale.rundir import RunLock; RunLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(60)"  # noqa: E501


def test_train_on_an_out_another_process_holds_is_refused(tmp_path, toy_file, capsys):
    """Issue 14 item 5: two `symscale train` on one --out both ran and wrote every metric line twice."""
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert train(out, toy_file) == 2
        _one_line_error(capsys, f"is in use: locked by pid {holder.pid}")
        assert not out.exists()
    finally:
        holder.kill()
        holder.wait()
    assert train(out, toy_file) == 0  # its owner is gone: the lock is stale and the run goes ahead
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps))  # every evaluation once
    assert not (tmp_path / "run.lock").exists()
