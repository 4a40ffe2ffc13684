"""A dataset packed once into contiguous numpy arrays in RAM (for training), saved and loaded as `.npz`.

500k structures of 20 atoms take about 250 MB in float32 (DATA_NOTES.md, section 4). `PackedDataset` follows
the `Dataset` protocol (`len`, `[i] -> Structure`, `.description`). Positions, energies and forces are kept
in float64 so that packing never changes a label.

Packing can also store each structure's neighbour list (`pack(..., graph=(cutoff, max_neighbors))`): edges are
found once, in float64, with the same `radius_graph` as collation, and `PackedDataset.collate` then builds a
batch with numpy gathers only. The edges are identical, in value and order, to those `collate` would find on
the same structures (the radius graph is sorted by structure, target, then distance), so a run gives the
same batch either way; edge vectors are still recomputed from positions by the models, so gradients flow.

`pack_cached` keeps a packed copy on disk, named by what it was packed from (the source files' names, sizes and
modification times, the structure indices, the graph settings), so that the runs of a study that share data
and a split pack it once: every later run loads the `.npz` (arrays identical to packing again).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from symscale.data.graph import DEFAULT_CUTOFF, DEFAULT_MAX_NEIGHBORS, GraphBatch, Structure, collate, radius_graph
from symscale.errors import SymscaleError

log = logging.getLogger(__name__)

_FIELDS = ("numbers", "positions", "forces", "energy", "charge", "spin", "offsets")
_GRAPH_FIELDS = ("edges", "edge_offsets", "graph")
_GRAPH_CHUNK = 256  # structures per radius_graph call while packing (bounded padded distance tensors)


def _segments(starts: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices of the ranges [starts[k], starts[k] + counts[k]) and, for each, its offset in the output."""
    out_start = np.cumsum(counts) - counts  # where each range begins in the output
    within = np.arange(int(counts.sum()), dtype=np.int64) - np.repeat(out_start, counts)
    return np.repeat(starts, counts) + within, out_start


