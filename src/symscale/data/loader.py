"""Deterministic batches of molecular graphs for training and evaluation.

`BatchLoader(dataset, indices, batch_size)` yields `GraphBatch`es of `indices` in the given order (the
caller shuffles, e.g. with a seeded permutation per epoch); the last batch may be smaller. `start_batch`
skips ahead without reading the skipped structures, so a resumed run sees exactly the batches it would have
seen. A `PackedDataset` with stored neighbour lists (`pack(..., graph=...)`) batches by numpy gathers alone.
With `prefetch > 0` a background thread collates up to that many batches ahead; the order and content are
unchanged (one producer, a FIFO queue). With `workers > 0`, that many processes read and collate batches
(torch's DataLoader over batch numbers, in order; `prefetch` batches ahead per worker, at least 2; each worker
is a spawned process, which takes a few seconds to start once per pass over the data): the way to
keep a GPU fed from a dataset too large to pack, where each batch is read from disk and its neighbours searched."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

import numpy as np
import torch

from symscale.data.graph import DEFAULT_CUTOFF, DEFAULT_MAX_NEIGHBORS, GraphBatch, collate
from symscale.errors import SymscaleError

_DONE = object()


def collate_indices(
    dataset,
    indices,
    cutoff: float = DEFAULT_CUTOFF,
    max_neighbors: int = DEFAULT_MAX_NEIGHBORS,
    dtype: torch.dtype = torch.float32,
) -> GraphBatch:
    """The batch of structures `indices` of `dataset`: through the dataset's own `collate` when it has one (a
    `PackedDataset` with stored neighbour lists gathers them instead of searching), else structure by structure."""
    if hasattr(dataset, "collate"):
        return dataset.collate(indices, cutoff, max_neighbors, dtype)
    return collate([dataset[int(i)] for i in indices], cutoff, max_neighbors, dtype)


class BatchLoader:
    """Batches of `dataset[indices]`, in order; `len()` is the number of batches."""

    def __init__(
        self,
        dataset,
        indices=None,
        batch_size: int = 64,
        *,
        cutoff: float = DEFAULT_CUTOFF,
        max_neighbors: int = DEFAULT_MAX_NEIGHBORS,
        dtype: torch.dtype = torch.float32,
        start_batch: int = 0,
        prefetch: int = 0,
        workers: int = 0,
    ):
        if batch_size < 1:
            raise SymscaleError.invalid("batch size", batch_size, "an integer >= 1")
        self.dataset = dataset
        self.indices = np.arange(len(dataset)) if indices is None else np.asarray(indices, dtype=np.int64)
        self.batch_size = int(batch_size)
        self.cutoff, self.max_neighbors, self.dtype = cutoff, max_neighbors, dtype
        if not 0 <= start_batch <= len(self):
            raise SymscaleError.invalid("start batch", start_batch, f"an integer in 0..{len(self)}")
        self.start_batch = int(start_batch)
        self.prefetch = int(prefetch)
        if workers < 0:
            raise SymscaleError.invalid("loader workers", workers, "an integer >= 0")
        self.workers = int(workers)

    def __len__(self) -> int:
        return -(-len(self.indices) // self.batch_size)

    def batch(self, b: int) -> GraphBatch:
        """Batch number `b` (0-based)."""
        idx = self.indices[b * self.batch_size : (b + 1) * self.batch_size]
        return collate_indices(self.dataset, idx, self.cutoff, self.max_neighbors, self.dtype)

    def __iter__(self) -> Iterator[GraphBatch]:
        if self.workers > 0 and self.start_batch < len(self):
            yield from self._from_workers()
            return
        if self.prefetch <= 0:
            for b in range(self.start_batch, len(self)):
                yield self.batch(b)
            return
        yield from self._prefetched()

    def _from_workers(self) -> Iterator[GraphBatch]:
        from torch.utils.data import DataLoader

        batches = _BatchNumbers(self)
        yield from DataLoader(
            batches,
            batch_size=None,  # each item is already a batch
            collate_fn=_as_is,
            num_workers=self.workers,
            prefetch_factor=max(self.prefetch, 2),
            # spawned, not forked: a forked child inherits the parent's open LMDB environments (which LMDB
            # forbids reusing) and its OpenMP state; each worker reopens the files itself
            multiprocessing_context="spawn",
        )

    def _prefetched(self) -> Iterator[GraphBatch]:
        q: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()

        def produce():
            try:
                for b in range(self.start_batch, len(self)):
                    if stop.is_set():
                        return
                    q.put(self.batch(b))
                q.put(_DONE)
            except BaseException as err:  # handed to the consumer, raised there
                q.put(err)

        thread = threading.Thread(target=produce, daemon=True)
        thread.start()
        try:
            while (item := q.get()) is not _DONE:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            while thread.is_alive():  # unblock a producer waiting on a full queue
                try:
                    q.get_nowait()
                except queue.Empty:
                    thread.join(0.01)


class _BatchNumbers:
    """Map-style view of a `BatchLoader` for torch's DataLoader: item k is batch start_batch + k."""

    def __init__(self, loader: BatchLoader):
        self.loader = loader

    def __len__(self) -> int:
        return len(self.loader) - self.loader.start_batch

    def __getitem__(self, k: int) -> GraphBatch:
        return self.loader.batch(self.loader.start_batch + int(k))


def _as_is(batch: GraphBatch) -> GraphBatch:
    return batch
