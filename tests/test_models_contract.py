"""The contract every registered model family passes (parametrised over the registry).

Float64 throughout, small widths (the family's smallest `cpu` ladder width) and toy molecules, so that the
whole suite stays fast on one core.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from symscale.data.graph import Structure, collate
from symscale.data.toy import toy_structures
from symscale.errors import SymscaleError
from symscale.models.ladders import count_parameters, load_ladder
from symscale.models.registry import build, get_family, list_archs
from symscale.models.symmetry import equivariance_error, random_rotations, rotate_batch

ARCHS = list_archs()
ELEMENTS = (1, 6, 7, 8)
CUTOFF = 6.0


def small_width(arch: str) -> int:
    try:
        return load_ladder(arch, "cpu")[0]
    except SymscaleError:
        return 8


@functools.cache
def make_model(arch: str, forces: str = "direct", seed: int = 0, **extra):
    torch.manual_seed(seed)
    model = build(arch, small_width(arch), elements=ELEMENTS, cutoff=CUTOFF, forces=forces, **extra)
    return model.double().eval()


def batch_of(structures, **kw):
    return collate(structures, cutoff=CUTOFF, dtype=torch.float64, **kw)


@pytest.fixture(scope="module")
def molecules():
    return toy_structures(4, seed=3, min_atoms=4, max_atoms=9)


@pytest.fixture(scope="module")
def batch(molecules):
    return batch_of(molecules)


def outputs(model, batch):
    with torch.no_grad():
        out = model(batch)
    return out.energy.detach(), out.forces.detach()


def assert_forces_are_minus_gradient(model, mol, points, h: float = 1e-5) -> None:
    """The model's forces on `mol` match -dE/dx by central differences at each (atom, axis) of `points`."""
    forces = model(batch_of([mol])).forces.detach()
    for atom, axis in points:
        plus, minus = mol.positions.copy(), mol.positions.copy()
        plus[atom, axis] += h
        minus[atom, axis] -= h
        e_plus, _ = outputs(model, batch_of([Structure(mol.numbers, plus)]))
        e_minus, _ = outputs(model, batch_of([Structure(mol.numbers, minus)]))
        numeric = -(float(e_plus[0]) - float(e_minus[0])) / (2 * h)
        assert abs(numeric - float(forces[atom, axis])) < 1e-6 * max(1.0, abs(numeric))


@pytest.mark.parametrize("arch", ARCHS)
def test_shapes_and_finite(arch, batch):
    energy, forces = outputs(make_model(arch), batch)
    assert energy.shape == (batch.num_structures,)
    assert forces.shape == (batch.num_atoms, 3)
    assert torch.isfinite(energy).all() and torch.isfinite(forces).all()
    assert energy.dtype == torch.float64
    assert forces.abs().sum() > 0  # a head that outputs nothing would pass the symmetry tests trivially


@pytest.mark.parametrize("arch", ARCHS)
def test_batching_consistency(arch, molecules, batch):
    model = make_model(arch)
    energy, forces = outputs(model, batch)
    start = 0
    for k, mol in enumerate(molecules):
        e1, f1 = outputs(model, batch_of([mol]))
        assert abs(float(e1[0] - energy[k])) < 1e-6
        assert torch.allclose(f1, forces[start : start + len(mol)], atol=1e-6)
        start += len(mol)


@pytest.mark.parametrize("arch", ARCHS)
def test_permutation_equivariance(arch, molecules, batch):
    model = make_model(arch)
    rng = np.random.default_rng(0)
    perms = [rng.permutation(len(m)) for m in molecules]
    shuffled = [Structure(m.numbers[p], m.positions[p]) for m, p in zip(molecules, perms, strict=True)]
    energy, forces = outputs(model, batch)
    e2, f2 = outputs(model, batch_of(shuffled))
    assert torch.allclose(e2, energy, atol=1e-9)
    offsets = np.cumsum([0] + [len(m) for m in molecules])
    index = torch.from_numpy(np.concatenate([o + p for o, p in zip(offsets, perms, strict=False)]))
    assert torch.allclose(f2, forces[index], atol=1e-9)


@pytest.mark.parametrize("arch", ARCHS)
def test_translation_invariance(arch, batch):
    model = make_model(arch)
    shift = torch.tensor([[3.0, -7.5, 11.0], [-2.0, 0.5, 4.0], [0.0, 9.0, -1.0], [5.0, 5.0, 5.0]], dtype=torch.float64)
    moved = batch.replace(pos=batch.pos + shift[batch.batch])
    energy, forces = outputs(model, batch)
    e2, f2 = outputs(model, moved)
    assert torch.allclose(e2, energy, atol=1e-9)
    assert torch.allclose(f2, forces, atol=1e-9)