@dataclass(frozen=True)
class PackedDataset:
    """All structures in flat arrays; structure i owns atoms offsets[i]:offsets[i+1]."""

    numbers: np.ndarray  # [A] int16 atomic numbers
    positions: np.ndarray  # [A, 3] float64, Angstrom
    forces: np.ndarray  # [A, 3] float64, eV/Angstrom
    energy: np.ndarray  # [S] float64, eV
    charge: np.ndarray  # [S] int32
    spin: np.ndarray  # [S] int32, multiplicity
    offsets: np.ndarray  # [S + 1] int64
    description: str = "packed dataset"
    edges: np.ndarray | None = None  # [2, E] int32 (source j, target i), indices local to each structure
    edge_offsets: np.ndarray | None = None  # [S + 1] int64: structure i owns edges edge_offsets[i]:[i+1]
    graph: np.ndarray | None = None  # [2] float64: (cutoff in Angstrom, max_neighbors) the edges were found with

    def __len__(self) -> int:
        return len(self.energy)

    def __getitem__(self, i: int) -> Structure:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"structure index {i} out of range for a dataset of {n}")
        i = int(i) % n
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        return Structure(
            numbers=self.numbers[a:b].astype(np.int64),
            positions=self.positions[a:b],
            energy=float(self.energy[i]),
            forces=self.forces[a:b],
            charge=int(self.charge[i]),
            spin=int(self.spin[i]),
        )

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    @property
    def n_atoms(self) -> np.ndarray:
        """[S] atoms per structure."""
        return np.diff(self.offsets)

    def has_graph(self, cutoff: float, max_neighbors: int) -> bool:
        """Whether stored neighbour lists were found with this cutoff and neighbour cap."""
        return self.graph is not None and (float(self.graph[0]), int(self.graph[1])) == (
            float(cutoff),
            int(max_neighbors),
        )

    def with_graph(self, cutoff: float = DEFAULT_CUTOFF, max_neighbors: int = DEFAULT_MAX_NEIGHBORS) -> PackedDataset:
        """This dataset with every structure's neighbour list stored (computed once, in chunks)."""
        if self.has_graph(cutoff, max_neighbors):
            return self
        n_atoms = self.n_atoms
        pieces, counts = [], np.zeros(len(self), dtype=np.int64)
        for a in range(0, len(self), _GRAPH_CHUNK):
            b = min(a + _GRAPH_CHUNK, len(self))
            lo, hi = int(self.offsets[a]), int(self.offsets[b])
            batch = torch.repeat_interleave(torch.arange(b - a), torch.from_numpy(n_atoms[a:b]))
            edges = radius_graph(torch.from_numpy(self.positions[lo:hi]), batch, cutoff, max_neighbors).numpy()
            owner = batch.numpy()[edges[1]]  # structure (within the chunk) of each edge's target
            counts[a:b] = np.bincount(owner, minlength=b - a)
            pieces.append((edges - (self.offsets[a:b][owner] - lo)).astype(np.int32))  # local atom indices
        return replace(
            self,
            edges=np.concatenate(pieces, axis=1) if pieces else np.zeros((2, 0), np.int32),
            edge_offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
            graph=np.array([float(cutoff), float(max_neighbors)]),
        )

    def collate(
        self,
        indices,
        cutoff: float = DEFAULT_CUTOFF,
        max_neighbors: int = DEFAULT_MAX_NEIGHBORS,
        dtype: torch.dtype = torch.float32,
    ) -> GraphBatch:
        """The `GraphBatch` of structures `indices`, equal to `collate([self[i] for i in indices], ...)`.

        With neighbour lists stored for this cutoff and cap, only numpy gathers run (no distances); otherwise
        the structures are collated the ordinary way."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(idx) == 0:
            raise ValueError("cannot collate an empty list of structures")
        if not self.has_graph(cutoff, max_neighbors):
            return collate([self[int(i)] for i in idx], cutoff, max_neighbors, dtype)
        idx = idx % len(self) if (idx < 0).any() else idx
        n_atoms = self.offsets[idx + 1] - self.offsets[idx]
        atoms, atom_start = _segments(self.offsets[idx], n_atoms)
        n_edges = self.edge_offsets[idx + 1] - self.edge_offsets[idx]
        edge_rows, _ = _segments(self.edge_offsets[idx], n_edges)
        edges = self.edges[:, edge_rows].astype(np.int64) + np.repeat(atom_start, n_edges)  # batch atom indices
        return GraphBatch(
            z=torch.from_numpy(self.numbers[atoms].astype(np.int64)),
            pos=torch.from_numpy(self.positions[atoms]).to(dtype),
            batch=torch.from_numpy(np.repeat(np.arange(len(idx)), n_atoms)),
            edge_index=torch.from_numpy(edges),
            n_atoms=torch.from_numpy(n_atoms),
            charge=torch.from_numpy(self.charge[idx].astype(np.int64)),
            spin=torch.from_numpy(self.spin[idx].astype(np.int64)),
            energy=torch.from_numpy(self.energy[idx]).to(dtype),
            forces=torch.from_numpy(self.forces[atoms]).to(dtype),
        )

    def save(self, path: str | os.PathLike) -> Path:
        """Write an uncompressed `.npz` (loads in about a second per GB), with the neighbour lists if stored."""
        path = Path(path)
        arrays = {k: getattr(self, k) for k in _FIELDS}
        arrays.update({k: getattr(self, k) for k in _GRAPH_FIELDS if getattr(self, k) is not None})
        np.savez(path, description=np.array(self.description), **arrays)
        return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")

    @classmethod
    def load(cls, path: str | os.PathLike) -> PackedDataset:
        path = Path(path)
        if not path.exists():
            raise SymscaleError(f"cannot read {path}: no such file")
        try:
            with np.load(path, allow_pickle=False) as z:
                graph = {k: z[k] for k in _GRAPH_FIELDS if k in z.files}
                return cls(**{k: z[k] for k in _FIELDS}, **graph, description=str(z["description"]))
        except (KeyError, ValueError, OSError) as err:
            raise SymscaleError(f"cannot read {path}: not a packed symscale dataset ({err})") from None


def pack(
    dataset, indices=None, *, description: str | None = None, graph: tuple[float, int] | None = None
) -> PackedDataset:
    """Read structures `indices` (default: all, in order) of any dataset into a `PackedDataset`; with
    `graph=(cutoff, max_neighbors)` also store every structure's neighbour list (`PackedDataset.with_graph`)."""
    idx = np.arange(len(dataset)) if indices is None else np.asarray(indices, dtype=np.int64)
    if len(idx) == 0:
        raise SymscaleError("empty dataset: nothing to pack")
    structures = [dataset[int(i)] for i in idx]
    counts = np.array([len(s) for s in structures], dtype=np.int64)
    if any(s.energy is None or s.forces is None for s in structures):
        raise SymscaleError("cannot pack structures without energy and forces")
    base = getattr(dataset, "description", "dataset")
    packed = PackedDataset(
        numbers=np.concatenate([s.numbers for s in structures]).astype(np.int16),
        positions=np.concatenate([np.asarray(s.positions, np.float64) for s in structures]),
        forces=np.concatenate([np.asarray(s.forces, np.float64) for s in structures]),
        energy=np.array([s.energy for s in structures], dtype=np.float64),
        charge=np.array([s.charge for s in structures], dtype=np.int32),
        spin=np.array([s.spin for s in structures], dtype=np.int32),
        offsets=np.concatenate([[0], np.cumsum(counts)]),
        description=description or f"packed {len(idx)} of {base}",
    )
    return packed if graph is None else packed.with_graph(*graph)


