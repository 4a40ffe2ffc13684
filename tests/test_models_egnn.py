"""MC-EGNN (Levy et al. 2023): parameter formula, the K x K invariants, the multi-channel coordinate update."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from symscale.data.graph import Structure, collate
from symscale.models.egnn import EGNN, EquivariantBlock, parameter_count
from symscale.models.registry import build

ELEMENTS = (1, 6, 7, 8)


@pytest.mark.parametrize(("width", "layers", "k"), [(8, 3, 4), (20, 2, 3), (12, 1, 1), (16, 2, 8)])
def test_parameter_formula(width, layers, k):
    model = build("egnn", width, elements=ELEMENTS, num_layers=layers, num_vectors=k)
    assert isinstance(model, EGNN)
    assert model.num_vectors == k
    assert model.num_parameters() == parameter_count(width, 4, num_layers=layers, num_vectors=k)


def test_seven_w_squared_per_block():
    """phi_e (3 w^2) + Phi_x (w^2) + phi_h (3 w^2): the quadratic part of N per block, as in Levy et al."""
    n = [parameter_count(w, 4, num_layers=2) - parameter_count(w, 4, num_layers=1) for w in (64, 128, 256)]
    quadratic = (n[2] - 2 * n[1]) - (n[1] - 2 * n[0])  # the linear terms cancel: 7 (256^2 - 4 128^2 + ...)
    assert quadratic == 7 * ((256**2 - 2 * 128**2) - (128**2 - 2 * 64**2))


def test_block_matches_the_update_rule_written_out():
    """One block against the module docstring's equations, written with loops over edges and channels."""
    torch.manual_seed(0)
    k, w, n_atoms = 3, 6, 4
    block = EquivariantBlock(w, k, num_radial=2, cutoff=5.0, avg_neighbors=2.0).double()
    pos = torch.randn(n_atoms, 3, dtype=torch.float64)
    edge_index = torch.tensor([[1, 2, 3, 0, 2], [0, 0, 1, 1, 3]])  # rows: source j, target i
    vec = pos[edge_index[0]] - pos[edge_index[1]]
    h = torch.randn(n_atoms, w, dtype=torch.float64)
    disp = 0.3 * torch.randn(n_atoms, k, 3, dtype=torch.float64)  # channels already apart
    rbf = torch.randn(vec.shape[0], 2, dtype=torch.float64)
    env = torch.rand(vec.shape[0], dtype=torch.float64)
    with torch.no_grad():
        block.coordinate[-1].weight.normal_()  # a non-trivial channel mixing
        h_new, disp_new = block(h, disp, vec, rbf, env, edge_index)
        expected = disp.clone()
        silu = torch.nn.functional.silu
        for e, (j, i) in enumerate(edge_index.T.tolist()):
            x_i, x_j = pos[i] + disp[i], pos[j] + disp[j]  # channel positions X, [K, 3]
            diff = x_j - x_i
            gram = torch.tensor([[float(diff[c] @ diff[d]) for d in range(k)] for c in range(k)]) / 25.0
            pre = block.node_target(h[i]) + block.node_source(h[j]) + block.gram_input(gram.flatten().double())
            m = env[e] * silu(block.message(silu(pre + block.radial_input(rbf[e]))))
            phi = block.coordinate(m).view(k, k)
            for d in range(k):
                for c in range(k):
                    expected[i, d] += phi[c, d] * diff[c] / (diff[c].norm() + 1) / 2.0
    assert torch.allclose(disp_new, expected, atol=1e-12)
    # channel d moves along the other channels' differences: off-diagonal mixing matters
    assert not torch.allclose(disp_new[0, 0] - disp[0, 0], torch.zeros(3, dtype=torch.float64))
    assert h_new.shape == h.shape


def test_off_diagonal_inner_products_enter_the_message():
    """The K x K Gram matrix, not only its diagonal: changing an off-diagonal input weight changes energies."""
    torch.manual_seed(1)
    model = build("egnn", 16, elements=ELEMENTS, num_layers=2).double()
    batch = collate(
        [Structure(np.array([6, 1, 1, 8]), np.array([[0, 0, 0], [1.0, 0.1, 0], [-0.3, 1.0, 0.2], [0, 0.2, 1.2]]))],
        dtype=torch.float64,
    )
    with torch.no_grad():
        for block in model.blocks:
            block.coordinate[-1].weight.normal_()  # channels separate after the first block
        before = model(batch).energy
        model.blocks[1].gram_input.weight[:, 1] += 1.0  # the <D^1, D^2> column (off-diagonal)
        after = model(batch).energy
    assert not torch.allclose(before, after)


def test_force_head_is_bias_free_linear_map():
    model = build("egnn", 16, elements=ELEMENTS)
    assert model.force_head.bias is None and model.force_head.weight.shape == (1, 4)


def test_lone_atom_has_zero_force_and_dimer_forces_lie_on_the_bond():
    torch.manual_seed(0)
    model = build("egnn", 16, elements=ELEMENTS).double()
    lone = Structure(np.array([8]), np.zeros((1, 3)))
    bond = np.array([0.3, -0.5, 1.1])
    dimer = Structure(np.array([6, 8]), np.stack([np.zeros(3), bond]))
    with torch.no_grad():
        out = model(collate([lone, dimer], dtype=torch.float64))
    assert torch.equal(out.forces[0], torch.zeros(3, dtype=torch.float64))
    unit = torch.tensor(bond / np.linalg.norm(bond))
    for f in out.forces[1:]:
        assert torch.allclose(torch.linalg.cross(f, unit), torch.zeros(3, dtype=torch.float64), atol=1e-12)
        assert f.norm() > 0
