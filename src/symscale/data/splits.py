"""Splits for the data axis of a scaling study: a fixed validation set and nested training prefixes.

One seeded permutation of all structure indices: its first `n_val` entries are the validation set, the rest,
in permutation order, is the training pool. `train_prefix(n)` is the first n entries of the pool, so a
smaller training set is always contained in any larger one (nested prefixes), and the validation set never
changes with n.
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

    @property
    def n_train_max(self) -> int:
        return len(self.pool)

    def train_prefix(self, n: int) -> np.ndarray:
        """The first `n` training indices (nested: train_prefix(m) starts with train_prefix(n) for m >= n)."""
        if not 1 <= int(n) <= len(self.pool):
            raise SymscaleError.invalid("training set size", n, f"an integer in 1..{len(self.pool)}")
        return self.pool[: int(n)]


def make_splits(n_total: int, n_val: int, seed: int = 0) -> Splits:
    """Split `n_total` structures into `n_val` validation ones and a nested training pool (seeded)."""
    if n_total < 2:
        raise SymscaleError.invalid("dataset size", n_total, "at least 2 structures")
    if not 1 <= n_val < n_total:
        raise SymscaleError.invalid("validation set size", n_val, f"an integer in 1..{n_total - 1}")
    perm = np.random.default_rng(seed).permutation(n_total).astype(np.int64)
    return Splits(val=np.sort(perm[:n_val]), pool=perm[n_val:], seed=int(seed))
