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
from symscale.data.packed import pack, pack_cache_key, pack_cached
from symscale.data.readers import Dataset, open_dataset
from symscale.data.splits import validation_split
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
    and enough for the prefix, and the validation set and the first `sample` structures of the prefix are
    usable (`readers.check_structure`: finite labels, atoms apart). Reads no more than those; packs nothing.
    Returns the dataset's description; raises SymscaleError naming the first problem."""
    from symscale.data.readers import check_structure

    d = config.data
    dataset = open_data(config)
    if len(dataset) == 0:
        raise SymscaleError(f"invalid data: {getattr(dataset, 'description', d.source)} holds no structures")
    _check_labels(dataset)
    n_total = len(dataset)
    dataset, splits, n_train, _ = _split_and_prefix(config, dataset)
    for i in [*splits.val, *splits.train_prefix(min(n_train, sample))]:
        why = check_structure(dataset[int(i)])
        if why is not None:
            raise SymscaleError(
                f"invalid data: structure {int(i)} of {getattr(dataset, 'description', d.source)}: {why}"
            )
    return getattr(dataset, "description", f"{n_total} structures")


def _is_packed(dataset: Any) -> bool:
    return type(dataset).__name__ == "PackedDataset"
