"""`symscale eval --split`: the run's own split on its own data, no split on foreign data; the bars of eval and md."""

import io
import json

import pytest

from symscale.cli import main
from symscale.data.readers import write_structures
from symscale.data.toy import toy_structures
from symscale.rundir import read_metrics


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_split")
    write_structures(root / "toy.xyz", toy_structures(60, seed=0))
    write_structures(root / "other.xyz", toy_structures(12, seed=5))
    args = ["train", "--arch", "mpnn", "--width", "8", "--data", str(root / "toy.xyz"), "--structures", "40"]
    assert main(args + ["--out", str(root / "run"), "--set", "n_val=16", "--no-progress"]) == 0
    return root


def _eval(root, *args):
    out = root / "m.json"
    assert main(["eval", str(root / "run"), *args, "--json", str(out)]) == 0
    return json.loads(out.read_text())


def test_own_data_defaults_to_the_runs_validation_set(run):
    metrics = _eval(run, "--data", str(run / "toy.xyz"))
    assert metrics["split"] == "val" and metrics["structures"] == 16
    # the same structures as the run's own last evaluation: the same loss (the checkpoint holds those weights)
    assert metrics["val_loss"] == pytest.approx(read_metrics(run / "run")[-1]["val_loss"], rel=1e-6)
    assert _eval(run)["val_loss"] == pytest.approx(metrics["val_loss"], rel=1e-9)  # no --data: the run's data


def test_train_and_all_splits_of_own_data(run):
    train = _eval(run, "--data", str(run / "toy.xyz"), "--split", "train")
    every = _eval(run, "--data", str(run / "toy.xyz"), "--split", "all")
    assert (train["split"], train["structures"]) == ("train", 40)
    assert (every["split"], every["structures"]) == ("all", 60)
    assert train["val_loss"] != every["val_loss"]


def test_foreign_data_is_all_and_has_no_split(run, capsys):
    metrics = _eval(run, "--data", str(run / "other.xyz"))
    assert (metrics["split"], metrics["structures"]) == ("all", 12)
    capsys.readouterr()
    assert main(["eval", str(run / "run"), "--data", str(run / "other.xyz"), "--split", "val"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "split 'val' does not exist" in err[0] and "--split all" in err[0]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("quiet", [False, True])
def test_eval_draws_a_progress_bar_on_a_terminal_unless_quiet(run, monkeypatch, quiet):
    terminal = _Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    argv = ["eval", str(run / "run"), "--split", "all", "--batch-size", "8"] + (["--quiet"] if quiet else [])
    assert main(argv) == 0
    drawn = terminal.getvalue()
    assert ("60/60" in drawn and "structures" in drawn) != quiet, drawn


@pytest.mark.parametrize("quiet", [False, True])
def test_md_draws_a_progress_bar_on_a_terminal_unless_quiet(run, monkeypatch, tmp_path, quiet):
    from ase import Atoms
    from ase.io import write

    s = toy_structures(1, seed=3, min_atoms=6)[0]
    write(tmp_path / "mol.xyz", Atoms(numbers=s.numbers, positions=s.positions))
    terminal = _Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    argv = ["md", str(run / "run"), "--structure", str(tmp_path / "mol.xyz"), "--steps", "7"]
    assert main(argv + ["--out", str(tmp_path / "t.xyz")] + (["--quiet"] if quiet else [])) == 0
    drawn = terminal.getvalue()
    assert ("7/7" in drawn and "steps" in drawn) != quiet, drawn


def test_a_run_on_the_builtin_data_missing_from_the_cache_is_one_line(run, tmp_path, monkeypatch, capsys):
    import torch

    ckpt = torch.load(run / "run" / "checkpoints" / "final.pt", weights_only=True)
    ckpt["config"]["data"]["source"] = "builtin"
    torch.save(ckpt, tmp_path / "builtin.pt")
    monkeypatch.setenv("SYMSCALE_CACHE", str(tmp_path / "empty-cache"))
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "builtin.pt")]) == 2  # never generates the built-in set to evaluate
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "built-in dataset is not in the cache" in err[0]
    assert not (tmp_path / "empty-cache").exists()
