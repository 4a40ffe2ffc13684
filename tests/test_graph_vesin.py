"""vesin's cell list and the padded distance tensor give identical edges; radius_graph picks by size."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from symscale.data import graph
from symscale.data.graph import radius_graph, radius_graph_padded, radius_graph_vesin


def _cloud(n: int, rng: np.random.Generator, density: float = 0.1) -> np.ndarray:
    radius = (3 * n / (4 * np.pi * density)) ** (1 / 3)
    return rng.uniform(-radius, radius, (n, 3))


def _batch(sizes, rng):
    pos = torch.from_numpy(np.concatenate([_cloud(n, rng) for n in sizes]))
    return pos, torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))


@pytest.mark.parametrize("sizes", [[1, 5, 2], [20, 40], [3, 120, 60], [250]])
@pytest.mark.parametrize("max_neighbors", [4, 30, 500])
def test_vesin_gives_identical_edges(sizes, max_neighbors):
    rng = np.random.default_rng(sum(sizes) + max_neighbors)
    pos, batch = _batch(sizes, rng)
    padded = radius_graph_padded(pos, batch, 5.0, max_neighbors)
    vesin = radius_graph_vesin(pos, batch, 5.0, max_neighbors)
    assert padded.shape[1] > 0
    assert torch.equal(padded, vesin)  # same set, same order (target, distance, source)


def test_vesin_matches_in_float32():
    pos, batch = _batch([180, 30], np.random.default_rng(5))
    pos = pos.float()
    assert torch.equal(radius_graph_padded(pos, batch), radius_graph_vesin(pos, batch))


def test_vesin_breaks_distance_ties_like_the_padded_search():
    # a cubic grid: many neighbours at exactly the same distance, so only the tie rule decides who is kept
    g = np.arange(5, dtype=float) * 1.5
    pos = torch.from_numpy(np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3))
    batch = torch.zeros(len(pos), dtype=torch.long)
    for k in (6, 7, 19):
        assert torch.equal(radius_graph_padded(pos, batch, 3.1, k), radius_graph_vesin(pos, batch, 3.1, k))


def test_radius_graph_uses_vesin_from_the_crossover(monkeypatch):
    calls = []
    real = graph.radius_graph_vesin
    monkeypatch.setattr(graph, "radius_graph_vesin", lambda *a: calls.append(1) or real(*a))
    rng = np.random.default_rng(0)
    small, small_batch = _batch([graph.VESIN_MIN_ATOMS - 1, 10], rng)
    radius_graph(small, small_batch)
    assert not calls
    large, large_batch = _batch([graph.VESIN_MIN_ATOMS, 10], rng)
    edges = radius_graph(large, large_batch)
    assert calls == [1]
    assert torch.equal(edges, radius_graph_padded(large, large_batch))
