"""Frame averaging and canonicalisation of the MPNN: the definition, one backbone call, compute, degenerate cases.

The contract suite (tests/test_models_contract.py) checks both families as E(3) models to 1e-9 on generic toy
molecules. Here: that the batched implementation is the definition of Puny et al. 2022 written out frame by
frame; that the 8 sign frames are what makes it equivariant; that FLOPs are the backbone's times the number of
frames; and the degenerate geometries, each with its stated tolerance:
    fa_mpnn, single atom or linear molecule   exact (1e-9 fp64), forces finite (also conservative) and continuous
    fa_mpnn, symmetric top (NH3)              NOT exact (the stated limit); exact (1e-9) once the top is split
    canonical_mpnn, linear molecule           energy exact (1e-9), forces across the axis not (the stated limit)
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from symscale.data.graph import Structure, collate
from symscale.data.toy import toy_structures
from symscale.models import frame_averaging as fa
from symscale.models.mpnn import MPNN
from symscale.models.registry import build
from symscale.models.symmetry import equivariance_error, random_rotations, rotate_batch
from symscale.train.compute import measure_family

ELEMENTS = (1, 6, 7, 8)
CUTOFF = 6.0


def model_of(arch: str, width: int = 8, seed: int = 0, **kw):
    torch.manual_seed(seed)
    return build(arch, width, elements=ELEMENTS, cutoff=CUTOFF, **kw).double().eval()


def batch_of(structures):
    return collate(structures, cutoff=CUTOFF, dtype=torch.float64)


def outputs(model, batch):
    with torch.no_grad():
        out = model(batch)
    return out.energy, out.forces


def rotation_error(model, batch, seed: int = 1, reflect: bool = False) -> tuple[float, float]:
    """Max |E(Rx) - E(x)| (eV) and max |F(Rx) - R F(x)| (eV/Angstrom) under one random R per structure."""
    R = random_rotations(batch.num_structures, generator=torch.Generator().manual_seed(seed))
    R = -R if reflect else R
    e, f = outputs(model, batch)
    e2, f2 = outputs(model, rotate_batch(batch, R))
    expected = torch.einsum("aij,aj->ai", R[batch.batch], f)
    return float((e2 - e).abs().max()), float((f2 - expected).abs().max())


@pytest.fixture(scope="module")
def molecules():
    return toy_structures(3, seed=5, min_atoms=4, max_atoms=8)


def test_batched_frames_are_the_definition(molecules):
    """One replicated-batch call equals the frame-by-frame average E = mean_g E_phi(g^T (x - c)),
    F = mean_g g f_phi(g^T (x - c)), with the MPNN backbone built from the same weights (perturbed, so that
    biases are non-zero: the force readout is applied after the average, its bias must average out)."""
    model = model_of("fa_mpnn")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel()), dtype=p.dtype))
    backbone = MPNN(8, elements=ELEMENTS, cutoff=CUTOFF).double().eval()
    backbone.load_state_dict(model.state_dict())
    energy, forces = outputs(model, batch_of(molecules))
    for k, mol in enumerate(molecules):
        x = torch.from_numpy(mol.positions)
        rel = x - x.mean(0)
        _, Q = torch.linalg.eigh(rel.T @ rel / len(mol))
        e_sum, f_sum = 0.0, torch.zeros_like(x)
        for s in fa.O3_SIGNS:
            g = Q * torch.tensor(s, dtype=torch.float64)  # Q diag(s)
            e_g, f_g = outputs(backbone, batch_of([Structure(mol.numbers, (rel @ g).numpy())]))
            e_sum, f_sum = e_sum + e_g[0], f_sum + f_g @ g.T
        assert abs(float(energy[k] - e_sum / 8)) < 1e-9
        start = sum(len(m) for m in molecules[:k])
        assert torch.allclose(forces[start : start + len(mol)], f_sum / 8, atol=1e-9)


def test_all_frames_go_through_the_backbone_once(molecules):
    model = model_of("fa_mpnn")
    batch = batch_of(molecules)
    seen = []
    hook = model.embedding.register_forward_hook(lambda module, inputs, out: seen.append(out.shape[0]))
    outputs(model, batch)
    hook.remove()
    assert seen == [8 * batch.num_atoms]  # one call, every atom of every structure in 8 frames


def test_sign_frames_are_what_makes_it_equivariant(molecules, monkeypatch):
    """With only eigh's own frame (no sign enumeration) the model is not equivariant: the test of the contract
    suite would fail without the 8 frames."""
    batch = batch_of(molecules)
    model = model_of("fa_mpnn")
    assert max(rotation_error(model, batch)) < 1e-9
    assert max(rotation_error(model, batch, reflect=True)) < 1e-9
    monkeypatch.setattr(fa, "O3_SIGNS", ((1.0, 1.0, 1.0),))
    assert max(rotation_error(model, batch)) > 1e-6


@pytest.mark.parametrize("width", [8, 16])
def test_flops_are_the_backbones_times_the_frames(width):
    """Measured (corrected) FLOPs per atom, forward and training step, on the 64-molecule reference batch:
    fa_mpnn = 8 x mpnn and canonical_mpnn = 1 x mpnn, within 5%."""
    backbone = measure_family("mpnn", width)
    averaged = measure_family("fa_mpnn", width)
    canonical = measure_family("canonical_mpnn", width)
    assert averaged.num_parameters == backbone.num_parameters == canonical.num_parameters
    for name in ("forward_flops_per_atom", "train_flops_per_atom"):
        ratio = getattr(averaged, name) / getattr(backbone, name)
        assert abs(ratio / 8 - 1) < 0.05, (name, ratio)
        ratio = getattr(canonical, name) / getattr(backbone, name)
        assert abs(ratio - 1) < 0.05, (name, ratio)
    assert abs(averaged.kappa_corrected / backbone.kappa_corrected / 8 - 1) < 0.05


def test_canonical_frame_is_the_mpnn_in_one_frame(molecules):
    """canonical_mpnn = the backbone evaluated once, in Q diag(s) with s the signs of the third moments."""
    model = model_of("canonical_mpnn")
    backbone = MPNN(8, elements=ELEMENTS, cutoff=CUTOFF).double().eval()
    backbone.load_state_dict(model.state_dict())
    energy, forces = outputs(model, batch_of(molecules))
    for k, mol in enumerate(molecules):
        rel = torch.from_numpy(mol.positions - mol.positions.mean(0))
        _, Q = torch.linalg.eigh(rel.T @ rel / len(mol))
        g = Q * torch.sign(((rel @ Q) ** 3).sum(0))
        e_g, f_g = outputs(backbone, batch_of([Structure(mol.numbers, (rel @ g).numpy())]))
        assert abs(float(energy[k] - e_g[0])) < 1e-9
        start = sum(len(m) for m in molecules[:k])
        assert torch.allclose(forces[start : start + len(mol)], f_g @ g.T, atol=1e-9)


def test_canonical_frame_is_right_handed_where_a_moment_vanishes():
    """A planar molecule: the normal's third moment is 0, so its sign makes the frame right-handed; the
    in-plane axes keep the third-moment signs."""
    planar = Structure(np.array([6, 8, 1, 1]), np.array([[0.0, 0, 0], [1.2, 0, 0], [-0.6, 0.9, 0], [-0.4, -1.1, 0]]))
    batch = batch_of([planar])
    local, axes = fa.principal_axes(batch.pos, batch)
    signs = fa.canonical_signs(local, axes, batch)  # [1, 3]
    assert float(torch.linalg.det(axes[0] * signs[0])) == pytest.approx(1.0)
    third = (local**3).mean(0)
    assert torch.equal(signs[0, 1:], torch.sign(third[1:]))  # ascending variance: axis 0 is the normal


def test_single_atom_is_exact():
    """No edges: the backbone sees no positions, and the 8 sign flips average its force head to exactly 0."""
    model = model_of("fa_mpnn")
    batch = batch_of([Structure(np.array([8]), np.array([[0.3, -1.0, 2.0]]))])
    energy, forces = outputs(model, batch)
    assert torch.isfinite(energy).all()
    assert float(forces.abs().max()) < 1e-12
    assert max(rotation_error(model, batch)) < 1e-9
    conservative = model_of("fa_mpnn", forces="conservative")
    assert torch.isfinite(conservative(batch).forces).all()  # the degeneracy-safe eigh backward


def _linear(bend: float = 0.0, axis=(1.0, 2.0, -0.5)) -> Structure:
    """H-C-N along `axis`, the H displaced sideways by `bend` Angstrom (0: exactly linear)."""
    u = np.asarray(axis) / np.linalg.norm(axis)
    side = np.cross(u, [0.0, 0.0, 1.0])
    side /= np.linalg.norm(side)
    pos = np.stack([-1.07 * u + bend * side, 0 * u, 1.16 * u]) + np.array([0.5, 0.2, -0.3])
    return Structure(np.array([1, 6, 7]), pos)


def test_linear_molecule_is_exact_and_continuous():
    """Two equal (zero) eigenvalues: fa_mpnn is exact to 1e-9 (the arbitrary axes carry zero coordinates), and
    its outputs approach the linear geometry's as the molecule straightens (1e-6 Angstrom bend -> 1e-5)."""
    model = model_of("fa_mpnn")
    batch = batch_of([_linear()])
    assert max(rotation_error(model, batch, seed=3)) < 1e-9
    assert max(rotation_error(model, batch, seed=4, reflect=True)) < 1e-9
    e0, f0 = outputs(model, batch)
    e1, f1 = outputs(model, batch_of([_linear(bend=1e-6)]))
    assert abs(float(e1[0] - e0[0])) < 1e-5 and float((f1 - f0).abs().max()) < 1e-5
    assert abs(float(outputs(model, batch_of([_linear(bend=0.3)]))[0][0] - e0[0])) > 1e-6  # it does see the bend


