"""eSEN-specific tests (the shared contract suite covers the rest)."""

from __future__ import annotations

import pytest
import torch

from symscale.data.graph import collate
from symscale.data.toy import toy_structures
from symscale.models import so3
from symscale.models.registry import build

DT = torch.float64


def _batch(n=4, seed=1):
    return collate(toy_structures(n, seed=seed), dtype=DT)


@pytest.mark.parametrize("lmax", [2, 4])
def test_rotation_equivariance(lmax):
    torch.manual_seed(0)
    model = build("esen", 4, elements=[1, 6, 7, 8], lmax=lmax).double()
    batch = _batch()
    out = model(batch)
    g = torch.Generator().manual_seed(3)
    rot = so3.angles_to_matrix(*(torch.rand(3, generator=g, dtype=DT) * 6))
    out_r = model(batch.replace(pos=batch.pos @ rot.T))
    assert out.forces.abs().max() > 1e-4  # not trivially zero
    assert (out_r.energy - out.energy).abs().max() < 1e-9
    assert (out_r.forces - out.forces @ rot.T).abs().max() < 1e-9


def test_conservative_forces_are_minus_gradient():
    torch.manual_seed(0)
    model = build("esen", 4, elements=[1, 6, 7, 8], forces="conservative").double()
    batch = _batch(1, seed=2)
    forces = model(batch).forces.detach()
    eps = 1e-5
    for atom, axis in [(0, 0), (1, 2)]:
        pos_p, pos_m = batch.pos.clone(), batch.pos.clone()
        pos_p[atom, axis] += eps
        pos_m[atom, axis] -= eps
        e_p = model(batch.replace(pos=pos_p)).energy.sum().detach()
        e_m = model(batch.replace(pos=pos_m)).energy.sum().detach()
        assert abs(float(-(e_p - e_m) / (2 * eps)) - float(forces[atom, axis])) < 1e-6


def test_energy_continuous_at_cutoff():
    torch.manual_seed(0)
    model = build("esen", 4, elements=[1, 6, 7, 8], cutoff=3.0).double()
    base = toy_structures(1, seed=3)[0]
    energies = []
    for d in (2.999999, 3.000001):
        s = type(base)(numbers=base.numbers[:1].repeat(2), positions=base.positions[:2].copy())
        s.positions[1] = s.positions[0] + [d, 0.0, 0.0]
        energies.append(float(model(collate([s], cutoff=3.0, dtype=DT)).energy[0]))
    assert abs(energies[0] - energies[1]) < 1e-8


def test_build_on_toy_batches_including_three_atoms():
    model = build("esen", 4, elements=[1, 6, 7, 8], lmax=3, mmax=1, num_layers=1)
    batch = collate(toy_structures(5, seed=0, min_atoms=3, max_atoms=3))
    out = model(batch)
    assert out.energy.shape == (5,) and out.forces.shape == (15, 3)
    assert torch.isfinite(out.forces).all()
    assert model.symmetry.l == 3 and model.symmetry.group == "SO(3)"
