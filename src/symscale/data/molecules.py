"""Seed molecules for the built-in dataset, read from data files shipped inside installed wheels.

- QM9 (130,831 molecules, H C N O F, 3-29 atoms): SMILES from `qm9pack/data/qm9_part{1,2,3}.csv`.
- drug-like molecules with S, Cl, Br of at most `MAX_DRUG_ATOMS` atoms including H: MOSES' `train.csv.gz`
  (package `molsets`) when installed, otherwise RDKit's shipped SMILES files (NCI first 5K, WEHI PAINS test
  set, a ChEMBL series).

The packages are never imported (qm9pack and moses fail to import here, DATA_NOTES.md pitfalls): their
folders are located with `importlib.util.find_spec`, which does not run them, and the files read by path.
This module imports no torch, so that generation workers start quickly.

Molecule k of a seeded list is drug-like when k % 4 == 3 (25 %), QM9 otherwise; each source is read in a
seeded order that does not depend on how many molecules are asked for, so a longer list extends a shorter one.
"""

from __future__ import annotations

import gzip
import importlib.util
import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from symscale.errors import SymscaleError

log = logging.getLogger(__name__)

MAX_DRUG_ATOMS = 30  # including H
DRUG_EVERY = 4  # molecule k is drug-like when k % DRUG_EVERY == DRUG_EVERY - 1
ALLOWED_ELEMENTS = frozenset({1, 6, 7, 8, 9, 16, 17, 35})  # H C N O F S Cl Br


@dataclass(frozen=True)
class SeedMolecule:
    smiles: str
    source: str  # e.g. "qm9:1234" or "moses:56789"


def package_dir(name: str) -> Path | None:
    """Folder of an installed package, found without importing it (None when not installed)."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


@lru_cache(maxsize=2)
def qm9_smiles() -> tuple[str, ...]:
    """The 130,831 QM9 SMILES in qm9pack's file order."""
    import pandas as pd

    root = package_dir("qm9pack")
    files = [root / "data" / f"qm9_part{i}.csv" for i in (1, 2, 3)] if root else []
    if not files or not all(f.exists() for f in files):
        raise SymscaleError("cannot build the built-in dataset: package qm9pack (its data files) is not installed")
    return tuple(s for f in files for s in pd.read_csv(f, usecols=["SMILES"])["SMILES"].astype(str))


@lru_cache(maxsize=2)
def drug_smiles_lines() -> tuple[str, tuple[str, ...]]:
    """(source name, SMILES lines) of the drug-like source: MOSES train set if present, else RDKit files."""
    moses = package_dir("moses")
    if moses is not None and (moses / "dataset" / "data" / "train.csv.gz").exists():
        with gzip.open(moses / "dataset" / "data" / "train.csv.gz", "rt") as f:
            lines = f.read().split("\n")[1:]
        return "moses", tuple(s.strip() for s in lines if s.strip())
    return "rdkit", tuple(_rdkit_smiles())


def _rdkit_smiles() -> list[str]:
    from rdkit import RDConfig

    data, contrib = Path(RDConfig.RDDataDir), Path(RDConfig.RDContribDir)
    out: list[str] = []
    for path, sep, col in (
        (data / "NCI" / "first_5K.smi", "\t", 0),
        (data / "Pains" / "test_data" / "wehi_mols.csv", ",", 0),
        (contrib / "FreeWilson" / "data" / "CHEMBL2321810.smi", " ", 0),
    ):
        if path.exists():
            for line in path.read_text().splitlines():
                fields = line.strip().split(sep)
                if fields and fields[col]:
                    out.append(fields[col].strip('"'))
    if not out:
        raise SymscaleError("cannot build the built-in dataset: no drug-like SMILES (molsets or RDKit data files)")
    return out


def usable_smiles(smiles: str, max_atoms: int = MAX_DRUG_ATOMS) -> str | None:
    """Canonical SMILES when the molecule is one neutral closed-shell fragment of allowed elements with at
    most `max_atoms` atoms including H; None otherwise."""
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    mol = Chem.MolFromSmiles(smiles)
    if mol is None or len(Chem.GetMolFrags(mol)) != 1:
        return None
    n_atoms = mol.GetNumAtoms() + sum(a.GetTotalNumHs() for a in mol.GetAtoms())
    if n_atoms > max_atoms or Chem.GetFormalCharge(mol) != 0:
        return None
    if any(a.GetAtomicNum() not in ALLOWED_ELEMENTS or a.GetNumRadicalElectrons() for a in mol.GetAtoms()):
        return None
    return Chem.MolToSmiles(mol)


def _rotation(n: int, seed: int, salt: int) -> int:
    return int(np.random.default_rng([seed, salt]).integers(n))


def seed_molecules(n_molecules: int, seed: int = 0, start: int = 0) -> list[SeedMolecule]:
    """Molecules `start .. start + n_molecules - 1` of the seeded list (see module docstring)."""
    ks = range(start, start + n_molecules)
    n_drug = sum(1 for k in ks if k % DRUG_EVERY == DRUG_EVERY - 1)
    last_drug = (start + n_molecules) // DRUG_EVERY  # drug slots 0 .. last_drug - 1 are needed at most
    drugs = _drug_molecules(last_drug, seed) if n_drug else []
    qm9 = qm9_smiles()
    perm = np.random.default_rng([seed, 9]).permutation(len(qm9))
    out = []
    for k in ks:
        if k % DRUG_EVERY == DRUG_EVERY - 1:
            out.append(drugs[k // DRUG_EVERY])
        else:
            q = int(perm[(k - k // DRUG_EVERY) % len(qm9)])
            out.append(SeedMolecule(qm9[q], f"qm9:{q}"))
    return out


def _drug_molecules(n: int, seed: int) -> list[SeedMolecule]:
    """The first `n` usable drug-like molecules, scanning the source from a seeded offset (wrapping)."""
    name, lines = drug_smiles_lines()
    offset = _rotation(len(lines), seed, 17)
    out: list[SeedMolecule] = []
    for step in range(len(lines)):
        if len(out) >= n:
            break
        j = (offset + step) % len(lines)
        if name == "moses" and len(lines[j]) > 48:  # cheap pre-filter: no usable one is longer
            continue
        smi = usable_smiles(lines[j])
        if smi is not None:
            out.append(SeedMolecule(smi, f"{name}:{j}"))
    if len(out) < n:  # a small source (RDKit files) is reused cyclically
        if not out:
            raise SymscaleError("cannot build the built-in dataset: no usable drug-like molecules found")
        out = [out[i % len(out)] for i in range(n)]
    return out
