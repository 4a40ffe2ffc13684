import numpy as np
import pytest
import torch

from symscale.data.graph import collate
from symscale.data.loader import BatchLoader
from symscale.data.packed import PackedDataset, pack
from symscale.data.readers import open_dataset, write_structures
from symscale.data.splits import make_splits, molecule_groups
from symscale.data.stats import DatasetStats, compute_stats, count_elements
from symscale.data.toy import toy_structures
from symscale.errors import SymscaleError


def test_prefixes_are_nested_seeded_and_disjoint_from_val():
    s = make_splits(1000, 100, seed=3)
    assert len(s.val) == 100 and len(s.pool) == 900
    assert set(s.val).isdisjoint(s.pool)
    assert sorted(np.concatenate([s.val, s.pool]).tolist()) == list(range(1000))
    small, large = s.train_prefix(50), s.train_prefix(400)
    assert np.array_equal(large[:50], small)
    assert np.array_equal(make_splits(1000, 100, seed=3).train_prefix(400), large)
    assert not np.array_equal(make_splits(1000, 100, seed=4).train_prefix(400), large)
    with pytest.raises(SymscaleError):
        s.train_prefix(901)
    with pytest.raises(SymscaleError):
        make_splits(10, 10, 0)


def test_validation_takes_whole_molecules_when_groups_are_known():
    groups = np.repeat(np.random.default_rng(0).permutation(250), 4)  # 250 molecules, 4 snapshots each
    s = make_splits(1000, 101, seed=5, groups=groups)
    assert s.by_molecule and 101 <= len(s.val) < 105  # whole molecules: at least n_val, less than one more
    assert set(groups[s.val]).isdisjoint(groups[s.pool])  # no molecule on both sides
    assert sorted(np.concatenate([s.val, s.pool]).tolist()) == list(range(1000))
    assert np.array_equal(make_splits(1000, 101, seed=5, groups=groups).pool, s.pool)  # seeded
    assert np.array_equal(s.train_prefix(600)[:50], s.train_prefix(50))  # still nested
    plain = make_splits(1000, 101, seed=5)
    assert not plain.by_molecule and not set(groups[plain.val]).isdisjoint(groups[plain.pool])
    with pytest.raises(SymscaleError):
        make_splits(8, 5, seed=0, groups=[0, 0, 0, 0, 1, 1, 1, 1])  # five structures need both molecules


def test_molecule_groups_are_read_from_the_rows(tmp_path):
    structures = toy_structures(12, seed=3)
    for k, s in enumerate(structures):
        s.info["mol"] = k // 3
    write_structures(tmp_path / "a.aselmdb", structures[:6])
    write_structures(tmp_path / "b.aselmdb", structures[6:])
    groups = molecule_groups(open_dataset(tmp_path))  # two files: their molecule ids 0, 1 and 2, 3 stay apart
    assert groups is not None and len(set(groups.tolist())) == 4
    assert all(len(set(groups[k : k + 3].tolist())) == 1 for k in range(0, 12, 3))
    assert molecule_groups(toy_structures(5)) is None  # rows without molecule ids: split by structure
    # a reader's dataset answers from its index at any size; only row-by-row reading has a cap (and warns)
    assert np.array_equal(molecule_groups(open_dataset(tmp_path), max_structures=10), groups)
    assert molecule_groups(list(open_dataset(tmp_path)), max_structures=10) is None


def test_stats_match_hand_computation(tmp_path):
    structures = toy_structures(30, seed=2)
    st = compute_stats(structures, max_samples=100, cutoff=3.0, max_neighbors=4)
    # hand computation: composition matrix, least squares, force RMS, brute-force neighbour count
    elements = sorted({int(z) for s in structures for z in s.numbers})
    A = np.array([[np.sum(s.numbers == z) for z in elements] for s in structures], dtype=float)
    e = np.array([s.energy for s in structures])
    coef = np.linalg.lstsq(A, e, rcond=None)[0]
    assert st.elements == tuple(elements)
    for z, c in zip(elements, coef):
        assert st.element_energies[z] == pytest.approx(c, rel=1e-9)
    forces = np.concatenate([s.forces for s in structures])
    assert st.force_rms == pytest.approx(np.sqrt(np.mean(forces**2)))
    neighbours = 0
    for s in structures:
        d = np.linalg.norm(s.positions[:, None] - s.positions[None], axis=-1) + np.eye(len(s)) * 1e9
        neighbours += np.minimum((d < 3.0).sum(1), 4).sum()
    assert st.mean_neighbors == pytest.approx(neighbours / len(forces))
    assert st.atoms_per_structure == pytest.approx(len(forces) / 30)
    assert DatasetStats.load(st.save(tmp_path / "stats.json")) == st
    assert compute_stats(structures, max_samples=10).n_sampled == 10


