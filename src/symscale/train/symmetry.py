"""Symmetry modes of training (the study's ablations): rotation augmentation and the symmetry loss.

- Augmentation (`augment="so3"`): every structure of every step is rotated by a fresh Haar-random rotation
  about its centroid (forces rotated alike); `"o3"` also inverts it (x -> -x) with probability 1/2.
- Symmetry loss (`symmetry_loss_rotations=M`, weight lambda): the loss of a batch becomes
      L = L(x) + lambda * (1/M) sum_m L(R_m x)
  with fresh random rotations R_m per structure; it costs about (M + 1) forward and backward passes, and the
  measured FLOPs count all of them.
Rotations come from `symscale.models.symmetry` (conventions there: x' = R x about each centroid). All random
draws use the run's `torch.Generator`, whose state is saved in checkpoints so that a resumed run draws the
same rotations.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from symscale.data.graph import GraphBatch
from symscale.models.symmetry import random_rotations, rotate_batch


def random_orthogonal(n: int, generator: torch.Generator, reflections: bool = False) -> torch.Tensor:
    """[n, 3, 3] random rotations (float64), times -1 with probability 1/2 each when `reflections`."""
    R = random_rotations(n, dtype=torch.float64, generator=generator)  # [n, 3, 3]
    if reflections:
        sign = torch.randint(0, 2, (n,), generator=generator).to(torch.float64) * 2 - 1  # [n]
        R = R * sign[:, None, None]
    return R


def augment_batch(batch: GraphBatch, mode: str, generator: torch.Generator) -> GraphBatch:
    """`batch` with each structure randomly rotated ("so3") or rotated and maybe inverted ("o3");
    unchanged for "none"."""
    if mode == "none":
        return batch
    R = random_orthogonal(batch.num_structures, generator, reflections=mode == "o3")
    return rotate_batch(batch, R)


def symmetry_loss(
    loss_of: Callable[[GraphBatch], torch.Tensor],
    batch: GraphBatch,
    rotations: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """(1/M) sum_m loss_of(R_m batch) over `rotations` = M fresh random rotations per structure."""
    total = 0.0
    for _ in range(rotations):
        R = random_orthogonal(batch.num_structures, generator)
        total = total + loss_of(rotate_batch(batch, R))
    return total / rotations
