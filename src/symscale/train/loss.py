"""The study's training loss (Ngo & Ravanbakhsh 2026), in units of the training-set force RMS.

For a batch of S structures with n_s atoms each and A atoms in all, and sigma_F the training-set force RMS
(eV/Angstrom, `DatasetStats.force_rms`):

    L_E = (1/S) sum_s |E_s - E_s^ref| / n_s / (sigma_F * 1 Angstrom)          (per-atom energy error)
    L_F = (1/A) sum_i ||F_i - F_i^ref||_2 / sigma_F                              (mean per-atom force error norm)
    L   = w_E * L_E + w_F * L_F                                                 (w_E = w_F = 1 by default)

Both terms are dimensionless: an energy error per atom is divided by sigma_F times one Angstrom, so one unit
of either term is "one force RMS". The validation loss uses the same formula over the whole validation set.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from symscale.data.graph import GraphBatch
from symscale.models.base import ModelOutput


@dataclass(frozen=True)
class LossTerms:
    """The loss of one batch and its two terms (dimensionless tensors, see the module docstring)."""

    total: torch.Tensor
    energy: torch.Tensor
    forces: torch.Tensor


def force_field_loss(
    pred: ModelOutput,
    batch: GraphBatch,
    force_rms: float,
    energy_weight: float = 1.0,
    force_weight: float = 1.0,
) -> LossTerms:
    """L = w_E L_E + w_F L_F of `pred` against the labels of `batch`; `force_rms` in eV/Angstrom."""
    n_atoms = batch.n_atoms.to(pred.energy.dtype)  # [S]
    energy = ((pred.energy - batch.energy).abs() / n_atoms).mean() / force_rms
    forces = (pred.forces - batch.forces).norm(dim=-1).mean() / force_rms
    return LossTerms(total=energy_weight * energy + force_weight * forces, energy=energy, forces=forces)
