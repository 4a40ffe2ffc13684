"""The ASE calculator and MD driver, checked through ASE's public interface."""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.optimize import BFGS

from symscale.ase import SymscaleCalculator, predict, run_md
from symscale.data.graph import collate
from symscale.data.toy import toy_structures
from symscale.errors import SymscaleError
from symscale.models.registry import build
from symscale.models.symmetry import random_rotations

ELEMENTS = [1, 6, 7, 8]


def make_model(arch="egnn", forces="direct", seed=0, force_scale=0.5):
    torch.manual_seed(seed)
    return build(arch, 8, elements=ELEMENTS, forces=forces, force_scale=force_scale).double().eval()


def to_atoms(structure):
    return Atoms(numbers=structure.numbers, positions=structure.positions)


def test_calculator_reproduces_model_outputs():
    model = make_model("mpnn")
    structures = toy_structures(3, seed=5)
    out = model(collate(structures, dtype=torch.float64))
    for k, s in enumerate(structures):
        atoms = to_atoms(s)
        atoms.calc = SymscaleCalculator(model)
        np.testing.assert_allclose(atoms.get_potential_energy(), out.energy[k].item(), rtol=0, atol=1e-9)
        start = int(sum(len(t) for t in structures[:k]))
        expected = out.forces[start : start + len(s)].detach().numpy()
        np.testing.assert_allclose(atoms.get_forces(), expected, rtol=0, atol=1e-9)


def test_batched_predict_equals_one_at_a_time():
    model = make_model("egnn")
    structures = toy_structures(5, seed=2)
    together = predict(model, structures)
    for s, (energy, forces) in zip(structures, together):
        alone = predict(model, [s])[0]
        assert abs(alone[0] - energy) < 1e-9
        np.testing.assert_allclose(alone[1], forces, atol=1e-9)


def test_rotating_atoms_rotates_forces_for_an_equivariant_family():
    model = make_model("egnn")
    atoms = to_atoms(toy_structures(1, seed=7, min_atoms=8)[0])
    atoms.calc = SymscaleCalculator(model)
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    R = random_rotations(1, generator=torch.Generator().manual_seed(3))[0].numpy()
    rotated = atoms.copy()
    rotated.positions = atoms.positions @ R.T
    rotated.calc = SymscaleCalculator(model)
    assert abs(rotated.get_potential_energy() - energy) < 1e-8
    np.testing.assert_allclose(rotated.get_forces(), forces @ R.T, atol=1e-8)


def test_bfgs_relaxation_lowers_the_energy():
    # a stiff random potential (forces of order 1 eV/A), so that BFGS has something to relax
    model = make_model("egnn", forces="conservative", force_scale=40.0)
    atoms = to_atoms(toy_structures(1, seed=11, min_atoms=6)[0])
    atoms.calc = SymscaleCalculator(model)
    before = atoms.get_potential_energy()
    assert np.abs(atoms.get_forces()).max() > 0.1
    BFGS(atoms, logfile=None).run(fmax=0.01, steps=30)
    assert atoms.get_potential_energy() < before - 1e-3


def test_nve_energy_error_shrinks_with_the_time_step(tmp_path):
    model = make_model("egnn", forces="conservative", seed=1, force_scale=40.0)
    atoms = to_atoms(toy_structures(1, seed=4, min_atoms=6)[0])
    calc = SymscaleCalculator(model)
    errors = []
    for dt in (1.0, 0.5):
        # the same 20 fs of dynamics at two time steps
        result = run_md(atoms, calc, steps=int(20 / dt), dt_fs=dt, temperature_k=300, thermostat="nve", seed=0)
        errors.append(result.max_deviation_ev_per_atom)
    assert errors[1] < errors[0] / 2.5  # velocity Verlet: energy error ~ dt^2
    assert errors[1] < 1e-3  # eV/atom


def test_md_writes_a_trajectory(tmp_path):
    from ase.io import read

    model = make_model("mpnn")
    atoms = to_atoms(toy_structures(1, seed=4, min_atoms=5)[0])
    out = tmp_path / "traj.xyz"
    run_md(atoms, SymscaleCalculator(model), steps=20, interval=5, thermostat="langevin", trajectory=out)
    frames = read(out, index=":")
    assert len(frames) == 4
    assert frames[-1].get_forces().shape == (len(atoms), 3)


def test_unknown_element_and_periodic_cell_are_clear_errors():
    calc = SymscaleCalculator(make_model("mpnn"))
    with pytest.raises(SymscaleError, match="unknown"):
        Atoms("SiH4", positions=np.random.default_rng(0).normal(size=(5, 3)) * 1.5, calculator=calc).get_forces()
    water = Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]], cell=[10, 10, 10], pbc=True)
    water.calc = calc
    with pytest.raises(SymscaleError, match="periodic"):
        water.get_potential_energy()


def test_bad_dtype_is_a_clear_error():
    with pytest.raises(SymscaleError, match="dtype"):
        SymscaleCalculator(make_model("mpnn"), dtype="float16")
