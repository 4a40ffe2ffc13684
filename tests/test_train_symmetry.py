"""Rotation augmentation really rotates; equivariant families see the same energies; the symmetry loss."""

from __future__ import annotations

import pytest
import torch

from symscale.data.graph import collate
from symscale.data.toy import toy_structures
from symscale.models.registry import build
from symscale.train.loss import force_field_loss
from symscale.train.symmetry import augment_batch, random_orthogonal, symmetry_loss


@pytest.fixture(scope="module")
def batch():
    return collate(toy_structures(6, seed=5), dtype=torch.float64)


def _pair_distances(b, s):
    pos = b.pos[b.batch == s]
    return torch.cdist(pos, pos)


def test_so3_augmentation_rotates_each_structure(batch):
    gen = torch.Generator().manual_seed(0)
    rotated = augment_batch(batch, "so3", gen)
    assert not torch.allclose(rotated.pos, batch.pos)
    for s in range(batch.num_structures):
        torch.testing.assert_close(_pair_distances(rotated, s), _pair_distances(batch, s))
    torch.testing.assert_close(rotated.forces.norm(dim=-1), batch.forces.norm(dim=-1))
    assert augment_batch(batch, "none", gen) is batch


def test_o3_draws_inversions():
    R = random_orthogonal(64, torch.Generator().manual_seed(1), reflections=True)
    det = torch.linalg.det(R)
    assert (det < 0).any() and (det > 0).any()
    torch.testing.assert_close(R @ R.transpose(1, 2), torch.eye(3, dtype=R.dtype).expand(64, 3, 3))


def test_equivariant_family_gives_equal_energies_on_rotated_batches(batch):
    torch.manual_seed(0)
    model = build("egnn", 8, elements=[1, 6, 7, 8]).double().eval()
    gen = torch.Generator().manual_seed(2)
    rotated = augment_batch(batch, "so3", gen)
    with torch.no_grad():
        a, b = model(batch), model(rotated)
    torch.testing.assert_close(a.energy, b.energy, rtol=1e-9, atol=1e-9)
    # and the rotated labels keep the loss unchanged, so the symmetry loss equals the plain loss
    loss_of = lambda x: force_field_loss(model(x), x, 1.0).total  # noqa: E731
    with torch.no_grad():
        plain = loss_of(batch)
        sym = symmetry_loss(loss_of, batch, 3, torch.Generator().manual_seed(3))
    torch.testing.assert_close(sym, plain, rtol=1e-9, atol=1e-9)


def test_unconstrained_family_sees_different_energies(batch):
    torch.manual_seed(0)
    model = build("mpnn", 8, elements=[1, 6, 7, 8]).double().eval()
    rotated = augment_batch(batch, "so3", torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert not torch.allclose(model(batch).energy, model(rotated).energy, rtol=1e-6, atol=1e-6)