def test_canonical_linear_molecule_is_the_stated_limit():
    """canonical_mpnn on a linear molecule: the energy is exact (1e-9), but the force components across the
    axis follow eigh's arbitrary axes, so they are neither equivariant nor continuous as it straightens."""
    model = model_of("canonical_mpnn")
    batch = batch_of([_linear()])
    de, df = rotation_error(model, batch, seed=3)
    assert de < 1e-9 and df > 1e-6, (de, df)
    e0, _ = outputs(model, batch)
    assert abs(float(outputs(model, batch_of([_linear(bend=1e-6)]))[0][0] - e0[0])) < 1e-5


def test_linear_molecule_conservative_forces_match_finite_differences():
    model = model_of("fa_mpnn", forces="conservative")
    mol = _linear()
    forces = model(batch_of([mol])).forces.detach()
    assert torch.isfinite(forces).all()
    h = 1e-5
    for atom, axis in [(0, 0), (1, 2), (2, 1)]:
        plus, minus = mol.positions.copy(), mol.positions.copy()
        plus[atom, axis] += h
        minus[atom, axis] -= h
        e_plus = outputs(model, batch_of([Structure(mol.numbers, plus)]))[0]
        e_minus = outputs(model, batch_of([Structure(mol.numbers, minus)]))[0]
        numeric = -float((e_plus[0] - e_minus[0]).detach()) / (2 * h)
        assert abs(numeric - float(forces[atom, axis])) < 1e-5 * max(1.0, abs(numeric))


