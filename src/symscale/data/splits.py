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
`molecule_groups(dataset)` finds the groups where the rows carry them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from symscale.errors import SymscaleError


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


def molecule_groups(dataset, max_structures: int = 200_000) -> np.ndarray | None:
    """[n] molecule id of each structure when every row records one (`info["mol"]`, the built-in set), with
    the file folded in so that ids of several files stay apart; None otherwise, or for datasets larger than
    `max_structures` (reading every row just for the ids would be too slow there)."""
    n = len(dataset)
    # a reader's row metadata is about twice as fast as building (and checking) each structure
    metadata = getattr(dataset, "metadata", lambda i: getattr(dataset[i], "info", {}))
    if n > max_structures or "mol" not in metadata(0):
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
