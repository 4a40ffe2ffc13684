"""A tiny synthetic dataset for tests and smoke runs: random small molecules labelled by a Morse potential.

Not chemistry: a smooth, rotation-invariant pair potential with element-dependent parameters, so that
energies and forces are exact, cheap (no xTB needed) and learnable. Energies in eV, forces in eV/Angstrom
(the exact negative gradient of the energy), plus a per-element constant so that the energy reference fit
has something to remove.
"""

from __future__ import annotations

import numpy as np
import torch

from symscale.data.graph import Structure

TOY_ELEMENTS = (1, 6, 7, 8)
# per-element constant energy (eV), loosely the size of GFN2 atomic energies
_ATOM_ENERGY = {1: -10.7, 6: -48.8, 7: -70.9, 8: -102.5}
_RADIUS = {1: 0.35, 6: 0.75, 7: 0.72, 8: 0.68}  # Angstrom, sets the Morse equilibrium distance


def morse_energy(numbers: np.ndarray, positions: torch.Tensor) -> torch.Tensor:
    """Total Morse energy (eV) of one structure, differentiable in `positions` [n, 3]."""
    n = len(numbers)
    zs = [int(a) for a in numbers]
    r0 = torch.tensor([[_RADIUS[a] + _RADIUS[b] for b in zs] for a in zs], dtype=positions.dtype)
    depth = torch.tensor([[0.5 + 0.1 * ((a + b) % 5) for b in zs] for a in zs], dtype=positions.dtype)
    iu = torch.triu_indices(n, n, offset=1)
    d = (positions[iu[0]] - positions[iu[1]]).norm(dim=-1)
    r0, depth = r0[iu[0], iu[1]], depth[iu[0], iu[1]]
    pair = depth * ((1 - torch.exp(-1.5 * (d - r0))) ** 2 - 1)
    ref = sum(_ATOM_ENERGY[int(a)] for a in numbers)
    return pair.sum() + ref


def toy_structures(
    n_structures: int,
    seed: int = 0,
    min_atoms: int = 3,
    max_atoms: int = 12,
    elements: tuple[int, ...] = TOY_ELEMENTS,
) -> list[Structure]:
    """`n_structures` random molecules (min_atoms..max_atoms atoms, no two atoms closer than 0.9 Angstrom)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_structures):
        n = int(rng.integers(min_atoms, max_atoms + 1))
        numbers = rng.choice(np.asarray(elements, dtype=np.int64), size=n)
        pos = _place_atoms(rng, n)
        x = torch.tensor(pos, dtype=torch.float64, requires_grad=True)
        energy = morse_energy(numbers, x)
        (grad,) = torch.autograd.grad(energy, x)
        out.append(
            Structure(
                numbers=numbers,
                positions=pos,
                energy=float(energy.detach()),
                forces=(-grad).numpy(),
                charge=0,
                spin=1,
            )
        )
    return out


def _place_atoms(rng: np.random.Generator, n: int) -> np.ndarray:
    """Grow a connected cluster: each new atom 0.9-1.6 Angstrom from a random earlier one, >= 0.9 from all."""
    pos = [np.zeros(3)]
    while len(pos) < n:
        anchor = pos[int(rng.integers(len(pos)))]
        step = rng.normal(size=3)
        cand = anchor + step / np.linalg.norm(step) * rng.uniform(0.9, 1.6)
        if min(np.linalg.norm(cand - p) for p in pos) >= 0.9:
            pos.append(cand)
    return np.asarray(pos)
