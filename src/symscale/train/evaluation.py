"""Evaluation on the fixed validation set, and the log-spaced schedule of evaluation points.

Metrics (all on the whole validation set, with the averaged schedule-free weights):
    val_loss                   the training loss formula (`symscale.train.loss`), dimensionless
    energy_mae_mev_per_atom    mean over structures of |E - E_ref| / n_atoms, meV/atom
    force_mae_mev_per_A        mean over atoms and Cartesian components of |F - F_ref|, meV/Angstrom
    force_cos                  mean over atoms of the cosine between predicted and reference forces
    equivariance_error_forces  (families without rotation symmetry) mean |F(Rx) - R F(x)|, meV/Angstrom,
    equivariance_error_energy  and mean |E(Rx) - E(x)| / n_atoms, meV/atom (`symscale.models.symmetry`)
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch

from symscale.data.graph import GraphBatch


def eval_steps(total_steps: int, points: int = 24, first_fraction: float = 0.01) -> list[int]:
    """Steps (1-based, ascending, unique) at `points` log-spaced fractions of the run from `first_fraction`
    to 1, plus the last step. Fractions that round to the same step are merged."""
    if total_steps < 1:
        return []
    fractions = np.geomspace(first_fraction, 1.0, points) if points > 1 else np.array([1.0])
    steps = {min(total_steps, max(1, math.ceil(f * total_steps - 1e-9))) for f in fractions}
    return sorted(steps | {total_steps})


def _sums(out, batch: GraphBatch) -> np.ndarray:
    """[energy abs err per atom sum, force err norm sum, force abs component sum, cos sum, structures, atoms]."""
    n = batch.n_atoms.to(out.energy.dtype)
    de = ((out.energy - batch.energy).abs() / n).sum()
    diff = out.forces - batch.forces  # [A, 3]
    cos = torch.nn.functional.cosine_similarity(out.forces, batch.forces, dim=-1, eps=1e-12).sum()
    values = [de, diff.norm(dim=-1).sum(), diff.abs().sum(), cos]
    return np.array([float(v.detach()) for v in values] + [batch.num_structures, batch.num_atoms], dtype=np.float64)


def evaluate(
    model: torch.nn.Module,
    batches: Iterable[GraphBatch],
    force_rms: float,
    *,
    energy_weight: float = 1.0,
    force_weight: float = 1.0,
    equivariance_batch: GraphBatch | None = None,
    equivariance_rotations: int = 2,
    forward: Callable[[GraphBatch], Any] | None = None,
) -> dict[str, float]:
    """Validation metrics of `model` as it is (the caller switches to the averaged weights). `forward` (default:
    the model) computes the validation batches' outputs, e.g. a compiled forward (`train.compilation`); the
    equivariance error is measured on the model itself."""
    conservative = getattr(model, "force_mode", "direct") == "conservative"
    # direct forces need no autograd at all: inference mode (measured 1.16-1.29x faster than no_grad for the
    # quickstart's mpnn and egnn at width 24, 300 structures in batches of 50, one thread)
    grad = contextlib.nullcontext() if conservative else torch.inference_mode()
    totals = np.zeros(6)
    with grad:
        for b in batches:
            out = (forward or model)(b)
            totals += _sums(out, b)
    e_abs, f_norm, f_abs, cos, n_struct, n_atoms = (float(v) for v in totals)
    energy_term = e_abs / n_struct / force_rms
    force_term = f_norm / n_atoms / force_rms
    metrics = {
        "val_loss": energy_weight * energy_term + force_weight * force_term,
        "val_energy_loss": energy_term,
        "val_force_loss": force_term,
        "energy_mae_mev_per_atom": 1000.0 * e_abs / n_struct,
        "force_mae_mev_per_A": 1000.0 * f_abs / (3 * n_atoms),
        "force_cos": cos / n_atoms,
    }
    if equivariance_batch is not None:
        from symscale.models.symmetry import equivariance_error

        err = equivariance_error(model, equivariance_batch, n_rotations=equivariance_rotations, seed=0)
        metrics["equivariance_error_forces"] = 1000.0 * err["forces"]
        metrics["equivariance_error_energy"] = 1000.0 * err["energy"]
    return metrics
