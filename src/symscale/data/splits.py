"""Splits for the data axis of a scaling study: a fixed validation set and nested training prefixes.

One seeded permutation of all structure indices: its first `n_val` entries are the validation set, the rest,
in permutation order, is the training pool. `train_prefix(n)` is the first n entries of the pool, so a
smaller training set is always contained in any larger one (nested prefixes), and the validation set never
changes with n.

When structures come in groups (snapshots of one molecule, as in the built-in set, whose rows record `mol`),
`make_splits(..., groups=...)` puts whole molecules in the validation set: snapshots of one molecule are
correlated, and a molecule on both sides would make the validation loss optimistic (DATA_NOTES.md). The
validation set then holds the first molecules of a seeded permutation until it has at least `n_val`
structures; the training pool is the rest, in a seeded permutation of structures as before.
`molecule_groups(dataset)` finds the groups where the rows carry them (from the dataset index, at any size).

`validation_split(dataset, n_val, seed, val_dataset)` is what a run calls: carved-out validation as above, or,
with separate validation data (OMol25's own validation split, as the reference study reported), all of the
training data in the pool and a seeded sample of the validation data.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from symscale.data.index import indexed_dataset
from symscale.errors import SymscaleError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Splits:
    """`val`: validation indices; `pool`: training indices in the order prefixes take them."""

    val: np.ndarray  # [n_val] int64
    pool: np.ndarray  # [n_total - n_val] int64
    seed: int
    by_molecule: bool = False  # validation made of whole molecules (groups)

    @property
    def n_train_max(self) -> int:
        return len(self.pool)

    def train_prefix(self, n: int) -> np.ndarray:
        """The first `n` training indices (nested: train_prefix(m) starts with train_prefix(n) for m >= n)."""
        if not 1 <= int(n) <= len(self.pool):
            raise SymscaleError.invalid("training set size", n, f"an integer in 1..{len(self.pool)}")
        return self.pool[: int(n)]


def make_splits(n_total: int, n_val: int, seed: int = 0, groups=None) -> Splits:
    """Split `n_total` structures into `n_val` validation ones and a nested training pool (seeded).

    `groups` ([n_total] molecule ids, any hashable numbers) keeps each molecule on one side: the validation
    set is then whole molecules, at least `n_val` structures (module docstring)."""
    if n_total < 2:
        raise SymscaleError.invalid("dataset size", n_total, "at least 2 structures")
    if not 1 <= n_val < n_total:
        raise SymscaleError.invalid("validation set size", n_val, f"an integer in 1..{n_total - 1}")
    rng = np.random.default_rng(seed)
    if groups is None:
        perm = rng.permutation(n_total).astype(np.int64)
        return Splits(val=np.sort(perm[:n_val]), pool=perm[n_val:], seed=int(seed))
    groups = np.asarray(groups)
    if groups.shape != (n_total,):
        raise ValueError(f"groups: got shape {groups.shape}, expected ({n_total},)")
    _, group = np.unique(groups, return_inverse=True)  # [n_total] group number of each structure
    order = rng.permutation(int(group.max()) + 1)  # molecules in validation-first order
    sizes = np.bincount(group)[order]
    n_groups = int(np.searchsorted(np.cumsum(sizes), n_val)) + 1  # fewest whole molecules with >= n_val
    in_val = np.isin(group, order[:n_groups])
    if in_val.all():
        raise SymscaleError.invalid("validation set size", n_val, "fewer structures than whole molecules leave")
    val = np.flatnonzero(in_val).astype(np.int64)
    rest = np.flatnonzero(~in_val).astype(np.int64)
    return Splits(val=val, pool=rest[rng.permutation(len(rest))], seed=int(seed), by_molecule=True)


def molecule_groups(dataset, max_structures: int | None = None) -> np.ndarray | None:
    """[n] molecule id of each structure when every row records one (`info["mol"]`, the built-in set), with
    the file folded in so that ids of several files stay apart; None otherwise.

    A reader's `Dataset` answers from its index at any size (no row is read). Other datasets (packed, lists)
    are read row by row; `max_structures` caps that (None: no cap), with a warning when it is passed."""
    n = len(dataset)
    indexed = indexed_dataset(dataset)
    if indexed is not None:
        return indexed.index.molecule_groups(indexed.raw_rows())
    # a reader's row metadata is about twice as fast as building (and checking) each structure
    metadata = getattr(dataset, "metadata", lambda i: getattr(dataset[i], "info", {}))
    if max_structures is not None and n > max_structures:
        log.warning("molecule ids not read: %d structures is more than %d to read row by row", n, max_structures)
        return None
    if "mol" not in metadata(0):
        return None
    locate = getattr(dataset, "locate", None)
    files: dict = {}
    ids = np.empty((n, 2), dtype=np.int64)  # (file number, molecule id in that file)
    for i in range(n):
        mol = metadata(i).get("mol")
        if mol is None:
            return None
        ids[i] = files.setdefault(locate(i)[0] if locate else None, len(files)), int(mol)
    _, groups = np.unique(ids, axis=0, return_inverse=True)
    return groups.reshape(-1).astype(np.int64)


class ConcatDataset:
    """Two datasets as one: indices 0..len(first)-1 are `first`'s, the rest `second`'s (training data and
    separate validation data handed on as one dataset, as the loop, packing and loader workers expect)."""

    def __init__(self, first, second):
        self.first, self.second = first, second
        self.n_first = len(first)
        self.description = (
            f"{getattr(first, 'description', len(first))}; validation: {getattr(second, 'description', len(second))}"
        )

    def __len__(self) -> int:
        return self.n_first + len(self.second)

    def __getitem__(self, i: int):
        i = int(i)
        if i < 0:
            i += len(self)
        return self.first[i] if i < self.n_first else self.second[i - self.n_first]

    def metadata(self, i: int) -> dict:
        i = int(i)
        part, j = (self.first, i) if i < self.n_first else (self.second, i - self.n_first)
        return part.metadata(j) if hasattr(part, "metadata") else dict(getattr(part[j], "info", {}))


@dataclass(frozen=True)
class ValidationSplit:
    """The dataset a run indexes, its splits, and how the validation set was drawn."""

    dataset: Any  # the training data, or a ConcatDataset(training, validation) with separate validation data
    splits: Splits
    how: str  # "by molecule" | "by structure" | "separate data"


_warned_no_molecules: set = set()


def validation_split(dataset, n_val: int, seed: int = 0, val_dataset=None) -> ValidationSplit:
    """The validation set and the nested training pool of a run.

    Without `val_dataset`, `n_val` structures are carved out of `dataset`: whole molecules where every row
    records one (from the index, at any size), else single structures, with a warning (once per dataset) that
    molecules may then sit on both sides. With `val_dataset` (e.g. OMol25's own validation split), the training
    pool is all of `dataset` in a seeded order and the validation set is a seeded sample of `n_val` structures
    of `val_dataset` (all of it when it has fewer), indexed after the training data in a `ConcatDataset`."""
    n_total = len(dataset)
    if val_dataset is not None:
        if n_total < 1:
            raise SymscaleError.invalid("dataset size", n_total, "at least 1 structure")
        rng = np.random.default_rng(seed)
        pool = rng.permutation(n_total).astype(np.int64)
        n_v = len(val_dataset)
        val = np.arange(n_v) if n_val >= n_v else np.sort(rng.choice(n_v, size=int(n_val), replace=False))
        splits = Splits(val=val.astype(np.int64) + n_total, pool=pool, seed=int(seed))
        return ValidationSplit(ConcatDataset(dataset, val_dataset), splits, "separate data")
    groups = molecule_groups(dataset)
    if groups is None:
        key = tuple(str(f) for f in getattr(dataset, "files", ())) or id(dataset)
        if key not in _warned_no_molecules:
            _warned_no_molecules.add(key)
            log.warning(
                "validation set drawn by structure: the rows of %s record no molecule ids (data['mol']), so "
                "conformers of one molecule may be on both sides of the split",
                getattr(dataset, "description", "the dataset"),
            )
    splits = make_splits(n_total, n_val, seed, groups=groups)
    return ValidationSplit(dataset, splits, "by molecule" if splits.by_molecule else "by structure")
