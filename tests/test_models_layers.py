"""Shared layers: the gather with a scatter backward, and scatter_sum."""

from __future__ import annotations

import pytest
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


def test_scatter_sum_of_a_sorted_index_equals_scatter_add_in_value_and_gradients():
    from symscale.models import layers

    gen = torch.Generator().manual_seed(1)
    index = torch.sort(torch.randint(0, 6, (40,), generator=gen)).values  # sorted, some rows empty
    src = torch.randn(40, 3, 2, dtype=torch.float64, generator=gen, requires_grad=True)
    assert layers._receiver_matrix(index, 8, src) is not None  # the CSR path is taken
    ref = torch.zeros(8, 3, 2, dtype=torch.float64).index_add(0, index, src)
    assert torch.allclose(scatter_sum(src, index, 8), ref, rtol=0, atol=1e-12)
    assert torch.autograd.gradcheck(lambda s: scatter_sum(s, index, 8), (src,))
    assert torch.autograd.gradgradcheck(lambda s: scatter_sum(s, index, 8).pow(3), (src,))
    assert layers._receiver_matrix(index.flip(0), 8, src) is None  # unsorted: scatter_add_
    index[0] = 1  # an index changed in place is not served a stale matrix
    ref = torch.zeros(8, 3, 2, dtype=torch.float64).index_add(0, index, src)
    assert torch.allclose(scatter_sum(src, index, 8), ref, rtol=0, atol=1e-12)


def _family_outputs(arch: str, forces: str, molecules) -> list[torch.Tensor]:
    from symscale.data.graph import collate
    from symscale.models.registry import build

    torch.manual_seed(0)
    model = build(arch, 4, elements=(1, 6, 7, 8), cutoff=6.0, forces=forces).double()
    batch = collate(molecules, cutoff=6.0, dtype=torch.float64)
    out = model(batch)
    loss = out.energy.pow(2).sum() + out.forces.pow(2).sum()
    grads = torch.autograd.grad(loss, [p for p in model.parameters() if p.requires_grad], allow_unused=True)
    return [out.energy.detach(), out.forces.detach(), *(g for g in grads if g is not None)]


@pytest.mark.parametrize("arch", ["mpnn", "egnn", "gemnet_oc", "esen"])
@pytest.mark.parametrize("forces", ["direct", "conservative"])
def test_families_are_identical_with_the_csr_scatter(arch, forces, monkeypatch):
    """Energies, forces and every parameter gradient (fp64) agree to 1e-10 with scatter_add_ everywhere."""
    from symscale.data.toy import toy_structures
    from symscale.models import layers
    from symscale.models.registry import get_family

    if forces == "conservative" and not getattr(get_family(arch), "supports_conservative", True):
        pytest.skip(f"{arch} has no conservative forces")
    molecules = toy_structures(3, seed=5, min_atoms=4, max_atoms=9)
    fast = _family_outputs(arch, forces, molecules)
    monkeypatch.setattr(layers, "_receiver_matrix", lambda *a: None)  # the previous path
    slow = _family_outputs(arch, forces, molecules)
    assert len(fast) == len(slow)
    for a, b in zip(fast, slow):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-10)


def test_scatter_sum_under_inference_mode_matches():
    from symscale.data.graph import collate
    from symscale.data.toy import toy_structures
    from symscale.models.registry import build

    batch = collate(toy_structures(3, seed=5, min_atoms=4, max_atoms=9), cutoff=6.0, dtype=torch.float64)
    for arch in ("mpnn", "gemnet_oc"):
        torch.manual_seed(0)
        model = build(arch, 4, elements=(1, 6, 7, 8), cutoff=6.0).double().eval()
        with torch.no_grad():
            ref = model(batch)
        with torch.inference_mode():
            out = model(batch)
        assert torch.allclose(out.forces, ref.forces, rtol=1e-12, atol=1e-12)


def test_flop_counting_sees_a_scatter_not_a_dense_product():
    """Under FlopCounterMode the CSR path is off: a scatter counts one add per source element."""
    from symscale.train.compute import count_flops

    index = torch.sort(torch.randint(0, 50, (400,))).values
    src = torch.randn(400, 8)
    assert count_flops(lambda: scatter_sum(src, index, 50)).corrected == 400 * 8
