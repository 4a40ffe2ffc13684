"""Rotations and the equivariance-error metric (symscale.models.symmetry)."""

from __future__ import annotations

import torch

from symscale.data.graph import collate
from symscale.data.toy import toy_structures
from symscale.models.base import ForceField, Symmetry
from symscale.models.symmetry import equivariance_error, random_rotations, rotate_batch


def test_random_rotations_are_proper_and_uniform():
    R = random_rotations(2000, generator=torch.Generator().manual_seed(0))
    eye = torch.eye(3, dtype=torch.float64).expand(2000, 3, 3)
    assert R.dtype == torch.float64 and R.shape == (2000, 3, 3)
    assert torch.allclose(R @ R.transpose(1, 2), eye, atol=1e-12)
    assert torch.allclose(torch.linalg.det(R), torch.ones(2000, dtype=torch.float64), atol=1e-12)
    # Haar measure: E[R] = 0 and the rotated z axis is uniform on the sphere (E[z_z^2] = 1/3)
    assert R.mean(0).abs().max() < 0.05
    assert abs(float(R[:, 2, 2].pow(2).mean()) - 1 / 3) < 0.03


def test_random_rotations_seeded_and_dtype():
    a = random_rotations(3, dtype=torch.float32, generator=torch.Generator().manual_seed(4))
    b = random_rotations(3, dtype=torch.float32, generator=torch.Generator().manual_seed(4))
    assert a.dtype == torch.float32 and torch.equal(a, b)


def test_rotate_batch_rotates_about_centroid_and_rotates_forces():
    batch = collate(toy_structures(3, seed=2), dtype=torch.float64)
    R = random_rotations(3, generator=torch.Generator().manual_seed(5))
    rotated = rotate_batch(batch, R)
    assert torch.equal(rotated.edge_index, batch.edge_index)
    for k in range(3):
        mask = batch.batch == k
        a, b = batch.pos[mask], rotated.pos[mask]
        assert torch.allclose(a.mean(0), b.mean(0), atol=1e-12)
        assert torch.allclose((a - a.mean(0)) @ R[k].T, b - b.mean(0), atol=1e-12)
        assert torch.allclose(batch.forces[mask] @ R[k].T, rotated.forces[mask], atol=1e-12)
    # the labels are a rotation-invariant Morse potential: rotating them must keep them consistent
    same = rotate_batch(batch, torch.eye(3, dtype=torch.float64))
    assert torch.allclose(same.pos, batch.pos, atol=1e-12)


class _PositionDependent(ForceField):
    """A deliberately non-equivariant toy: energy and force depend on absolute x coordinates."""

    symmetry = Symmetry("none", 2, None, False, False)
    base_width = 1

    def __init__(self, width: int, **shared) -> None:
        super().__init__(width, **shared)
        self.scale = torch.nn.Parameter(torch.ones(()))

    def interactions(self, species, pos, batch):
        forces = torch.zeros_like(pos)
        forces[:, 0] = self.scale
        return self.scale * pos[:, 0] ** 2, forces


class _Invariant(_PositionDependent):
    def interactions(self, species, pos, batch):
        vec = pos[batch.edge_index[0]] - pos[batch.edge_index[1]]
        e = torch.zeros(pos.shape[0], dtype=pos.dtype).index_add(0, batch.edge_index[1], vec.norm(dim=-1))
        return e, torch.zeros_like(pos)


def test_equivariance_error_detects_and_clears():
    batch = collate(toy_structures(4, seed=1), dtype=torch.float64)
    bad = _PositionDependent(1, elements=[1, 6, 7, 8]).double()
    good = _Invariant(1, elements=[1, 6, 7, 8]).double()
    err_bad = equivariance_error(bad, batch, n_rotations=4, seed=0)
    err_good = equivariance_error(good, batch, n_rotations=4, seed=0)
    assert err_bad["forces"] > 0.1 and err_bad["energy"] > 1e-3
    assert err_good["forces"] < 1e-12 and err_good["energy"] < 1e-12
    assert err_bad == equivariance_error(bad, batch, n_rotations=4, seed=0)  # seeded
    assert all(isinstance(v, float) for v in err_bad.values())