@pytest.mark.parametrize("ext", ["aselmdb", "extxyz"])
def test_element_census_counts_every_structure_from_numbers_alone(tmp_path, ext):
    structures = toy_structures(25, seed=5, elements=(1, 6, 8)) + toy_structures(2, seed=6, elements=(7,))
    write_structures(tmp_path / f"d.{ext}", structures)
    data = open_dataset(tmp_path / f"d.{ext}")
    expected = {z: sum(z in s.numbers for s in structures) for z in (1, 6, 7, 8)}
    for source in (data, pack(data), structures):
        census = count_elements(source, np.arange(len(structures)))
        assert census.structures == {z: n for z, n in expected.items() if n} and census.examples[7] == (25, 26)
    assert np.array_equal(data.numbers(26), structures[26].numbers)
    st = compute_stats(data, max_samples=5, seed=0)  # 5 of 27 labelled; N only in the last two
    assert 7 in st.element_energies and st.element_structures[7] == 2 and st.n_sampled == 5


def test_packed_equals_source_and_saves(tmp_path):
    structures = toy_structures(9, seed=4)
    p = pack(structures, indices=[8, 0, 3])
    assert len(p) == 3 and np.array_equal(p[0].positions, structures[8].positions)
    assert p[2].energy == structures[3].energy
    q = PackedDataset.load(p.save(tmp_path / "p.npz"))
    assert np.array_equal(q.forces, p.forces) and q.description == p.description


def test_loader_order_resume_and_prefetch():
    structures = toy_structures(10, seed=6)
    idx = np.array([9, 2, 5, 0, 1, 7, 3])
    batches = list(BatchLoader(structures, idx, batch_size=3))
    assert len(batches) == 3 and batches[-1].num_structures == 1
    ref = collate([structures[i] for i in (9, 2, 5)])
    assert torch.equal(batches[0].pos, ref.pos) and torch.equal(batches[0].edge_index, ref.edge_index)
    resumed = list(BatchLoader(structures, idx, batch_size=3, start_batch=1))
    assert torch.equal(resumed[0].energy, batches[1].energy)
    pre = list(BatchLoader(structures, idx, batch_size=3, prefetch=2, dtype=torch.float64))
    assert [b.num_atoms for b in pre] == [b.num_atoms for b in batches] and pre[0].pos.dtype == torch.float64


def test_loader_workers_give_the_same_batches_in_the_same_order(tmp_path):
    """Worker processes read and collate from disk (the unpacked path of a large dataset), in order."""
    write_structures(tmp_path / "d.aselmdb", toy_structures(40, seed=8))
    ds = open_dataset(tmp_path / "d.aselmdb")
    order = np.random.default_rng(2).permutation(40)
    ref = list(BatchLoader(ds, order, batch_size=6))
    for loader in (BatchLoader(ds, order, batch_size=6, workers=2), BatchLoader(ds, order, 6, workers=1, prefetch=3)):
        got = list(loader)
        assert len(got) == len(ref) == 7
        for a, b in zip(got, ref, strict=True):
            assert torch.equal(a.pos, b.pos) and torch.equal(a.edge_index, b.edge_index)
            assert torch.equal(a.energy, b.energy) and torch.equal(a.forces, b.forces)
    resumed = list(BatchLoader(ds, order, batch_size=6, start_batch=5, workers=2))
    assert len(resumed) == 2 and torch.equal(resumed[0].pos, ref[5].pos)
    assert list(BatchLoader(ds, order, batch_size=6, start_batch=7, workers=2)) == []
    with pytest.raises(SymscaleError):
        BatchLoader(ds, order, batch_size=6, workers=-1)


def test_statistics_of_a_packed_set_read_its_stored_neighbour_lists(monkeypatch):
    from symscale.data import stats as stats_mod

    structures = toy_structures(40, seed=4)
    plain = compute_stats(structures, np.arange(5, 40), max_samples=20, cutoff=4.0, max_neighbors=6, seed=1)
    packed = pack(structures, graph=(4.0, 6))

    def no_search(*args, **kwargs):
        raise AssertionError("neighbours searched again")

    monkeypatch.setattr(stats_mod, "_mean_neighbors", no_search)
    stored = compute_stats(packed, np.arange(5, 40), max_samples=20, cutoff=4.0, max_neighbors=6, seed=1)
    assert stored == plain  # the same edges, counted from the stored lists
    with pytest.raises(AssertionError, match="searched again"):  # lists of another graph are not used
        compute_stats(packed, np.arange(5, 40), max_samples=20, cutoff=3.0, max_neighbors=6, seed=1)


def test_mean_neighbors_counted_by_tree_equal_the_radius_graph():
    """The statistics' neighbour count (k-d tree, no graph built) against the edges of `radius_graph`, with
    the neighbour cap binding and not."""
    from symscale.data import stats as stats_mod
    from symscale.data.graph import radius_graph

    structures = list(toy_structures(80, seed=2, min_atoms=3, max_atoms=40))
    pos = torch.from_numpy(np.concatenate([s.positions for s in structures]))
    batch = torch.repeat_interleave(torch.arange(len(structures)), torch.tensor([len(s) for s in structures]))
    for cutoff, cap in [(6.0, 30), (3.0, 4), (12.0, 8)]:
        edges = radius_graph(pos, batch, cutoff, cap).shape[1]
        assert stats_mod._mean_neighbors(structures, cutoff, cap) == edges / len(pos), (cutoff, cap)
