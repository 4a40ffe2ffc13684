"""A trained symscale model as an ASE calculator.

    from symscale.ase import SymscaleCalculator
    atoms.calc = SymscaleCalculator("runs/esen-16")          # a run directory or a checkpoint file
    atoms.get_potential_energy()                              # eV
    atoms.get_forces()                                        # eV/Angstrom

For molecules without periodic cells. Loading never executes code from the checkpoint
(`torch.load(weights_only=True)`), so a downloaded checkpoint is safe to open. `device="auto"` picks CUDA
when it is available, as `symscale train` does.

Charge and spin: the charge and spin multiplicity of a structure are read from `atoms.info["charge"]` and
`atoms.info["spin"]` (default 0 and 1, as in OMol25), and a change of either makes ASE recompute. No family
of the staircase embeds them today (the paper trains on OMol25's neutral and charged structures alike, with
models blind to both); so that a charged or open-shell structure is not silently treated as neutral, the
calculator warns once when one reaches a model that ignores them (a family that embeds them declares
`uses_charge_spin = True`).

Direct-force models (the paper's setting) predict forces that are not the gradient of the energy; for
relaxations and molecular dynamics that should conserve energy, train with `forces: conservative` (or load
with `forces="conservative"`, which differentiates the same energy head; its force accuracy is then that of
the energy head, not of the trained force head).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from ase.calculators.calculator import Calculator, all_changes

from symscale.data.graph import Structure, collate
from symscale.errors import SymscaleError
from symscale.models.base import ForceField
from symscale.rundir import atomic_path

_DTYPES = {"float32": torch.float32, "float64": torch.float64}
log = logging.getLogger(__name__)


def resolve_device(device: str | torch.device) -> torch.device:
    """A torch device from "cpu", "cuda", "cuda:1", "auto" (CUDA when available) or a `torch.device`."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise SymscaleError.invalid("device", device, "cpu, cuda, cuda:N or auto") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise SymscaleError.invalid("device", device, "cpu or auto (no CUDA device is available)")
    return resolved


def charge_spin(atoms) -> tuple[int, int]:
    """(total charge, spin multiplicity) from `atoms.info` (defaults 0 and 1, as in OMol25)."""
    return int(atoms.info.get("charge", 0)), int(atoms.info.get("spin", 1))


def _resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise SymscaleError.invalid("dtype", dtype, f"one of {', '.join(_DTYPES)}")
    return _DTYPES[dtype]


class SymscaleCalculator(Calculator):
    """ASE calculator for a symscale `ForceField` (energy in eV, forces in eV/Angstrom)."""

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(
        self,
        model: ForceField | str | Path,
        *,
        device: str = "cpu",
        dtype: str | torch.dtype = "float64",
        forces: str | None = None,
        **kwargs,
    ) -> None:
        """`model`: a `ForceField`, a run directory or a checkpoint path. `device`: "cpu", "cuda", "cuda:N"
        or "auto" (CUDA when available). `dtype`: float64 (default, for MD) or float32. `forces`: override
        the force mode of a loaded checkpoint ("direct" | "conservative")."""
        super().__init__(**kwargs)
        self.torch_dtype = _resolve_dtype(dtype)
        self.device = resolve_device(device)
        self._warned_charge_spin = False
        if isinstance(model, str | Path):
            from symscale.train.checkpoint import load_model

            model, _ = load_model(model, device=self.device)
        if forces is not None:
            if forces not in ("direct", "conservative"):
                raise SymscaleError.invalid("forces", forces, "direct or conservative")
            model.force_mode = forces
        self.model = model.to(device=self.device, dtype=self.torch_dtype).eval()

    @classmethod
    def from_checkpoint(cls, path: str | Path, **kwargs) -> SymscaleCalculator:
        """The calculator of a checkpoint file or run directory (keywords as in the constructor)."""
        return cls(Path(path), **kwargs)

    def check_state(self, atoms, tol: float = 1e-15) -> list[str]:
        """ASE's changes (positions, numbers, cell, ...), plus "info" when the charge or spin in
        `atoms.info` differs from the last calculation."""
        changes = super().check_state(atoms, tol=tol)
        if self.atoms is not None and "info" not in changes and charge_spin(atoms) != charge_spin(self.atoms):
            changes.append("info")
        return changes

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        if atoms.pbc.any():
            raise SymscaleError.invalid("structure", f"periodic cell (pbc={atoms.pbc.tolist()})", "a molecule")
        charge, spin = charge_spin(atoms)
        self._warn_if_ignored(charge, spin)
        structure = Structure(
            numbers=atoms.get_atomic_numbers().astype(np.int64),
            positions=atoms.get_positions(),
            charge=charge,
            spin=spin,
        )
        out = predict(self.model, [structure], device=self.device, dtype=self.torch_dtype)[0]
        self.results = {"energy": out[0], "free_energy": out[0], "forces": out[1]}

    def _warn_if_ignored(self, charge: int, spin: int) -> None:
        """Warn once per calculator when a charged or open-shell structure meets a model blind to both."""
        if (charge, spin) == (0, 1) or self._warned_charge_spin or getattr(self.model, "uses_charge_spin", False):
            return
        self._warned_charge_spin = True
        message = (
            f"structure with charge {charge} and spin multiplicity {spin} given to a {self.model.arch} model that "
            "ignores charge and spin: it is predicted as if neutral and closed-shell"
        )
        log.warning(message)


