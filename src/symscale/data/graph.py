"""Molecular graphs: one structure, and a batch of them with edges within a cutoff.

Conventions (used by every model):
- positions in Angstrom, energies in eV, forces in eV/Angstrom;
- `spin` is the spin multiplicity (1 for a singlet), `charge` the total charge, as in OMol25;
- `edge_index[0]` is the source atom j (the neighbour), `edge_index[1]` the target atom i (the centre);
  the edge vector is r_ij = pos[j] - pos[i] = `pos[edge_index[0]] - pos[edge_index[1]]`;
- every atom keeps at most `max_neighbors` incoming edges, its nearest ones (ties broken by index);
- edges never cross structures and contain no self-loops.

Edges are found without gradients (only indices are stored); models recompute edge vectors from positions
so that gradients flow (`edge_vectors`). Collation is deterministic: the same structures in the same order
give the same batch, bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields

import numpy as np
import torch

DEFAULT_CUTOFF = 6.0  # Angstrom, as in the reference study's eSEN
DEFAULT_MAX_NEIGHBORS = 30
# Size of the largest structure (atoms) from which vesin's cell list replaces the padded distance tensor on CPU.
# Measured with benchmarks/bench_neighbors.py (batches of 8 molecule-like clouds at 0.1 atoms/A^3, cutoff 6 A,
# 30 neighbours, 1 thread, medians of 9 repeats, two runs) on a shared 2-core CPU under load (load average
# 5-7, so the numbers are noisy): padded/vesin time ratio 0.2-0.3 at 20 atoms, 0.6-1.0 at 60-100, 0.86-0.90
# at 150, 1.2-1.4 at 200, 1.4-1.9 at 250 and 2.7-3.1 at 350 atoms. The crossover lies between 150 and 200
# atoms; re-measure on a quiet machine (and per device: on GPU the padded search is always used).
VESIN_MIN_ATOMS = 175


@dataclass
class Structure:
    """One labelled structure. `energy` in eV, `forces` in eV/Angstrom; labels may be None when unknown."""

    numbers: np.ndarray  # [n_atoms] int64 atomic numbers
    positions: np.ndarray  # [n_atoms, 3] float64, Angstrom
    energy: float | None = None  # eV
    forces: np.ndarray | None = None  # [n_atoms, 3] float64, eV/Angstrom
    charge: int = 0
    spin: int = 1  # multiplicity
    info: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.numbers)


@dataclass
class GraphBatch:
    """A batch of molecular graphs (tensors on one device)."""

    z: torch.Tensor  # [n_atoms] long, atomic numbers
    pos: torch.Tensor  # [n_atoms, 3] float, Angstrom
    batch: torch.Tensor  # [n_atoms] long, structure index of each atom
    edge_index: torch.Tensor  # [2, n_edges] long, (source j, target i)
    n_atoms: torch.Tensor  # [n_structures] long
    charge: torch.Tensor  # [n_structures] long
    spin: torch.Tensor  # [n_structures] long
    energy: torch.Tensor | None = None  # [n_structures] float, eV
    forces: torch.Tensor | None = None  # [n_atoms, 3] float, eV/Angstrom

    @property
    def num_structures(self) -> int:
        return int(self.n_atoms.shape[0])

    @property
    def num_atoms(self) -> int:
        return int(self.z.shape[0])

    @property
    def num_edges(self) -> int:
        return int(self.edge_index.shape[1])

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> GraphBatch:
        """A copy on `device`, with floating tensors cast to `dtype` (when given)."""
        out = {}
        for f in fields(self):
            t = getattr(self, f.name)
            if t is None:
                out[f.name] = None
            elif t.is_floating_point() and dtype is not None:
                out[f.name] = t.to(device=device, dtype=dtype)
            else:
                out[f.name] = t.to(device=device)
        return GraphBatch(**out)

    def replace(self, **changes: torch.Tensor) -> GraphBatch:
        """A shallow copy with some fields replaced (e.g. rotated positions and forces)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out.update(changes)
        return GraphBatch(**out)


