"""A dataset packed once into contiguous numpy arrays in RAM (for training), saved and loaded as `.npz`.

500k structures of 20 atoms take about 250 MB in float32 (DATA_NOTES.md, section 4). `PackedDataset` follows
the `Dataset` protocol (`len`, `[i] -> Structure`, `.description`). Positions, energies and forces are kept
in float64 so that packing never changes a label.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from symscale.data.graph import Structure
from symscale.errors import SymscaleError

log = logging.getLogger(__name__)

_FIELDS = ("numbers", "positions", "forces", "energy", "charge", "spin", "offsets")


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

    def save(self, path: str | os.PathLike) -> Path:
        """Write an uncompressed `.npz` (loads in about a second per GB)."""
        path = Path(path)
        arrays = {k: getattr(self, k) for k in _FIELDS}
        np.savez(path, description=np.array(self.description), **arrays)
        return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")

    @classmethod
    def load(cls, path: str | os.PathLike) -> PackedDataset:
        path = Path(path)
        if not path.exists():
            raise SymscaleError(f"cannot read {path}: no such file")
        try:
            with np.load(path, allow_pickle=False) as z:
                return cls(**{k: z[k] for k in _FIELDS}, description=str(z["description"]))
        except (KeyError, ValueError, OSError) as err:
            raise SymscaleError(f"cannot read {path}: not a packed symscale dataset ({err})") from None


def pack(dataset, indices=None, *, description: str | None = None) -> PackedDataset:
    """Read structures `indices` (default: all, in order) of any dataset into a `PackedDataset`."""
    idx = np.arange(len(dataset)) if indices is None else np.asarray(indices, dtype=np.int64)
    if len(idx) == 0:
        raise SymscaleError("empty dataset: nothing to pack")
    structures = [dataset[int(i)] for i in idx]
    counts = np.array([len(s) for s in structures], dtype=np.int64)
    if any(s.energy is None or s.forces is None for s in structures):
        raise SymscaleError("cannot pack structures without energy and forces")
    base = getattr(dataset, "description", "dataset")
    return PackedDataset(
        numbers=np.concatenate([s.numbers for s in structures]).astype(np.int16),
        positions=np.concatenate([np.asarray(s.positions, np.float64) for s in structures]),
        forces=np.concatenate([np.asarray(s.forces, np.float64) for s in structures]),
        energy=np.array([s.energy for s in structures], dtype=np.float64),
        charge=np.array([s.charge for s in structures], dtype=np.int32),
        spin=np.array([s.spin for s in structures], dtype=np.int32),
        offsets=np.concatenate([[0], np.cumsum(counts)]),
        description=description or f"packed {len(idx)} of {base}",
    )
