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
    with pytest.raises(SymscaleError, match="invalid n_val"):
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
