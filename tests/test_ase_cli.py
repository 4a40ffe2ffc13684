"""A trained checkpoint through the public entry points: calculator, `symscale eval`, `symscale md`."""

import json

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.io import write

from symscale.ase import SymscaleCalculator
from symscale.cli import main
from symscale.data.graph import collate
from symscale.data.readers import write_structures
from symscale.data.toy import toy_structures
from symscale.train.checkpoint import load_model


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ase_run")
    data = root / "toy.xyz"
    write_structures(data, toy_structures(160, seed=0))
    out = root / "run"
    args = ["train", "--arch", "egnn", "--width", "8", "--data", str(data), "--structures", "120"]
    args += ["--out", str(out), "--set", "n_val=32", "--set", "forces=conservative", "--no-progress"]
    assert main(args) == 0
    return root, out


def test_calculator_from_a_run_reproduces_the_trained_model(trained_run):
    _, run = trained_run
    model, _ = load_model(run)
    structures = toy_structures(3, seed=9)
    expected = model(collate(structures))
    calc = SymscaleCalculator.from_checkpoint(run, dtype="float32")
    for k, s in enumerate(structures):
        atoms = Atoms(numbers=s.numbers, positions=s.positions, calculator=calc)
        assert abs(atoms.get_potential_energy() - expected.energy[k].item()) < 1e-4


def test_eval_command_writes_metrics(trained_run, tmp_path):
    root, run = trained_run
    out = tmp_path / "metrics.json"
    assert (
        main(["eval", str(run), "--data", str(root / "toy.xyz"), "--split", "all", "--limit", "40", "--json", str(out)])
        == 0
    )
    metrics = json.loads(out.read_text())
    assert metrics["structures"] == 40
    assert metrics["energy_mae_mev_per_atom"] > 0 and -1 <= metrics["force_cos"] <= 1
    assert metrics["equivariance_error_forces"] < 1e-2  # meV/A: egnn is equivariant up to float32 rounding


def test_md_command_reports_drift(trained_run, tmp_path, capsys):
    _, run = trained_run
    s = toy_structures(1, seed=3, min_atoms=6)[0]
    write(tmp_path / "mol.xyz", Atoms(numbers=s.numbers, positions=s.positions))
    summary = tmp_path / "md.json"
    args = ["md", str(run), "--structure", str(tmp_path / "mol.xyz"), "--steps", "30", "--dt", "0.25"]
    assert main(args + ["--out", str(tmp_path / "t.xyz"), "--json", str(summary)]) == 0
    data = json.loads(summary.read_text())
    assert data["force_mode"] == "conservative"
    assert abs(data["max_energy_deviation_ev_per_atom"]) < 1e-3
    assert (tmp_path / "t.xyz").exists()


def test_bad_inputs_are_one_line_errors(trained_run, tmp_path, capsys):
    root, run = trained_run
    assert main(["eval", str(tmp_path / "missing"), "--data", str(root / "toy.xyz")]) == 2
    assert main(["eval", str(run), "--data", str(tmp_path / "missing.xyz")]) == 2
    assert main(["md", str(run), "--structure", str(tmp_path / "missing.xyz")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("symscale ") for line in err)


def test_newer_checkpoint_format_is_refused(trained_run, tmp_path):
    from symscale.errors import SymscaleError

    _, run = trained_run
    ckpt = torch.load(run / "checkpoints" / "final.pt", weights_only=True)
    ckpt["format_version"] = 10**6
    torch.save(ckpt, tmp_path / "future.pt")
    with pytest.raises(SymscaleError, match="newer"):
        SymscaleCalculator(tmp_path / "future.pt")
    assert np.isfinite(ckpt["stats"]["force_rms"])
