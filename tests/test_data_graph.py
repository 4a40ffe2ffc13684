import numpy as np
import pytest
import torch

from symscale.data.graph import collate, edge_vectors, radius_graph
from symscale.data.toy import toy_structures


def brute_force_edges(structures, cutoff, max_neighbors):
    edges = set()
    offset = 0
    for s in structures:
        d = np.linalg.norm(s.positions[:, None] - s.positions[None], axis=-1)
        n = len(s)
        for i in range(n):
            cand = sorted((d[i, j], j) for j in range(n) if j != i and d[i, j] < cutoff)
            for _, j in cand[:max_neighbors]:
                edges.add((offset + j, offset + i))
        offset += n
    return edges


@pytest.mark.parametrize("cutoff,max_neighbors", [(6.0, 30), (2.5, 30), (6.0, 3)])
def test_edges_equal_brute_force(cutoff, max_neighbors):
    structures = toy_structures(12, seed=3, max_atoms=15)
    batch = collate(structures, cutoff=cutoff, max_neighbors=max_neighbors)
    got = set(map(tuple, batch.edge_index.T.tolist()))
    assert got == brute_force_edges(structures, cutoff, max_neighbors)


def test_edges_stay_within_structures_and_collation_is_deterministic():
    structures = toy_structures(8, seed=1)
    a, b = collate(structures), collate(structures)
    assert torch.equal(a.edge_index, b.edge_index)
    assert torch.equal(a.batch[a.edge_index[0]], a.batch[a.edge_index[1]])
    assert bool((a.edge_index[0] != a.edge_index[1]).all())
    assert a.num_atoms == sum(len(s) for s in structures)
    assert torch.allclose(a.energy, torch.tensor([s.energy for s in structures], dtype=torch.float32))


def test_edge_vectors_carry_gradients():
    batch = collate(toy_structures(2, seed=0))
    pos = batch.pos.clone().requires_grad_(True)
    edge_vectors(pos, batch.edge_index).norm(dim=-1).sum().backward()
    assert pos.grad is not None and pos.grad.abs().sum() > 0


def test_radius_graph_empty_batch():
    assert radius_graph(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long)).shape == (2, 0)