def predict(
    model: ForceField,
    structures: list[Structure],
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float64,
) -> list[tuple[float, np.ndarray]]:
    """(energy eV, forces [n_atoms, 3] eV/Angstrom) of each structure, in one forward pass."""
    batch = collate(structures, cutoff=model.cutoff, max_neighbors=model.max_neighbors, dtype=dtype)
    batch = batch.to(device=device)
    with torch.no_grad():
        output = model(batch)
    energy = output.energy.detach().cpu().double().numpy()
    forces = output.forces.detach().cpu().double().numpy()
    bounds = np.cumsum([0] + [len(s) for s in structures])
    return [(float(energy[k]), forces[bounds[k] : bounds[k + 1]].copy()) for k in range(len(structures))]


# ---------------------------------------------------------------------------------------------------------
# molecular dynamics with a symscale model


class MDResult:
    """Summary of a trajectory: energies in eV, drift in eV per atom per picosecond."""

    def __init__(self, times_fs: np.ndarray, total_ev: np.ndarray, temperature_k: np.ndarray, n_atoms: int):
        self.times_fs = times_fs
        self.total_ev = total_ev
        self.temperature_k = temperature_k
        self.n_atoms = n_atoms

    @property
    def drift_ev_per_atom_per_ps(self) -> float:
        """Slope of a least-squares line through total energy vs time, per atom (eV/atom/ps)."""
        if len(self.times_fs) < 2:
            return 0.0
        slope_ev_per_fs = np.polyfit(self.times_fs, self.total_ev, 1)[0]
        return float(slope_ev_per_fs * 1000.0 / self.n_atoms)

    @property
    def max_deviation_ev_per_atom(self) -> float:
        """Largest |E_total(t) - E_total(0)| per atom (eV/atom)."""
        return float(np.max(np.abs(self.total_ev - self.total_ev[0])) / self.n_atoms)


def run_md(
    atoms,
    calculator: Calculator,
    *,
    steps: int,
    dt_fs: float = 0.5,
    temperature_k: float = 300.0,
    thermostat: str = "nve",
    friction_per_fs: float = 0.01,
    seed: int = 0,
    trajectory: str | Path | None = None,
    interval: int = 10,
    on_step: Callable[[int], None] | None = None,
) -> MDResult:
    """Run NVE (velocity Verlet) or Langevin MD from `atoms`, velocities drawn at `temperature_k`.

    Writes every `interval`-th frame to `trajectory` (extxyz) when given and returns the energies per step;
    `on_step(step)` is called after each step (the CLI's progress bar).
    """
    from ase import units
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.constraints import FixCom
    from ase.io import write
    from ase.md import velocitydistribution as velocities
    from ase.md.langevin import Langevin
    from ase.md.verlet import VelocityVerlet

    if steps < 1:
        raise SymscaleError.invalid("steps", steps, "an integer >= 1")
    if not dt_fs > 0:
        raise SymscaleError.invalid("dt", dt_fs, "a positive time step in fs")
    if interval < 1:
        raise SymscaleError.invalid("interval", interval, "an integer >= 1 (steps between frames)")
    atoms = atoms.copy()
    atoms.calc = calculator
    rng = np.random.default_rng(seed)
    # ASE >= 3.28 renamed MaxwellBoltzmannDistribution to thermalize_momenta
    thermalize = getattr(velocities, "thermalize_momenta", None) or velocities.MaxwellBoltzmannDistribution
    thermalize(atoms, temperature_K=temperature_k, rng=rng)
    velocities.Stationary(atoms)
    velocities.ZeroRotation(atoms)
    if thermostat == "nve":
        dyn = VelocityVerlet(atoms, timestep=dt_fs * units.fs)
    elif thermostat == "langevin":
        atoms.set_constraint(FixCom())  # keep the centre of mass fixed, as ASE recommends over fixcm=True
        dyn = Langevin(
            atoms,
            timestep=dt_fs * units.fs,
            temperature_K=temperature_k,
            friction=friction_per_fs / units.fs,
            fixcm=False,
            rng=rng,
        )
    else:
        raise SymscaleError.invalid("thermostat", thermostat, "nve or langevin")
    times, totals, temps = [], [], []

    def record() -> None:
        times.append(len(times) * dt_fs)
        totals.append(atoms.get_potential_energy() + atoms.get_kinetic_energy())
        temps.append(atoms.get_temperature())

    frames = []
    record()
    for step in range(1, steps + 1):
        dyn.run(1)
        record()
        if trajectory is not None and step % interval == 0:
            frame = atoms.copy()
            frame.calc = SinglePointCalculator(frame, energy=atoms.get_potential_energy(), forces=atoms.get_forces())
            frames.append(frame)
        if on_step is not None:
            on_step(step)
    if trajectory is not None:
        Path(trajectory).parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(trajectory) as tmp:  # renamed over it when whole
            write(tmp, frames, format="extxyz")
    return MDResult(np.array(times), np.array(totals), np.array(temps), len(atoms))