@pytest.mark.parametrize("arch", ARCHS)
def test_rotation_equivariance_as_declared(arch, batch):
    model = make_model(arch)
    err = equivariance_error(model, batch, n_rotations=3, seed=1)
    assert set(err) == {"energy", "forces"} and all(isinstance(v, float) for v in err.values())
    if model.symmetry.rotation_equivariant:  # exactly (1e-9) unless the model declares its measured error
        tol = getattr(model, "equivariance_tolerance", 1e-9)  # eSEN's S2 grid: 5e-2 (tests/test_models_esen.py)
        assert err["energy"] < tol and err["forces"] < tol, err
    else:
        assert err["energy"] > 1e-6 and err["forces"] > 1e-6, err


def _orthogonal_error(model, batch, R):
    energy, forces = outputs(model, batch)
    e2, f2 = outputs(model, rotate_batch(batch, R))
    expected = torch.einsum("aij,aj->ai", R[batch.batch], forces)
    return float((e2 - energy).abs().max()), float((f2 - expected).abs().max())


@pytest.mark.parametrize("arch", ARCHS)
def test_reflection_equivariance_as_declared(arch, batch):
    model = make_model(arch)
    R = -random_rotations(batch.num_structures, generator=torch.Generator().manual_seed(2))  # det = -1
    de, df = _orthogonal_error(model, batch, R)
    if model.symmetry.reflection_equivariant:
        assert de < 1e-9 and df < 1e-9
    elif not model.symmetry.rotation_equivariant:
        assert de > 1e-6 and df > 1e-6


def _three_atoms(distance: float) -> Structure:
    """C=O along x, H beyond O at `distance` (Angstrom) from O, 0.3 rad off the axis; C-H is longer than O-H."""
    hydrogen = [1.2 + distance * np.cos(0.3), distance * np.sin(0.3), 0.0]
    pos = np.array([[0.0, 0.0, 0.0], [1.2, 0.0, 0.0], hydrogen])
    return Structure(np.array([6, 8, 1]), pos)


@pytest.mark.parametrize("arch", ARCHS)
def test_smooth_at_cutoff(arch):
    model = make_model(arch)
    distances = CUTOFF + np.linspace(-0.02, 0.02, 21)
    energies, forces = [], []
    for d in distances:
        b = batch_of([_three_atoms(float(d))])
        e, f = outputs(model, b)
        energies.append(float(e[0]))
        forces.append(f)
    # a graph-free model (no cutoff: every atom sees every atom) keeps changing with the distance there; what
    # must hold for it is smoothness, so it is checked on second differences (0.002 Angstrom steps)
    order = 2 if getattr(model, "graph_free", False) else 1
    jumps = np.abs(np.diff(energies, n=order))
    assert jumps.max() < 1e-6, jumps
    force_jumps = torch.diff(torch.stack(forces), n=order, dim=0).abs().amax(dim=(1, 2))
    assert float(force_jumps.max()) < 1e-5, force_jumps
    # sanity: the far atom does interact well inside the cutoff (the test would catch a missing envelope)
    e_in, _ = outputs(model, batch_of([_three_atoms(CUTOFF - 2.0)]))
    assert abs(float(e_in[0]) - energies[-1]) > 1e-6


@pytest.mark.parametrize("arch", ARCHS)
def test_conservative_forces_are_minus_gradient(arch, molecules):
    model = make_model(arch, forces="conservative")
    mol = molecules[0]
    assert_forces_are_minus_gradient(model, mol, [(0, 0), (1, 2), (len(mol) - 1, 1)])


@pytest.mark.parametrize("arch", ARCHS)
def test_deterministic_under_seed(arch, batch):
    torch.manual_seed(7)
    a = build(arch, small_width(arch), elements=ELEMENTS).double()
    torch.manual_seed(7)
    b = build(arch, small_width(arch), elements=ELEMENTS).double()
    torch.manual_seed(8)
    c = build(arch, small_width(arch), elements=ELEMENTS).double()
    ea, fa = outputs(a, batch)
    eb, fb = outputs(b, batch)
    ec, _ = outputs(c, batch)
    assert torch.equal(ea, eb) and torch.equal(fa, fb)
    assert not torch.equal(ea, ec)