PACK_CACHE_VERSION = 1  # bump when the packed layout or the neighbour search changes


def pack_cache_key(sources: Sequence[str | os.PathLike], indices, graph: tuple[float, int] | None, **reading) -> str:
    """A hex digest naming the packed copy of structures `indices` of the files `sources` (name, size and
    modification time of each), with neighbour lists for `graph` and the reader's options `reading`."""
    files = []
    for src in sources:
        st = Path(src).stat()
        files.append([Path(src).name, st.st_size, st.st_mtime_ns])
    idx = np.ascontiguousarray(np.asarray(indices, dtype=np.int64))
    meta = {"v": PACK_CACHE_VERSION, "files": files, "graph": list(graph) if graph else None, "reading": reading}
    digest = hashlib.sha256(json.dumps(meta, sort_keys=True, default=str).encode())
    digest.update(idx.tobytes())
    return digest.hexdigest()[:32]


def pack_cached(
    dataset, indices, cache_dir: str | os.PathLike, key: str, *, description: str | None = None,
    graph: tuple[float, int] | None = None,
) -> PackedDataset:  # fmt: skip
    """`pack(dataset, indices, ...)`, read from `cache_dir/packed-<key>.npz` when an earlier call packed the
    same (`pack_cache_key`), else packed and written there (atomically: a temporary file, then a rename, so
    parallel runs never read a torn file). A cache that cannot be written is skipped with a warning."""
    path = Path(cache_dir) / f"packed-{key}.npz"
    if path.exists():
        try:
            return PackedDataset.load(path)
        except SymscaleError as err:
            log.warning("ignoring an unreadable packed cache %s: %s", path, err)
    packed = pack(dataset, indices, description=description, graph=graph)
    from symscale.rundir import atomic_path

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, suffix=".tmp.npz") as tmp:  # np.savez keeps a name ending in .npz
            packed.save(tmp)
    except OSError as err:
        log.warning("could not cache the packed data in %s: %s", path.parent, err)
    return packed