def _ammonia(split: float = 0.0) -> Structure:
    """NH3 with exact C3v symmetry (a symmetric top: two equal eigenvalues), one N-H stretched by `split`."""
    angles = np.array([0.0, 2 * np.pi / 3, 4 * np.pi / 3])
    hydrogens = np.stack([0.94 * np.cos(angles), 0.94 * np.sin(angles), -0.38 * np.ones(3)], axis=1)
    hydrogens[0] *= 1.0 + split
    return Structure(np.array([7, 1, 1, 1]), np.concatenate([[[0.0, 0.0, 0.0]], hydrogens]))


def test_symmetric_top_is_the_stated_limit():
    """At an exact symmetric top the frame spins freely in the degenerate plane: not exactly invariant (the
    limit stated in the module docstring; outputs stay finite). Split the top by 5% and it is exact again."""
    model = model_of("fa_mpnn")
    exact_top = batch_of([_ammonia()])
    e, f = outputs(model, exact_top)
    assert torch.isfinite(e).all() and torch.isfinite(f).all()
    errors = [max(rotation_error(model, exact_top, seed=s)) for s in range(3)]
    assert max(errors) > 1e-8, errors
    assert max(rotation_error(model, batch_of([_ammonia(split=0.05)]))) < 1e-9


def test_contract_equivariance_metric_is_zero(molecules):
    """The training metric agrees: measured equivariance error ~ 0 for both families."""
    batch = batch_of(molecules)
    for arch in ("fa_mpnn", "canonical_mpnn"):
        err = equivariance_error(model_of(arch), batch, n_rotations=2, seed=0)
        assert err["energy"] < 1e-9 and err["forces"] < 1e-9, (arch, err)
