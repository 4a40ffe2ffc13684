"""The exported program gives the energies and forces of the model it was exported from."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms

from symscale.ase import SymscaleCalculator
from symscale.cli import main
from symscale.data.toy import toy_structures
from symscale.errors import SymscaleError
from symscale.export import export_model, load_exported
from symscale.models.registry import build
from symscale.train.checkpoint import save_checkpoint

ELEMENTS = [1, 6, 7, 8]


def _model(arch: str, forces: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return build(arch, 8, elements=ELEMENTS, forces=forces, force_scale=2.0).double().eval()


def _check_same(model, path) -> None:
    exported = load_exported(path)
    calc = SymscaleCalculator(model)
    for s in toy_structures(3, seed=4, min_atoms=5):  # sizes other than the traced example's
        atoms = Atoms(numbers=s.numbers, positions=s.positions, calculator=calc)
        energy, forces = exported.predict(s)
        assert abs(energy - atoms.get_potential_energy()) < 1e-9
        assert np.abs(forces).max() > 1e-4
        np.testing.assert_allclose(forces, atoms.get_forces(), rtol=0, atol=1e-9)


@pytest.mark.parametrize("arch,forces", [("mpnn", "direct"), ("mpnn", "conservative")])
def test_exported_program_matches_the_model(tmp_path, arch, forces):
    model = _model(arch, forces)
    path = export_model(model, tmp_path / f"{arch}.pt2")
    assert load_exported(path).metadata["forces"] == forces
    _check_same(model, path)
    other = "direct" if forces == "conservative" else "conservative"
    float32 = load_exported(export_model(model, tmp_path / "f32.pt2", dtype="float32", forces=other))
    assert (float32.metadata["forces"], float32.dtype) == (other, torch.float32)
    assert model.force_mode == forces and next(model.parameters()).dtype == torch.float64  # caller's model untouched


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["egnn", "gemnet_oc", "esen"])
@pytest.mark.parametrize("forces", ["direct", "conservative"])
def test_every_family_exports(tmp_path, arch, forces):
    model = _model(arch, forces)
    _check_same(model, export_model(model, tmp_path / f"{arch}.pt2"))


def test_export_cli_from_a_checkpoint(tmp_path, capsys):
    model = _model("mpnn", "direct")
    stats = {"element_energies": {str(z): float(-z) for z in ELEMENTS}, "force_rms": 2.0}
    save_checkpoint(
        tmp_path / "best.pt", {"model": model.model_config(), "model_state": model.state_dict(), "stats": stats}
    )
    out = tmp_path / "deploy" / "mpnn.pt2"
    assert main(["export", str(tmp_path / "best.pt"), "--out", str(out)]) == 0
    assert "torch.export" in capsys.readouterr().out
    s = toy_structures(1, seed=2, min_atoms=5)[0]
    calc = SymscaleCalculator(tmp_path / "best.pt")
    atoms = Atoms(numbers=s.numbers, positions=s.positions, calculator=calc)
    energy, forces = load_exported(out).predict(s)
    assert abs(energy - atoms.get_potential_energy()) < 1e-9
    np.testing.assert_allclose(forces, atoms.get_forces(), atol=1e-9)


def test_exported_model_refuses_unknown_elements(tmp_path):
    exported = load_exported(export_model(_model("mpnn", "direct"), tmp_path / "m.pt2"))
    s = toy_structures(1, seed=1, min_atoms=5)[0]
    s.numbers[0] = 16
    with pytest.raises(SymscaleError, match="elements"):
        exported.predict(s)
    with pytest.raises(SymscaleError, match="not found"):
        load_exported(tmp_path / "missing.pt2")