def edge_vectors(pos: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
    """r_ij = pos[j] - pos[i] for each edge (j -> i), differentiable in `pos`. Returns [n_edges, 3]."""
    return pos[edge_index[0]] - pos[edge_index[1]]


def radius_graph(
    pos: torch.Tensor,
    batch: torch.Tensor,
    cutoff: float = DEFAULT_CUTOFF,
    max_neighbors: int = DEFAULT_MAX_NEIGHBORS,
) -> torch.Tensor:
    """Edges (j -> i) with |r_ij| < cutoff within each structure, at most `max_neighbors` per target i.

    Two searches give the same edges in the same order: a padded [n_structures, max_atoms, max_atoms]
    distance tensor (any device), and vesin's cell list per structure (CPU). The padded search costs
    max_atoms^2 per structure, the cell list about n_atoms x neighbours; vesin is used on CPU when the largest structure
    of the batch has at least `VESIN_MIN_ATOMS` atoms (the measured crossover, see there). `batch` must be
    sorted (atoms of one structure contiguous). Returns a [2, n_edges] long tensor on `pos.device`,
    sorted by target, then by distance, then by source index.
    """
    if pos.device.type == "cpu" and batch.numel() and int(torch.bincount(batch).max()) >= VESIN_MIN_ATOMS:
        return radius_graph_vesin(pos, batch, cutoff, max_neighbors)
    return radius_graph_padded(pos, batch, cutoff, max_neighbors)


def radius_graph_padded(
    pos: torch.Tensor,
    batch: torch.Tensor,
    cutoff: float = DEFAULT_CUTOFF,
    max_neighbors: int = DEFAULT_MAX_NEIGHBORS,
) -> torch.Tensor:
    """`radius_graph` on a padded [n_structures, max_atoms, max_atoms] distance tensor (any device)."""
    with torch.no_grad():
        n_struct = int(batch.max().item()) + 1 if batch.numel() else 0
        if n_struct == 0:
            return torch.zeros(2, 0, dtype=torch.long, device=pos.device)
        counts = torch.bincount(batch, minlength=n_struct)
        offsets = torch.cumsum(counts, 0) - counts
        max_n = int(counts.max().item())
        local = torch.arange(batch.numel(), device=pos.device) - offsets[batch]
        padded = pos.new_full((n_struct, max_n, 3), float("inf"))
        padded[batch, local] = pos.detach()
        diff = padded[:, :, None, :] - padded[:, None, :, :]  # [S, i, j, 3]
        dist = diff.pow(2).sum(-1)  # squared distance, [S, i, j]; inf for padding
        eye = torch.eye(max_n, dtype=torch.bool, device=pos.device)
        dist = dist.masked_fill(eye, float("inf"))
        dist = torch.nan_to_num(dist, nan=float("inf"))
        k = min(max_neighbors, max_n)
        # nearest k candidates per target; stable sort keeps ties in index order
        order = torch.sort(dist, dim=-1, stable=True).indices[..., :k]  # [S, i, k]
        d_sel = torch.gather(dist, -1, order)
        keep = d_sel < cutoff * cutoff
        s_idx, i_loc, slot = keep.nonzero(as_tuple=True)
        j_loc = order[s_idx, i_loc, slot]
        target = offsets[s_idx] + i_loc
        source = offsets[s_idx] + j_loc
        return torch.stack([source, target]).long()


def radius_graph_vesin(
    pos: torch.Tensor,
    batch: torch.Tensor,
    cutoff: float = DEFAULT_CUTOFF,
    max_neighbors: int = DEFAULT_MAX_NEIGHBORS,
) -> torch.Tensor:
    """`radius_graph` with vesin's cell list, one structure at a time (CPU positions).

    vesin finds the candidate pairs (with a slightly larger cutoff), grouped by target. The squared distance
    that decides the cutoff, the ranking and the ties is recomputed exactly as `radius_graph_padded` computes
    it, and each target's candidates are ranked in one row of a [n_atoms, max_degree] table: sorted by source,
    then stably by distance (ties in source order), so the two searches return identical edges.
    """
    from vesin import NeighborList

    with torch.no_grad():
        xyz = pos.detach().cpu()  # [n_atoms, 3]
        xyz64 = xyz.double().numpy()  # vesin's candidates in float64 (the 1e-6 margin covers float32 rounding)
        counts = torch.bincount(batch).tolist() if batch.numel() else []
        search = NeighborList(cutoff=cutoff * (1 + 1e-6) + 1e-9, full_list=True, sorted=True)
        targets, sources, lo = [], [], 0
        for n in counts:
            if n >= 2:
                i, j = search.compute(points=xyz64[lo : lo + n], box=np.zeros((3, 3)), periodic=False)
                targets.append(torch.from_numpy(i.astype(np.int64)) + lo)
                sources.append(torch.from_numpy(j.astype(np.int64)) + lo)
            lo += n
        if not targets:
            return torch.zeros(2, 0, dtype=torch.long, device=pos.device)
        target, source = torch.cat(targets), torch.cat(sources)  # [n_pairs], grouped by target
        d2 = (xyz[target] - xyz[source]).pow(2).sum(-1)  # [n_pairs] squared distance, as the padded search
        inside = d2 < cutoff * cutoff
        target, source, d2 = target[inside], source[inside], d2[inside]
        degree = torch.bincount(target, minlength=xyz.shape[0])  # [n_atoms]
        first = torch.cumsum(degree, 0) - degree  # [n_atoms] first pair of each target
        slot = torch.arange(target.numel()) - first[target]  # [n_pairs] position within the target's group
        width = int(degree.max())
        sources_of = torch.full((xyz.shape[0], width), xyz.shape[0], dtype=torch.long)  # [n_atoms, max_degree]
        sources_of[target, slot] = source
        by_source = torch.sort(sources_of, dim=-1).indices  # [n_atoms, max_degree] slots in source order
        table = d2.new_full((xyz.shape[0], width), float("inf"))  # [n_atoms, max_degree] squared distances
        table[target, slot] = d2
        table = torch.gather(table, 1, by_source)
        nearest = torch.sort(table, dim=-1, stable=True).indices[:, :max_neighbors]  # [n_atoms, k]
        order = torch.gather(by_source, 1, nearest)  # [n_atoms, k] slots, nearest first, ties by source
        row, col = (nearest < degree[:, None]).nonzero(as_tuple=True)  # real pairs only, by target then rank
        pair = first[row] + order[row, col]  # [n_edges]
        return torch.stack([source[pair], target[pair]]).to(device=pos.device)


def collate(
    structures: Sequence[Structure],
    cutoff: float = DEFAULT_CUTOFF,
    max_neighbors: int = DEFAULT_MAX_NEIGHBORS,
    dtype: torch.dtype = torch.float32,
) -> GraphBatch:
    """Stack structures into one `GraphBatch` with its edges. Labels are kept when all structures have them."""
    if len(structures) == 0:
        raise ValueError("cannot collate an empty list of structures")
    n_atoms = np.array([len(s) for s in structures], dtype=np.int64)
    z = torch.from_numpy(np.concatenate([np.asarray(s.numbers, dtype=np.int64) for s in structures]))
    pos64 = np.concatenate([np.asarray(s.positions, dtype=np.float64).reshape(-1, 3) for s in structures])
    pos = torch.from_numpy(pos64).to(dtype)
    batch = torch.repeat_interleave(torch.arange(len(structures)), torch.from_numpy(n_atoms))
    has_energy = all(s.energy is not None for s in structures)
    has_forces = all(s.forces is not None for s in structures)
    energy = torch.tensor([float(s.energy) for s in structures], dtype=dtype) if has_energy else None
    forces = (
        torch.from_numpy(np.concatenate([np.asarray(s.forces, dtype=np.float64) for s in structures])).to(dtype)
        if has_forces
        else None
    )
    return GraphBatch(
        z=z,
        pos=pos,
        batch=batch,
        edge_index=radius_graph(torch.from_numpy(pos64), batch, cutoff, max_neighbors),
        n_atoms=torch.from_numpy(n_atoms),
        charge=torch.tensor([int(s.charge) for s in structures], dtype=torch.long),
        spin=torch.tensor([int(s.spin) for s in structures], dtype=torch.long),
        energy=energy,
        forces=forces,
    )
