"""Resolving a run's data: open its source, hold out the validation set, take the nested training prefix.

The prefix is the nested fraction of the training pool a run trains on (`data.prefix`, or an exact
count `data.n_train`): prefixes of one split are nested, so a 10% run sees a subset of the 30% run's data.
The validation set is fixed by `data.split_seed` and the size `data.n_val` and never depends on the prefix.
Statistics of the prefix (`symscale.data.stats.compute_stats`) are computed by the loop, which reuses a
checkpoint's statistics on resume. The built-in set's packed copy (prefix + validation, with neighbour lists) is
cached beside it, so the runs of a study pack it once (`symscale.data.packed.pack_cached`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from symscale.config import RunConfig
from symscale.data.index import REASONS
from symscale.data.packed import pack, pack_cache_key, pack_cached
from symscale.data.readers import Dataset, check_structure, open_dataset
from symscale.data.splits import ConcatDataset, validation_split
from symscale.errors import SymscaleError


@dataclass(frozen=True)
class RunData:
    """The resolved data of a run: the dataset (maybe packed), prefix and validation indices, statistics."""

    dataset: Any
    train: np.ndarray
    val: np.ndarray
    description: str
    n_total: int
    split: str = "by structure"  # how the validation set was drawn: "by molecule" (whole molecules) or not


def _source_paths(config: RunConfig) -> list:
    """The files of `config.data.source` ("builtin": the built-in set's, generated on first use)."""
    d = config.data
    if d.source == "builtin":
        try:
            from symscale.data.builtin import builtin_dataset
        except ImportError as err:
            raise SymscaleError(f"the built-in dataset is not available in this installation ({err})") from None

        return [builtin_dataset(d.builtin_structures, seed=d.builtin_seed)]
    paths = [d.source] if isinstance(d.source, str) else list(d.source)
    for p in paths:
        if not Path(p).exists():
            raise SymscaleError(f"data not found: {p}")
    return paths


def open_data(config: RunConfig) -> Dataset:
    """The dataset named by `config.data.source` ("builtin" generates or reuses the built-in set)."""
    d = config.data
    paths = _source_paths(config)
    return open_dataset(
        paths[0] if len(paths) == 1 else paths,
        neutral_only=d.neutral_only,
        energy_key=d.energy_key,
        forces_key=d.forces_key,
    )


def _check_labels(dataset: Any) -> None:
    first = dataset[0]
    if first.forces is None or first.energy is None:
        missing = "forces" if first.forces is None else "energies"
        raise SymscaleError(f"invalid data: {getattr(dataset, 'description', 'dataset')} has no {missing}")


def _split_and_prefix(config: RunConfig, dataset: Any) -> tuple[Any, Any, int, str]:
    """Hold out the validation set (separate data when `data.val_source` is set, else whole molecules of the
    data) and size the training prefix: (dataset the indices refer to, splits, prefix size, how val was drawn)."""
    d = config.data
    n_total = len(dataset)
    if d.val_source is None and d.n_val >= n_total:
        raise SymscaleError.invalid("val (data.n_val)", d.n_val, f"fewer than the {n_total} structures of the data")
    val_data = None
    if d.val_source is not None:
        val_data = open_dataset(
            d.val_source, neutral_only=d.neutral_only, energy_key=d.energy_key, forces_key=d.forces_key
        )
    split = validation_split(dataset, d.n_val, d.split_seed, val_dataset=val_data)  # whole molecules in val
    splits, pool = split.splits, split.splits.n_train_max
    n_train = d.n_train or (max(1, round(d.prefix * pool)) if d.prefix else pool)
    if n_train > pool:
        raise SymscaleError(
            f"invalid --structures (data.n_train): got {n_train}, expected at most {pool} "
            f"(the data has {n_total} structures, {len(splits.val)} held out for validation)"
        )
    return split.dataset, splits, n_train, split.how


def run_split(config: RunConfig, dataset: Any) -> tuple[Any, np.ndarray, np.ndarray, str]:
    """(dataset the indices refer to, training prefix, validation indices, how val was drawn) of the run of
    `config` on `dataset` opened as the run opened it (`open_data`), unpacked: `symscale eval --split`."""
    dataset, splits, n_train, how = _split_and_prefix(config, dataset)
    return dataset, np.asarray(splits.train_prefix(n_train)), np.asarray(splits.val), how


def resolve_data(config: RunConfig, dataset: Any = None) -> RunData:
    """The data of a run: the validation set (whole molecules when the data has molecule ids), the
    training prefix (`data.n_train` structures, else the `data.prefix` prefix of the pool, else all
    of it) and, when prefix + validation fit under `data.pack_max_structures`, the packed in-RAM copy.
    `dataset` replaces `config.data.source` (tests, benchmarks); `config.data.val_source`, when set, is the
    validation data (e.g. OMol25's own validation split) instead of a carved-out set. Raises SymscaleError
    for data that cannot make the run."""
    d = config.data
    from_config = dataset is None
    dataset = open_data(config) if dataset is None else dataset
    _check_labels(dataset)
    n_total = len(dataset)
    dataset, splits, n_train, how = _split_and_prefix(config, dataset)
    train, val = splits.train_prefix(n_train), splits.val
    for rows, part in ((val, "validation set"), (train, "training prefix")):  # from the index: every row
        check_rows(dataset, rows, part, sample=0)  # (structures in memory are checked as they are packed)
    description = getattr(dataset, "description", f"{n_total} structures")
    if n_train + len(val) <= d.pack_max_structures and not _is_packed(dataset):
        graph = (d.cutoff, d.max_neighbors)  # neighbour lists found once here, gathered per batch after
        rows = np.concatenate([train, val])
        if from_config and d.source == "builtin" and d.val_source is None:  # a study's runs share its packing
            dataset = _pack_builtin(config, dataset, rows, description, graph)
        else:
            dataset = pack(dataset, rows, description=description, graph=graph)
        train, val = np.arange(n_train), np.arange(n_train, n_train + len(val))
    return RunData(dataset, np.asarray(train), np.asarray(val), description, n_total, how)


def _pack_builtin(config: RunConfig, dataset: Any, rows: np.ndarray, description: str, graph) -> Any:
    """The built-in set's rows packed once per machine: cached beside the set (`data.packed.pack_cached`)."""
    from symscale.data.builtin import cache_root

    d = config.data
    key = pack_cache_key(
        _source_paths(config), rows, graph, neutral_only=d.neutral_only, energy_key=d.energy_key,
        forces_key=d.forces_key,
    )  # fmt: skip
    return pack_cached(dataset, rows, cache_root() / "packed", key, description=description, graph=graph)


def check_run_data(config: RunConfig, sample: int = 256) -> str:
    """Check, before a study's first run, that the data can make the run of `config` (use the largest
    prefix of a study): the source opens, has energies and forces, holds more than `data.n_val` structures
    and enough for the prefix, and every structure of the validation set and of the prefix is usable
    (`check_rows`). Packs nothing. Returns the dataset's description; raises SymscaleError naming the first
    problem (file and row)."""
    d = config.data
    dataset = open_data(config)
    if len(dataset) == 0:
        raise SymscaleError(f"invalid data: {getattr(dataset, 'description', d.source)} holds no structures")
    _check_labels(dataset)
    n_total = len(dataset)
    dataset, splits, n_train, _ = _split_and_prefix(config, dataset)
    check_rows(dataset, splits.val, "validation set", sample)
    check_rows(dataset, splits.train_prefix(n_train), "training prefix", sample)
    return getattr(dataset, "description", f"{n_total} structures")


def check_rows(dataset: Any, rows: np.ndarray, part: str, sample: int = 256) -> None:
    """Raise SymscaleError (one line: file, row, reason) for the first structure among `rows` (dataset
    indices, in order) that cannot be trained on: NaN or inf labels or positions, a missing label, atoms on
    top of each other (`readers.check_structure`). A dataset read from files is checked for every row, from
    its index (`symscale.data.index`: the validity code of each row, found in its one pass; no row is read
    here). A dataset without an index (structures in memory) has its first `sample` rows read and checked;
    the others are checked when loaded (`readers.Dataset.__getitem__` raises the same one line)."""
    rows = np.asarray(rows, dtype=np.int64)
    if isinstance(dataset, ConcatDataset):  # training data, then separate validation data
        first = rows < dataset.n_first
        check_rows(dataset.first, rows[first], part, sample)
        check_rows(dataset.second, rows[~first] - dataset.n_first, part, sample)
        return
    if hasattr(dataset, "raw_rows") and hasattr(dataset, "locate"):
        codes = np.asarray(dataset.index.field("invalid"))[dataset.raw_rows(rows)]  # [len(rows)] uint8
        bad = np.flatnonzero(codes)
        if bad.size:
            count = f"{bad.size} of the {len(rows)} structures of the {part} are invalid"
            try:  # the row itself says exactly what is wrong with it (a field that is not a number, ...)
                dataset[int(rows[bad[0]])]
            except SymscaleError as err:
                raise SymscaleError(f"invalid data: {err}; {count}") from None
            path, row = dataset.locate(int(rows[bad[0]]))
            raise SymscaleError(f"invalid data: {path}: structure {row}: {REASONS[int(codes[bad[0]])]}; {count}")
        return
    for i in rows[:sample]:
        why = check_structure(dataset[int(i)])
        if why is not None:
            where = getattr(dataset, "description", "the data")
            raise SymscaleError(f"invalid data: structure {int(i)} of {where} ({part}): {why}")


def _is_packed(dataset: Any) -> bool:
    return type(dataset).__name__ == "PackedDataset"
