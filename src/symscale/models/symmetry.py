"""Rotations and the measured equivariance error of a model, shared by the tests and the training metrics.

Conventions: a rotation is a 3x3 matrix R acting on column vectors, x' = R x; for row-stored positions
[n_atoms, 3] this is x' = x R^T. `rotate_batch` rotates each structure about its own centroid (so a model
that is only translation invariant sees the same kind of displacement as a pure rotation about the origin).
Energies in eV, forces in eV/Angstrom.
"""

from __future__ import annotations

import contextlib

import torch

from symscale.data.graph import GraphBatch
from symscale.models.base import ForceField


def random_rotations(
    n: int, dtype: torch.dtype = torch.float64, generator: torch.Generator | None = None
) -> torch.Tensor:
    """`n` rotation matrices [n, 3, 3] drawn uniformly (Haar measure) from SO(3), from normalised Gaussian
    quaternions q = (w, x, y, z) (a uniform point on S^3 maps to a uniform rotation)."""
    q = torch.randn(n, 4, dtype=torch.float64, generator=generator)  # [n, 4]
    q = q / q.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    rot = torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
            2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
            2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).view(n, 3, 3)  # fmt: skip
    return rot.to(dtype)


def rotate_batch(batch: GraphBatch, R: torch.Tensor) -> GraphBatch:
    """A copy of `batch` with each structure's positions rotated by its own matrix about its centroid and its
    forces (if any) rotated alike. `R` is [3, 3] (one for all) or [n_structures, 3, 3]; any orthogonal matrix
    works, so reflections (det -1) are allowed. Edges are unchanged (distances are preserved)."""
    R = R.to(dtype=batch.pos.dtype, device=batch.pos.device)
    if R.dim() == 2:
        R = R.expand(batch.num_structures, 3, 3)
    per_atom = R[batch.batch]  # [n_atoms, 3, 3]
    counts = batch.n_atoms.to(batch.pos.dtype)[:, None]  # [n_structures, 1]
    centroid = torch.zeros(batch.num_structures, 3, dtype=batch.pos.dtype, device=batch.pos.device)
    centroid = centroid.index_add(0, batch.batch, batch.pos) / counts  # [n_structures, 3]
    rel = batch.pos - centroid[batch.batch]  # [n_atoms, 3]
    pos = torch.einsum("aij,aj->ai", per_atom, rel) + centroid[batch.batch]  # [n_atoms, 3]
    forces = None if batch.forces is None else torch.einsum("aij,aj->ai", per_atom, batch.forces)
    return batch.replace(pos=pos, forces=forces)


def equivariance_error(model: ForceField, batch: GraphBatch, n_rotations: int = 4, seed: int = 0) -> dict:
    """Measured symmetry error of `model` on `batch` under `n_rotations` random rotations per structure.

    Returns {"energy": mean over structures and rotations of |E(Rx) - E(x)| / n_atoms (eV per atom),
    "forces": mean over atoms and rotations of |F(Rx) - R F(x)| (eV/Angstrom)} as floats. Zero (to rounding)
    for an equivariant model; the study records it as a metric for unconstrained ones. Gradients are off unless
    the model computes conservative forces (which need them)."""
    generator = torch.Generator().manual_seed(int(seed))
    conservative = getattr(model, "force_mode", "direct") == "conservative"
    grad = contextlib.nullcontext() if conservative else torch.no_grad()
    energy_err, force_err = [], []
    with grad:
        ref = model(batch)
        n_atoms = batch.n_atoms.to(ref.energy.dtype)
        for _ in range(n_rotations):
            R = random_rotations(batch.num_structures, generator=generator).to(batch.pos.dtype)
            out = model(rotate_batch(batch, R))
            expected = torch.einsum("aij,aj->ai", R.to(ref.forces.device)[batch.batch], ref.forces)
            energy_err.append(((out.energy - ref.energy).abs() / n_atoms).mean().detach())
            force_err.append((out.forces - expected).norm(dim=-1).mean().detach())
    return {"energy": float(torch.stack(energy_err).mean()), "forces": float(torch.stack(force_err).mean())}
