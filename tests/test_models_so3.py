"""Tests of the SO(3) conventions in symscale.models.so3 (float64)."""

from __future__ import annotations

import pytest
import torch

from symscale.models import so3

DT = torch.float64


def _angles(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.rand(n, generator=g, dtype=DT) * 6.0 for _ in range(3))


@pytest.mark.parametrize("lmax", [2, 4, 6])
def test_wigner_orthogonal_and_homomorphism(lmax):
    r1 = so3.angles_to_matrix(*_angles(4, 1))
    r2 = so3.angles_to_matrix(*_angles(4, 2))
    d1, d2 = so3.wigner_d_from_matrix(lmax, r1), so3.wigner_d_from_matrix(lmax, r2)
    eye = torch.eye(so3.num_coefficients(lmax), dtype=DT)
    assert torch.allclose(d1 @ d1.transpose(1, 2), eye.expand_as(d1), atol=1e-12)
    assert torch.allclose(so3.wigner_d_from_matrix(lmax, r1 @ r2), d1 @ d2, atol=1e-11)


@pytest.mark.parametrize("lmax", [1, 3, 6])
def test_spherical_harmonics_equivariance(lmax):
    rot = so3.angles_to_matrix(*_angles(5, 3))
    x = torch.randn(5, 3, dtype=DT, generator=torch.Generator().manual_seed(0))
    y_rot = so3.spherical_harmonics(lmax, torch.einsum("eij,ej->ei", rot, x))
    y = torch.einsum("eij,ej->ei", so3.wigner_d_from_matrix(lmax, rot), so3.spherical_harmonics(lmax, x))
    assert torch.allclose(y_rot, y, atol=1e-11)


def test_l1_is_cartesian_xyz():
    x = torch.tensor([[0.3, -1.2, 0.7]], dtype=DT)
    assert torch.allclose(so3.spherical_harmonics(1, x)[0, 1:4], 3**0.5 * x[0] / x.norm(), atol=1e-14)


def test_j_matrix_is_involution():
    for l in range(7):
        j = so3.j_matrix(l)
        assert torch.allclose(j @ j, torch.eye(2 * l + 1, dtype=DT), atol=1e-12)


def test_agrees_with_e3nn():
    o3 = pytest.importorskip("e3nn.o3")
    a, b, g = _angles(3, 4)
    # e3nn 0.6 builds its generators in float32, hence the loose tolerance
    for l in range(5):
        ref = o3.wigner_D(l, a, b, g)
        ours = so3.wigner_d(l, a, b, g)[:, l * l :, l * l :]
        assert torch.allclose(ours, ref.to(DT), atol=1e-5)
    assert torch.allclose(so3.angles_to_matrix(a, b, g), o3.angles_to_matrix(a, b, g), atol=1e-12)


def test_edge_frame_maps_edge_to_y_and_sh_to_m0():
    v = torch.randn(10, 3, dtype=DT, generator=torch.Generator().manual_seed(5))
    rot = so3.edge_frame_matrix(v)
    unit = v / v.norm(dim=-1, keepdim=True)
    assert torch.allclose(torch.einsum("eij,ej->ei", rot, unit), torch.tensor([0.0, 1.0, 0.0], dtype=DT).expand(10, 3))
    lmax = 4
    d = so3.edge_wigner(v, lmax)
    assert torch.allclose(d, so3.wigner_d_from_matrix(lmax, rot), atol=1e-12)
    y = torch.einsum("eij,ej->ei", d, so3.spherical_harmonics(lmax, v))
    m0 = torch.tensor([l * l + l for l in range(lmax + 1)])
    mask = torch.ones(so3.num_coefficients(lmax), dtype=torch.bool)
    mask[m0] = False
    assert y[:, mask].abs().max() < 1e-12
    assert torch.allclose(
        y[:, m0], torch.tensor([(2 * l + 1) ** 0.5 for l in range(lmax + 1)], dtype=DT).expand(10, -1)
    )


@pytest.mark.parametrize(("lmax", "mmax"), [(2, 2), (4, 2), (6, 3)])
def test_edge_rotation_keeps_the_rows_of_the_full_wigner_matrix(lmax, mmax):
    v = torch.randn(6, 3, dtype=DT, generator=torch.Generator().manual_seed(6))
    x = torch.randn(6, so3.num_coefficients(lmax), 4, dtype=DT)
    full = so3.edge_wigner(v, lmax)  # [E, K, K]
    rows = torch.tensor([l * l + l + m for l, m in so3.edge_frame_rows(lmax, mmax)])
    r = so3.edge_rotation(v, lmax, mmax)
    h = r.to_edge(x)
    assert torch.allclose(h, full[:, rows] @ x, atol=1e-12)
    # back to the global frame: the orthogonal projection onto the kept rows, rotated back
    assert torch.allclose(r.from_edge(h), full[:, rows].transpose(1, 2) @ full[:, rows] @ x, atol=1e-12)
    assert torch.allclose(r.to_edge(r.from_edge(h)), h, atol=1e-12)  # rows of a rotation are orthonormal
    y = r.to_edge(so3.spherical_harmonics(lmax, v)[..., None])[..., 0]  # Y(r_hat) in its own edge frame
    assert y[:, lmax + 1 :].abs().max() < 1e-12  # only the m = 0 rows (the first lmax + 1) survive
    weight = torch.rand(6, dtype=DT, generator=torch.Generator().manual_seed(7))
    weighted = so3.edge_rotation(v, lmax, mmax, weight=weight)
    assert torch.allclose(weighted.to_edge(x), h, atol=1e-12)  # the weight applies on the way back only
    assert torch.allclose(weighted.from_edge(h), weight[:, None, None] * r.from_edge(h), atol=1e-12)
    assert torch.allclose(weighted.from_edge(h[:, :2]), weight[:, None, None] * r.from_edge(h[:, :2]), atol=1e-12)