@pytest.mark.parametrize("arch", ARCHS)
def test_state_dict_round_trip(arch, batch, tmp_path):
    refs = {1: -10.0, 6: -40.0, 7: -70.0, 8: -100.0}
    torch.manual_seed(0)
    a = build(arch, small_width(arch), elements=ELEMENTS, element_energies=refs, force_scale=2.5).double()
    path = tmp_path / "model.pt"
    torch.save({"model": a.model_config(), "state": a.state_dict()}, path)
    saved = torch.load(path, weights_only=True)
    config = dict(saved["model"])
    overrides = config.pop("overrides")
    torch.manual_seed(1)
    b = build(config.pop("arch"), config.pop("width"), **config, **overrides).double()
    b.load_state_dict(saved["state"])
    ea, fa = outputs(a, batch)
    eb, fb = outputs(b, batch)
    assert torch.equal(ea, eb) and torch.equal(fa, fb)
    assert float(b.force_scale) == 2.5 and float(b.element_energy[8]) == -100.0


@pytest.mark.parametrize("arch", ARCHS)
def test_references_and_force_scale(arch, batch):
    torch.manual_seed(0)
    plain = build(arch, small_width(arch), elements=ELEMENTS).double()
    torch.manual_seed(0)
    refs = {1: -10.0, 6: -40.0, 7: -70.0, 8: -100.0}
    scaled = build(arch, small_width(arch), elements=ELEMENTS, element_energies=refs, force_scale=3.0).double()
    e0, f0 = outputs(plain, batch)
    e1, f1 = outputs(scaled, batch)
    ref_sum = torch.zeros_like(e0).index_add(0, batch.batch, torch.tensor([refs[int(z)] for z in batch.z]).double())
    assert torch.allclose(e1, 3.0 * e0 + ref_sum, atol=1e-9)
    assert torch.allclose(f1, 3.0 * f0, atol=1e-9)


@pytest.mark.parametrize("arch", ARCHS)
def test_num_parameters_is_exact(arch):
    model = make_model(arch)
    assert model.num_parameters() == sum(p.numel() for p in model.parameters())
    assert model.num_parameters() == count_parameters(arch, small_width(arch), ELEMENTS)
    bigger = count_parameters(arch, 2 * small_width(arch), ELEMENTS)
    assert bigger > model.num_parameters()  # N grows with width (quadratically; linearly for eSEN's sphere channels)


@pytest.mark.parametrize("arch", ARCHS)
def test_declares_symmetry_and_base_width(arch):
    cls = get_family(arch)
    assert cls.arch == arch
    assert isinstance(cls.base_width, int) and cls.base_width >= 1
    assert cls.symmetry.nu >= 2
    if cls.symmetry.reflection_equivariant:
        assert cls.symmetry.rotation_equivariant


def test_unknown_arch_lists_choices():
    with pytest.raises(SymscaleError) as err:
        build("esne", 8, elements=ELEMENTS)
    message = str(err.value)
    assert "esne" in message and all(arch in message for arch in ARCHS)


@pytest.mark.parametrize("arch", ARCHS)
def test_unknown_element_is_clear_error(arch, molecules):
    model = make_model(arch)
    fluorine = Structure(np.array([6, 9, 1]), np.array([[0.0, 0, 0], [1.3, 0, 0], [-1.0, 0.2, 0]]))
    with pytest.raises(SymscaleError, match="unknown"):
        model(batch_of([molecules[0], fluorine]))


@pytest.mark.parametrize("arch", ARCHS)
def test_unknown_override_is_clear_error(arch):
    with pytest.raises(SymscaleError):
        build(arch, 8, elements=ELEMENTS, no_such_option=3)


@pytest.mark.parametrize("arch", ARCHS)
def test_ladders_span_the_promised_range(arch):
    from symscale.models.ladders import BUILTIN_ELEMENTS, ladder_rungs

    try:
        cpu = ladder_rungs(arch, "cpu", BUILTIN_ELEMENTS)
        paper = ladder_rungs(arch, "paper", BUILTIN_ELEMENTS)
    except SymscaleError as err:
        pytest.fail(f"{arch} has no ladder preset: {err}")
    for rungs, lo, hi in ((cpu, 5e2, 2e5), (paper, 5e4, 1e8)):  # paper: up to MC-EGNN 78.5M, MPNN 79M
        n = [r.num_parameters for r in rungs]
        assert len(n) >= 4 and n == sorted(n) and len(set(n)) == len(n)
        assert n[0] >= lo and n[-1] <= hi, n
        assert np.log10(n[-1] / n[0]) >= 1.5, n


def test_unknown_ladder_is_clear_error():
    with pytest.raises(SymscaleError, match="ladder"):
        load_ladder("mpnn", "laptop")


def test_models_cli_prints_families_and_ladder(capsys):
    from symscale.cli import main

    assert main(["models", "--ladder", "cpu", "--elements", "H", "C", "N", "O"]) == 0
    out = capsys.readouterr().out
    for arch in ARCHS:
        assert arch in out
    n = count_parameters("mpnn", load_ladder("mpnn", "cpu")[0], ELEMENTS)
    assert f"N={n:,}" in out
    assert main(["models", "--arch", "nope"]) == 2
