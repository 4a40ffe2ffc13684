"""Schedule-free AdamW with muP parameter groups, warmup, weight decay and gradient clipping.

Schedule-free AdamW (Defazio et al. 2024, the `schedulefree` package) keeps two parameter sequences: the
gradient is taken at an interpolation y (the model's weights in train mode) and the averaged sequence x is
the one to evaluate and to save. `averaged_weights(optimizer, model)` switches the model to x for its block
(`optimizer.eval()`) and back to y afterwards (`optimizer.train()`); evaluation and checkpoints always run
inside it. Learning rates per parameter come from `symscale.models.mup.param_groups` (muP for Adam).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import torch
from schedulefree import AdamWScheduleFree
from torch import nn

logger = logging.getLogger(__name__)


def effective_warmup(warmup_steps: int, total_steps: int) -> int:
    """Warmup steps actually used: `warmup_steps`, capped at 10% of the run so short runs still train."""
    return int(min(warmup_steps, max(1, total_steps // 10)))


def parameter_groups(model: nn.Module, lr: float, weight_decay: float) -> list[dict]:
    """muP groups when the model is a registered family with a base width, else one plain group."""
    try:
        from symscale.models.mup import param_groups
    except ImportError:
        param_groups = None
    if param_groups is not None and hasattr(type(model), "base_width"):
        return param_groups(model, lr, weight_decay)
    logger.info("no muP parameter groups for %s: one group with lr %g", type(model).__name__, lr)
    return [{"params": [p for p in model.parameters() if p.requires_grad], "lr": lr, "weight_decay": weight_decay}]


def build_optimizer(
    model: nn.Module,
    lr: float,
    *,
    weight_decay: float = 0.0,
    warmup_steps: int = 0,
    betas: tuple[float, float] = (0.9, 0.999),
) -> AdamWScheduleFree:
    """Schedule-free AdamW over the model's muP groups, in train mode (weights = y)."""
    groups = parameter_groups(model, lr, weight_decay)
    optimizer = AdamWScheduleFree(groups, lr=lr, betas=betas, weight_decay=weight_decay, warmup_steps=warmup_steps)
    optimizer.train()
    return optimizer


def clip_gradients(model: nn.Module, max_norm: float | None) -> float:
    """Clip the global gradient norm to `max_norm` (None or 0: no clipping); returns the norm before."""
    return float(clip_gradients_([p for p in model.parameters() if p.grad is not None], max_norm))


def clip_gradients_(params: list[torch.Tensor], max_norm: float | None) -> torch.Tensor:
    """`clip_gradients` on a list of parameters kept by the caller (no walk over the modules each step),
    returning the norm before clipping as a tensor: no host synchronisation inside the training step."""
    params = [p for p in params if p.grad is not None]
    if not params:
        return torch.zeros(())
    if not max_norm:
        return torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params]))
    return torch.nn.utils.clip_grad_norm_(params, max_norm)


@contextlib.contextmanager
def averaged_weights(optimizer: AdamWScheduleFree, model: nn.Module) -> Iterator[None]:
    """Inside: model weights are schedule-free's averaged x and the model is in eval mode; after: y, train mode."""
    optimizer.eval()
    model.eval()
    try:
        yield
    finally:
        optimizer.train()
        model.train()
