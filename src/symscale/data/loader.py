"""Deterministic batches of molecular graphs for training and evaluation.

`BatchLoader(dataset, indices, batch_size)` yields `GraphBatch`es of `indices` in the given order (the
caller shuffles, e.g. with a seeded permutation per epoch); the last batch may be smaller. `start_batch`
skips ahead without reading the skipped structures, so a resumed run sees exactly the batches it would have
seen. A `PackedDataset` with stored neighbour lists (`pack(..., graph=...)`) batches by numpy gathers alone.
With `prefetch > 0` a background thread collates up to that many batches ahead; the order and content are
unchanged (one producer, a FIFO queue). With `workers > 0`, that many processes read and collate batches in
order (`prefetch` batches ahead per worker, at least 2): the way to keep a GPU fed from a dataset too large to
pack, where each batch is read from disk and its neighbours searched. Spawned processes take seconds to start,
so a run starts one `LoaderWorkers` and hands it to the loader of every pass (`pool=`); a loader given only
`workers` starts its own for its one pass."""

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
    """Batches of `dataset[indices]`, in order; `len()` is the number of batches. `pool`: running workers
    (`LoaderWorkers` of the same dataset, cutoff, neighbours and dtype) to collate in, instead of `workers`."""

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
        pool: LoaderWorkers | None = None,
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
        self.pool = pool

    def __len__(self) -> int:
        return -(-len(self.indices) // self.batch_size)

    def batch(self, b: int) -> GraphBatch:
        """Batch number `b` (0-based)."""
        idx = self.indices[b * self.batch_size : (b + 1) * self.batch_size]
        return collate_indices(self.dataset, idx, self.cutoff, self.max_neighbors, self.dtype)

    def __iter__(self) -> Iterator[GraphBatch]:
        if (self.workers > 0 or self.pool is not None) and self.start_batch < len(self):
            yield from self._from_workers()
            return
        if self.prefetch <= 0:
            for b in range(self.start_batch, len(self)):
                yield self.batch(b)
            return
        yield from self._prefetched()

    def _from_workers(self) -> Iterator[GraphBatch]:
        if self.pool is not None:
            yield from self.pool.batches(self.indices, self.batch_size, self.start_batch)
            return
        with LoaderWorkers(
            self.dataset, self.workers, cutoff=self.cutoff, max_neighbors=self.max_neighbors, dtype=self.dtype,
            prefetch=self.prefetch,
        ) as pool:  # fmt: skip
            yield from pool.batches(self.indices, self.batch_size, self.start_batch)

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


class LoaderWorkers:
    """Worker processes that read and collate batches of one dataset, started once and reused for every pass.

    Each worker is a spawned process (not forked: a forked child would inherit the parent's open LMDB
    environments, which LMDB forbids reusing, and its OpenMP state) that receives the dataset pickled (a
    reader's `Dataset` reopens its cached index there, memory-mapped, and opens its LMDB environments on first
    read) and then batch numbers to collate. Batch k of a pass goes to worker k mod n and each worker answers
    in the order it was asked, so batches arrive in the caller's order, the same as without workers.
    `prefetch` batches per worker (at least 2) are in flight ahead of the consumer.
    """

    def __init__(
        self,
        dataset,
        workers: int,
        *,
        cutoff: float = DEFAULT_CUTOFF,
        max_neighbors: int = DEFAULT_MAX_NEIGHBORS,
        dtype: torch.dtype = torch.float32,
        prefetch: int = 2,
    ):
        if workers < 1:
            raise SymscaleError.invalid("loader workers", workers, "an integer >= 1")
        import torch.multiprocessing as tmp

        if tmp.current_process().daemon:
            raise SymscaleError.invalid(
                "runtime.loader_workers", workers, "0 in a daemonic process (a local study worker cannot start them)"
            )
        ctx = tmp.get_context("spawn")
        self.depth = max(int(prefetch), 2)
        self._tasks = [ctx.Queue() for _ in range(workers)]
        self._results = [ctx.Queue() for _ in range(workers)]
        self._procs = [
            ctx.Process(target=_work, args=(dataset, cutoff, max_neighbors, dtype, t, r), daemon=True)
            for t, r in zip(self._tasks, self._results)
        ]
        for p in self._procs:
            p.start()
        self._outstanding = [0] * workers  # batches asked of each worker and not yet collected
        self._busy = False

    @property
    def pids(self) -> list[int]:
        return [int(p.pid) for p in self._procs]

    def batches(self, indices, batch_size: int, start_batch: int = 0) -> Iterator[GraphBatch]:
        """Batches `start_batch, ...` of `indices` cut into `batch_size` structures, in order."""
        if self._busy:
            raise RuntimeError("LoaderWorkers.batches: one pass at a time")
        indices = np.asarray(indices, dtype=np.int64)
        n_batches, n = -(-len(indices) // batch_size), len(self._procs)
        ahead = start_batch

        def ask(b: int) -> None:
            w = (b - start_batch) % n
            self._tasks[w].put((b, indices[b * batch_size : (b + 1) * batch_size]))
            self._outstanding[w] += 1

        self._busy = True
        try:
            while ahead < min(n_batches, start_batch + n * self.depth):
                ask(ahead)
                ahead += 1
            for b in range(start_batch, n_batches):
                got, batch = self._collect((b - start_batch) % n)
                assert got == b, f"loader worker answered batch {got} for batch {b}"
                if ahead < n_batches:
                    ask(ahead)
                    ahead += 1
                yield batch
        finally:
            for w in range(n):  # a pass left early: collect what was asked so that the next pass starts clean
                while self._outstanding[w]:
                    self._collect(w, raise_errors=False)
            self._busy = False

    def _collect(self, w: int, raise_errors: bool = True):
        while True:
            try:
                b, item = self._results[w].get(timeout=5.0)
                break
            except queue.Empty:
                if not self._procs[w].is_alive():
                    self._outstanding[w] = 0
                    raise SymscaleError(
                        f"loader worker {w} (pid {self._procs[w].pid}) died with exit code {self._procs[w].exitcode}"
                    ) from None
        self._outstanding[w] -= 1
        if isinstance(item, _WorkerError) and raise_errors:
            raise item.error()
        return b, item

    def close(self) -> None:
        """Stop the workers (idempotent)."""
        for t, p in zip(self._tasks, self._procs):
            if p.is_alive():
                t.put(None)
        for p in self._procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()

    def __enter__(self) -> LoaderWorkers:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _WorkerError:
    """An exception raised in a worker, carried back as text (it may not pickle) and raised by the consumer."""

    def __init__(self, err: BaseException):
        import traceback

        self.is_user_error = isinstance(err, SymscaleError)
        self.message = str(err) if self.is_user_error else "".join(traceback.format_exception(err)).strip()

    def error(self) -> Exception:
        if self.is_user_error:
            return SymscaleError(self.message)
        return RuntimeError(f"loader worker failed:\n{self.message}")


def _work(dataset, cutoff: float, max_neighbors: int, dtype: torch.dtype, tasks, results) -> None:
    """A worker's loop: collate the batches asked for until told to stop (None)."""
    torch.set_num_threads(1)
    while (task := tasks.get()) is not None:
        b, idx = task
        try:
            results.put((b, collate_indices(dataset, idx, cutoff, max_neighbors, dtype)))
        except Exception as err:  # carried to the consumer, which raises it
            results.put((b, _WorkerError(err)))
