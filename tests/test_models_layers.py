"""Shared layers: the gather with a scatter backward, and scatter_sum."""

from __future__ import annotations

import torch

from symscale.models.layers import gather, scatter_sum


def test_gather_matches_indexing_in_value_and_gradient():
    gen = torch.Generator().manual_seed(0)
    src = torch.randn(7, 3, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    index = torch.tensor([0, 3, 3, 6, 1, 3, 0, 5])  # repeats: the backward must accumulate
    weight = torch.randn(8, 3, 4, dtype=torch.float64, generator=gen)
    ours = gather(src, index)
    assert torch.equal(ours, src[index])
    (g_ours,) = torch.autograd.grad((ours * weight).sum(), src)
    (g_ref,) = torch.autograd.grad((src[index] * weight).sum(), src)
    assert torch.allclose(g_ours, g_ref)
    assert g_ours[2].abs().sum() == 0 and g_ours[3].abs().sum() > 0  # row 2 unused, row 3 used three times


def test_gather_is_twice_differentiable():
    """Conservative forces train through a gradient, so the gather's backward must itself be differentiable."""
    src = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    index = torch.tensor([4, 0, 0, 2, 1, 4])
    assert torch.autograd.gradcheck(lambda s: gather(s, index), (src,))
    assert torch.autograd.gradgradcheck(lambda s: gather(s, index).pow(3), (src,))


def test_scatter_sum_is_the_adjoint_of_gather():
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(6, 2, generator=gen), torch.randn(9, 2, generator=gen)
    index = torch.randint(0, 6, (9,), generator=gen)
    assert torch.allclose((gather(x, index) * y).sum(), (x * scatter_sum(y, index, 6)).sum(), atol=1e-6)
