"""Short classical molecular dynamics for off-equilibrium snapshots: MMFF94 (UFF fallback) with a numpy
BAOAB Langevin integrator (Leimkuhler and Matthews, 2013).

Units: positions Angstrom, time fs, masses amu, energies kcal/mol (RDKit force fields), velocities Angstrom/fs.
(kcal/mol/Angstrom)/amu = 4.184e-4 Angstrom/fs^2.

RDKit 2026.9 trap (DATA_NOTES.md): a force field reused after its atoms moved returns wrong gradients, so
every evaluation sets the conformer positions and calls `ff.Initialize()` before `CalcGrad()`.
No torch here: this module runs in the generation worker processes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ACCEL = 4.184e-4  # (kcal/mol/Angstrom)/amu in Angstrom/fs^2
KB = 0.0019872043  # kcal/mol/K


class ForceFieldModel:
    """MMFF94 energy and gradient of one conformer of an RDKit molecule (UFF when MMFF lacks parameters)."""

    def __init__(self, mol, conf_id: int = 0):
        from rdkit.Chem import rdForceFieldHelpers as ffh

        self.mol = mol
        self.conf = mol.GetConformer(conf_id)
        props = ffh.MMFFGetMoleculeProperties(mol) if ffh.MMFFHasAllMoleculeParams(mol) else None
        if props is not None:
            self.ff = ffh.MMFFGetMoleculeForceField(mol, props, confId=conf_id)
            self.name = "MMFF94"
        else:
            self.ff = ffh.UFFGetMoleculeForceField(mol, confId=conf_id)
            self.name = "UFF"
        if self.ff is None:
            raise ValueError("no force field for this molecule")
        self.masses = np.array([a.GetMass() for a in mol.GetAtoms()], dtype=np.float64)  # [n] amu

    def _set(self, x: np.ndarray) -> None:
        self.conf.SetPositions(np.ascontiguousarray(x, dtype=np.float64))
        self.ff.Initialize()  # re-initialise after every move (RDKit 2026.9 trap)

    def gradient(self, x: np.ndarray) -> np.ndarray:
        """dE/dx in kcal/mol/Angstrom, [n, 3]."""
        self._set(x)
        return np.asarray(self.ff.CalcGrad(), dtype=np.float64).reshape(-1, 3)

    def energy(self, x: np.ndarray) -> float:
        """Potential energy in kcal/mol."""
        self._set(x)
        return float(self.ff.CalcEnergy())


@dataclass
class LangevinState:
    x: np.ndarray  # [n, 3] Angstrom
    v: np.ndarray  # [n, 3] Angstrom/fs
    a: np.ndarray  # [n, 3] Angstrom/fs^2


def maxwell_boltzmann(masses: np.ndarray, temperature_k: float, rng: np.random.Generator) -> np.ndarray:
    """Velocities (Angstrom/fs) at `temperature_k` with zero total momentum."""
    sigma = np.sqrt(KB * temperature_k * ACCEL / masses)[:, None]  # [n, 1]
    v = rng.normal(size=(len(masses), 3)) * sigma
    return v - (masses[:, None] * v).sum(0) / masses.sum()


def kinetic_energy(masses: np.ndarray, v: np.ndarray) -> float:
    """Kinetic energy in kcal/mol."""
    return float(0.5 * (masses[:, None] * v**2).sum() / ACCEL)


class BAOAB:
    """Langevin dynamics, BAOAB splitting; `friction` in 1/fs (0 gives velocity Verlet, NVE)."""

    def __init__(self, model: ForceFieldModel, dt_fs: float, temperature_k: float, friction: float):
        self.model, self.dt = model, float(dt_fs)
        m = model.masses[:, None]  # [n, 1]
        self.inv_m = ACCEL / m  # converts kcal/mol/Angstrom to Angstrom/fs^2
        self.c1 = float(np.exp(-friction * dt_fs))
        self.c2 = np.sqrt((1.0 - self.c1**2) * KB * temperature_k * ACCEL / m)  # [n, 1] Angstrom/fs

    def start(self, x: np.ndarray, v: np.ndarray) -> LangevinState:
        return LangevinState(x.copy(), v.copy(), -self.model.gradient(x) * self.inv_m)

    def step(self, s: LangevinState, rng: np.random.Generator) -> LangevinState:
        h = 0.5 * self.dt
        v = s.v + h * s.a  # B
        x = s.x + h * v  # A
        if self.c1 < 1.0:
            v = self.c1 * v + self.c2 * rng.normal(size=v.shape)  # O
        x = x + h * v  # A
        a = -self.model.gradient(x) * self.inv_m
        return LangevinState(x, v + h * a, a)  # B
