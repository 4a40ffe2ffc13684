"""Neighbour lists stored at packing time: batches gathered from them equal batches collated from scratch."""

from __future__ import annotations

from dataclasses import fields

import numpy as np
import pytest
import torch

from symscale.data.graph import GraphBatch, collate
from symscale.data.loader import BatchLoader
from symscale.data.packed import PackedDataset, pack
from symscale.data.toy import toy_structures


def _assert_same_batch(a: GraphBatch, b: GraphBatch) -> None:
    for f in fields(GraphBatch):
        x, y = getattr(a, f.name), getattr(b, f.name)
        assert x.dtype == y.dtype and torch.equal(x, y), f.name


@pytest.fixture(scope="module")
def structures():
    return toy_structures(300, seed=11, min_atoms=2, max_atoms=40)  # more than one packing chunk (256)


def test_stored_edges_give_the_batches_collate_gives(structures):
    packed = pack(structures, graph=(3.5, 6))  # a cutoff and cap that bind, so order and truncation matter
    assert packed.has_graph(3.5, 6) and not packed.has_graph(6.0, 30)
    assert packed.edges.dtype == np.int32 and packed.edge_offsets[-1] == packed.edges.shape[1]
    rng = np.random.default_rng(0)
    for idx in (rng.permutation(300)[:64], np.array([299, 0, 0, 257, 255, -1]), np.array([7])):
        ref = collate([structures[int(i)] for i in idx], 3.5, 6, torch.float32)
        _assert_same_batch(packed.collate(idx, 3.5, 6, torch.float32), ref)
    # a different graph than the stored one is searched, not gathered from the wrong lists
    idx = rng.permutation(300)[:20]
    _assert_same_batch(
        packed.collate(idx, 6.0, 30, torch.float64), collate([structures[i] for i in idx], 6.0, 30, torch.float64)
    )


def test_every_stored_edge_is_within_the_cutoff_and_capped(structures):
    packed = pack(structures[:40], graph=(3.0, 4))
    for i in range(40):
        a, b = packed.edge_offsets[i], packed.edge_offsets[i + 1]
        j, t = packed.edges[:, a:b]
        pos = structures[i].positions
        assert (np.linalg.norm(pos[j] - pos[t], axis=1) < 3.0).all()
        assert (np.bincount(t, minlength=len(pos)) <= 4).all() and (j != t).all()


def test_graph_survives_save_and_load_and_loader_uses_it(structures, tmp_path):
    packed = pack(structures[:70], graph=(6.0, 30))
    loaded = PackedDataset.load(packed.save(tmp_path / "p.npz"))
    assert loaded.has_graph(6.0, 30) and np.array_equal(loaded.edges, packed.edges)
    assert not PackedDataset.load(pack(structures[:5]).save(tmp_path / "plain.npz")).has_graph(6.0, 30)
    order = np.random.default_rng(1).permutation(70)
    for ours, ref in zip(BatchLoader(loaded, order, 16), BatchLoader(structures[:70], order, 16), strict=True):
        _assert_same_batch(ours, ref)
    assert packed.with_graph(6.0, 30) is packed  # already stored: nothing recomputed
