"""Dataset statistics on a bounded sample, saved beside a dataset or run as JSON.

- `element_energies` (eV): per-element energy references fitted by least squares on composition,
  E_s ~ sum_Z count_s(Z) * e_Z (no intercept); models learn the residual of total energies.
- `force_rms` (eV/Angstrom): sqrt(mean over atoms and components of F^2); the study normalises forces by it.
- `mean_neighbors`: mean number of incoming edges per atom in `radius_graph(cutoff, max_neighbors)`.
- `elements`: sorted atomic numbers seen; `atoms_per_structure`: mean atoms per structure.

For a reader's dataset, the dataset index (`symscale.data.index`) supplies what needs no labels: the exact
mean atom count over all the given structures, and the elements they contain; the sample is topped up with a
few structures of each element it missed, so every element of the training data gets a reference.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from symscale.data.graph import DEFAULT_CUTOFF, DEFAULT_MAX_NEIGHBORS, radius_graph
from symscale.errors import SymscaleError


@dataclass(frozen=True)
class DatasetStats:
    element_energies: dict[int, float]  # eV per atom of each element
    force_rms: float  # eV/Angstrom
    mean_neighbors: float
    elements: tuple[int, ...]
    atoms_per_structure: float
    n_sampled: int
    cutoff: float = DEFAULT_CUTOFF
    max_neighbors: int = DEFAULT_MAX_NEIGHBORS
    residual_energy_rms: float = 0.0  # eV per structure, after subtracting the references

    def to_dict(self) -> dict:
        d = asdict(self)
        d["element_energies"] = {str(k): float(v) for k, v in self.element_energies.items()}
        d["elements"] = list(self.elements)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> DatasetStats:
        d = dict(d)
        d["element_energies"] = {int(k): float(v) for k, v in d["element_energies"].items()}
        d["elements"] = tuple(int(z) for z in d["elements"])
        return cls(**d)

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> DatasetStats:
        path = Path(path)
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except FileNotFoundError:
            raise SymscaleError(f"cannot read {path}: no such file") from None
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise SymscaleError(f"cannot read {path}: not a symscale statistics file ({err})") from None


def sample_indices(indices, max_samples: int, seed: int = 0) -> np.ndarray:
    """At most `max_samples` of `indices`, a seeded sample in sorted order (all of them when fewer)."""
    idx = np.asarray(indices, dtype=np.int64)
    if len(idx) <= max_samples:
        return idx
    return np.sort(np.random.default_rng(seed).choice(idx, size=max_samples, replace=False))


def fit_element_energies(numbers: list[np.ndarray], energies: np.ndarray) -> tuple[dict[int, float], float]:
    """Least-squares per-element energies (eV) from compositions; returns them and the residual RMS (eV)."""
    elements = sorted({int(z) for n in numbers for z in np.unique(n)})
    col = {z: k for k, z in enumerate(elements)}
    counts = np.zeros((len(numbers), len(elements)))  # [S, n_elements]
    for s, n in enumerate(numbers):
        z, c = np.unique(n, return_counts=True)
        counts[s, [col[int(a)] for a in z]] = c
    coef, *_ = np.linalg.lstsq(counts, energies, rcond=None)
    residual = energies - counts @ coef
    return {z: float(coef[col[z]]) for z in elements}, float(np.sqrt(np.mean(residual**2)))


def compute_stats(
    dataset,
    indices=None,
    *,
    max_samples: int = 5000,
    cutoff: float = DEFAULT_CUTOFF,
    max_neighbors: int = DEFAULT_MAX_NEIGHBORS,
    seed: int = 0,
) -> DatasetStats:
    """Statistics of `dataset[indices]` (default all) on a seeded sample of at most `max_samples` structures."""
    every = np.arange(len(dataset)) if indices is None else np.asarray(indices, dtype=np.int64)
    idx = sample_indices(every, max_samples, seed)
    if len(idx) == 0:
        raise SymscaleError("empty dataset: no structures to compute statistics on")
    indexed = _indexed(dataset, every)
    if indexed is not None:
        idx = _cover_elements(indexed, every, idx)
    structures = [dataset[int(i)] for i in idx]
    numbers = [np.asarray(s.numbers, dtype=np.int64) for s in structures]
    energies = np.array([s.energy for s in structures], dtype=np.float64)
    refs, resid = fit_element_energies(numbers, energies)
    forces = np.concatenate([np.asarray(s.forces, np.float64).reshape(-1, 3) for s in structures])
    return DatasetStats(
        element_energies=refs,
        force_rms=float(np.sqrt(np.mean(forces**2))),
        mean_neighbors=_mean_neighbors(structures, cutoff, max_neighbors),
        elements=tuple(sorted(refs)),
        atoms_per_structure=(
            float(np.mean([len(n) for n in numbers]))
            if indexed is None
            else indexed.index.mean_atoms(indexed.raw_rows(every))
        ),
        n_sampled=len(idx),
        cutoff=float(cutoff),
        max_neighbors=int(max_neighbors),
        residual_energy_rms=resid,
    )


def _indexed(dataset, indices: np.ndarray):
    """The reader's dataset (with an index) that `indices` of `dataset` refer to: `dataset` itself, or the
    training part of a ConcatDataset with separate validation data; None for other datasets (packed, lists)."""
    if hasattr(dataset, "n_first") and (len(indices) == 0 or int(indices.max()) < dataset.n_first):
        dataset = dataset.first
    return dataset if hasattr(dataset, "raw_rows") else None


def _cover_elements(reader, every: np.ndarray, sample: np.ndarray, per_element: int = 8) -> np.ndarray:
    """The sample, plus up to `per_element` structures of `every` for each element that `every` contains and the
    sample does not, so that every element of the data gets an energy reference (found in the index)."""
    index, rows = reader.index, reader.raw_rows(every)
    sampled, _ = index.element_counts(reader.raw_rows(sample))
    found = index.rows_containing(rows, sorted(index.elements() - set(sampled)), per_element)
    extra = [every[positions] for positions in found.values() if len(positions)]
    return np.unique(np.concatenate([sample, *extra])) if extra else sample


def _mean_neighbors(structures, cutoff: float, max_neighbors: int, chunk: int = 256) -> float:
    edges, atoms = 0, 0
    for a in range(0, len(structures), chunk):
        part = structures[a : a + chunk]
        pos = torch.from_numpy(np.concatenate([np.asarray(s.positions, np.float64) for s in part]))
        batch = torch.repeat_interleave(torch.arange(len(part)), torch.tensor([len(s) for s in part]))
        edges += radius_graph(pos, batch, cutoff, max_neighbors).shape[1]
        atoms += len(pos)
    return edges / atoms
