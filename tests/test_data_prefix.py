"""Resolving a run's data: the validation set keeps whole molecules, the prefix is nested and sized."""

from __future__ import annotations

import pytest

from symscale.config import RunConfig
from symscale.data.prefix import resolve_data
from symscale.data.toy import toy_structures
from symscale.errors import SymscaleError


def cfg(**kw) -> RunConfig:
    return RunConfig.from_dict({"arch": "mpnn", "width": 8, "data": "toy", **kw})


def test_prefixes_are_nested_and_the_validation_set_fixed():
    data = toy_structures(60, seed=2)
    small, large = resolve_data(cfg(n_val=10, train_fraction=0.3), data), resolve_data(cfg(n_val=10), data)
    energy = lambda d, idx: [round(d.dataset[int(i)].energy, 9) for i in idx]  # noqa: E731 (packed copies)
    assert len(small.train) == round(0.3 * 50) and len(large.train) == 50
    assert energy(small, small.train) == energy(large, large.train)[: len(small.train)]
    assert energy(small, small.val) == energy(large, large.val)


def test_data_that_cannot_make_the_run_is_one_error():
    with pytest.raises(SymscaleError, match=r"invalid val \(data.n_val\)"):
        resolve_data(cfg(n_val=60), toy_structures(60, seed=2))
    with pytest.raises(SymscaleError, match="invalid --structures"):
        resolve_data(cfg(n_val=10, n_train=51), toy_structures(60, seed=2))


def test_runs_on_data_with_molecule_ids_validate_on_unseen_molecules(tmp_path):
    from symscale.data.readers import open_dataset, write_structures

    structures = toy_structures(60, seed=2)
    for k, s in enumerate(structures):
        s.info["mol"] = k // 4  # 15 molecules of 4 snapshots, as the built-in set records them
    write_structures(tmp_path / "d.aselmdb", structures)
    data = resolve_data(cfg(n_val=10), open_dataset(tmp_path / "d.aselmdb"))
    assert data.split == "by molecule" and len(data.val) == 12  # three whole molecules
    mol = [s.info["mol"] for s in structures]
    packed_val = {round(data.dataset[int(i)].energy, 9) for i in data.val}  # packed: match by energy
    val_mols = {mol[k] for k, s in enumerate(structures) if round(s.energy, 9) in packed_val}
    train_mols = {mol[k] for k, s in enumerate(structures) if round(s.energy, 9) not in packed_val}
    assert len(val_mols) == 3 and val_mols.isdisjoint(train_mols)
    assert resolve_data(cfg(n_val=10), toy_structures(60, seed=2)).split == "by structure"  # no ids


def test_the_builtin_sets_packing_is_cached_and_identical(tmp_path, monkeypatch):
    import numpy as np

    from symscale.data import packed
    from symscale.data.builtin import builtin_path
    from symscale.data.readers import write_structures

    monkeypatch.setenv("SYMSCALE_CACHE", str(tmp_path))
    structures = toy_structures(60, seed=2)
    for k, s in enumerate(structures):
        s.info["mol"] = k // 4
    write_structures(builtin_path(60, 0), structures)  # stands in for the generated set
    config = cfg(data="builtin", builtin_structures=60, n_val=10)
    first = resolve_data(config)
    assert len(list((tmp_path / "packed").glob("packed-*.npz"))) == 1

    def no_packing(*args, **kwargs):
        raise AssertionError("packed again")

    monkeypatch.setattr(packed, "pack", no_packing)
    again = resolve_data(config)  # from the cache: no packing
    for field in ("numbers", "positions", "forces", "energy", "offsets", "edges", "edge_offsets", "graph"):
        a, b = getattr(first.dataset, field), getattr(again.dataset, field)
        assert a.dtype == b.dtype and np.array_equal(a, b), field
    assert np.array_equal(first.train, again.train) and np.array_equal(first.val, again.val)
    assert again.dataset.description == first.dataset.description
    with pytest.raises(AssertionError, match="packed again"):  # another split is another packing
        resolve_data(cfg(data="builtin", builtin_structures=60, n_val=14))
