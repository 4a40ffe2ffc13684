"""One molecule of the built-in dataset, from SMILES to GFN2-xTB-labelled snapshots (recipe D, DATA_NOTES.md).

SMILES -> ETKDGv3 conformers -> MMFF94 Langevin MD (BAOAB, dt 0.5 fs, friction 0.01/fs, T ~ U(300, 1200) K,
100 warm-up steps, then snapshots 50 steps apart) -> geometric filters -> tblite GFN2-xTB single point
(energy eV, forces eV/Angstrom) -> force filter.

Filters: no two atoms closer than 0.5 Angstrom; the covalent bond graph (d < 1.25 (r_i + r_j)) keeps the
parent's number of connected components (a trajectory that fragments is stopped); after the SCF, no force
component above 50 eV/Angstrom; SCF failures (`TBLiteRuntimeError`) are counted and skipped.

Everything random is seeded from (seed, molecule index) and tblite is deterministic, so a molecule's
snapshots do not depend on which worker made them. No torch here (workers start fast).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from symscale.data.dynamics import BAOAB, ForceFieldModel, maxwell_boltzmann

MIN_CONTACT = 0.5  # Angstrom
BOND_SCALE = 1.25
MAX_FORCE = 50.0  # eV/Angstrom, per component
N_CONFORMERS = 2
SNAPSHOTS_PER_CONFORMER = 2
WARMUP_STEPS = 100
SNAPSHOT_EVERY = 50
DT_FS = 0.5
FRICTION = 0.01  # 1/fs
T_RANGE = (300.0, 1200.0)  # K
SNAPSHOTS_PER_MOLECULE = N_CONFORMERS * SNAPSHOTS_PER_CONFORMER


@dataclass
class Snapshot:
    numbers: np.ndarray  # [n] int
    positions: np.ndarray  # [n, 3] Angstrom
    energy: float  # eV
    forces: np.ndarray  # [n, 3] eV/Angstrom
    temperature_k: float
    conformer: int


@dataclass
class MoleculeResult:
    index: int
    smiles: str
    source: str
    snapshots: list[Snapshot] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)  # rejections by reason


def gfn2_single_point(numbers: np.ndarray, positions: np.ndarray) -> tuple[float, np.ndarray]:
    """GFN2-xTB energy (eV) and forces (eV/Angstrom) from a fresh tblite calculator (verbosity 0)."""
    from ase.units import Bohr, Hartree
    from tblite.interface import Calculator

    calc = Calculator("GFN2-xTB", np.asarray(numbers, dtype=np.int32), np.asarray(positions) / Bohr)
    calc.set("verbosity", 0)
    res = calc.singlepoint()
    energy = float(res.get("energy")) * Hartree
    forces = -np.asarray(res.get("gradient")).reshape(-1, 3) * (Hartree / Bohr)
    return energy, forces


def n_components(numbers: np.ndarray, positions: np.ndarray) -> int:
    """Connected components of the covalent bond graph d_ij < 1.25 (r_cov,i + r_cov,j)."""
    from ase.data import covalent_radii
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components

    r = covalent_radii[numbers]
    d = np.linalg.norm(positions[:, None] - positions[None], axis=-1)  # [n, n]
    return int(connected_components(csr_matrix(d < BOND_SCALE * (r[:, None] + r[None])), directed=False)[0])


def min_distance(positions: np.ndarray) -> float:
    d = np.linalg.norm(positions[:, None] - positions[None], axis=-1)  # [n, n]
    d[np.diag_indices(len(d))] = np.inf
    return float(d.min())


def embed(smiles: str, rng: np.random.Generator):
    """RDKit molecule with explicit H and up to N_CONFORMERS ETKDGv3 conformers (None on failure)."""
    from rdkit import Chem, RDLogger
    from rdkit.Chem import rdDistGeom

    RDLogger.DisableLog("rdApp.*")
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        return None
    mol = Chem.AddHs(mol)
    params = rdDistGeom.ETKDGv3()
    params.randomSeed = int(rng.integers(1, 2**31 - 1))
    params.maxIterations = 200
    if len(rdDistGeom.EmbedMultipleConfs(mol, N_CONFORMERS, params)) == 0:
        return None
    return mol


def label_molecule(job: tuple[int, str, str, int]) -> MoleculeResult:
    """Snapshots of molecule `index` (job = (index, smiles, source, seed)), labelled with GFN2-xTB."""
    index, smiles, source, seed = job
    out = MoleculeResult(index, smiles, source)
    rng = np.random.default_rng([seed, index])
    mol = embed(smiles, rng)
    if mol is None:
        out.counts["embedding failed"] += 1
        return out
    numbers = np.array([a.GetAtomicNum() for a in mol.GetAtoms()], dtype=np.int64)
    for conf in mol.GetConformers():
        for x, temp in _trajectory(mol, conf.GetId(), numbers, rng, out.counts):
            _label(out, numbers, x, temp, conf.GetId())
    return out


def _trajectory(mol, conf_id: int, numbers: np.ndarray, rng: np.random.Generator, counts: Counter):
    """Yield (positions, temperature) snapshots of one MD trajectory that pass the geometric filters."""
    try:
        model = ForceFieldModel(mol, conf_id)
    except ValueError:
        counts["no force field"] += 1
        return
    x0 = mol.GetConformer(conf_id).GetPositions()
    parent = n_components(numbers, x0)
    temp = float(rng.uniform(*T_RANGE))
    integ = BAOAB(model, DT_FS, temp, FRICTION)
    state = integ.start(x0, maxwell_boltzmann(model.masses, temp, rng))
    for k in range(SNAPSHOTS_PER_CONFORMER):
        for _ in range(WARMUP_STEPS if k == 0 else SNAPSHOT_EVERY):
            state = integ.step(state, rng)
        if not np.isfinite(state.x).all() or n_components(numbers, state.x) != parent:
            counts["fragmented"] += 1
            return  # the trajectory broke apart: stop it
        if min_distance(state.x) < MIN_CONTACT:
            counts["close contact"] += 1
            continue
        yield state.x.copy(), temp


def _label(out: MoleculeResult, numbers: np.ndarray, x: np.ndarray, temp: float, conf_id: int) -> None:
    from tblite.exceptions import TBLiteRuntimeError

    try:
        energy, forces = gfn2_single_point(numbers, x)
    except TBLiteRuntimeError:
        out.counts["SCF failed"] += 1
        return
    if not np.isfinite(energy) or not np.isfinite(forces).all() or np.abs(forces).max() > MAX_FORCE:
        out.counts["force above 50 eV/A"] += 1
        return
    out.snapshots.append(Snapshot(numbers, x, energy, forces, temp, conf_id))
