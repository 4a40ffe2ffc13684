"""Maximal-update parametrisation (muP) for Adam: parameter roles, width multipliers, optimizer groups.

Reference: G. Yang, E. J. Hu et al. 2022, "Tensor Programs V: Tuning Large Neural Networks via Zero-Shot
Hyperparameter Transfer" (arXiv 2203.03466), Table 3 (Adam). With m = fan_in / base fan_in the width
multiplier of a parameter, muP for Adam prescribes:

    role      what it is                                    init std             Adam lr
    input     matrix whose fan-out grows with width         1 / sqrt(fan_in)     lr
    hidden    matrix whose fan-in and fan-out both grow     1 / sqrt(fan_in)     lr / m
    output    matrix whose fan-in only grows (readouts)     1 / fan_in (or 0)    lr / m
    vector    biases, gains, and anything nothing grows in  (any, O(1))          lr

Roles are inferred as the `mup` package does with base shapes: the family is built at `base_width` and at
2 * `base_width` with the same options, and each parameter's shape is compared between the two (cached per
family and options). Fan-in and fan-out of a parameter follow the torch convention: dim 0 is fan-out and the
other dims are fan-in (nn.Linear, convolutions), except nn.Embedding (dim 0 is fan-in: one row per element).
A module that stores a matrix the other way round declares it in a class attribute
`mup_fan_in_dim: dict[str, int]` (local parameter name -> index of its fan-in dimension).

Initialisation is the families' job (see `symscale.models.layers.Dense`); this module only scales learning
rates. The multiplier m of a hidden or output matrix is its own fan-in ratio against the base model (for
most layers exactly width / base_width).

Two switches turn muP off, for the coordinate check (tests/test_models_mup.py) and for ablations:
`param_groups(..., lr_scaling=False)` gives every group the one plain learning rate (and weight decay), and
`standard_readout_init(model)` re-draws every output matrix with the standard-parametrisation std
1 / sqrt(fan_in) instead of muP's 1 / fan_in. Either one alone makes the change of a layer's output after a
few Adam steps grow with width (hidden layers about as width, readouts about as sqrt(width)); under muP it does
not change with width.

Weight decay: torch's AdamW (and schedule-free AdamW) shrink a parameter by lr * weight_decay per step. For
hidden and output matrices the group's weight_decay is multiplied by m so that this product, the actual
decay per step, does not change with width (as `mup.MuAdamW` does for non-decoupled decay). Vector-like
parameters (biases, gains: 1-D tensors) get no weight decay.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from functools import cache

import torch
from torch import nn

from symscale.models.base import ForceField

logger = logging.getLogger(__name__)

ROLES = ("input", "hidden", "output", "vector")


@dataclass(frozen=True)
class ParameterRole:
    """The muP role of one parameter and its width multiplier (fan-in ratio to the base model)."""

    name: str
    role: str  # one of ROLES
    width_mult: float


def width_multiplier(model: ForceField) -> float:
    """width / base_width of a model (the multiplier of most hidden matrices)."""
    return model.width / type(model).base_width


def _fan_dims(module: nn.Module, local_name: str, ndim: int) -> tuple[int, tuple[int, ...]]:
    """(fan-out dim, fan-in dims) of a parameter, see the module docstring."""
    declared = getattr(module, "mup_fan_in_dim", {}) or {}
    if local_name in declared:
        fan_in = declared[local_name] % ndim
        return (1 - fan_in if ndim == 2 else 0), (fan_in,)
    if isinstance(module, nn.Embedding):
        return 1, (0,)
    return 0, tuple(range(1, ndim))


def _fan_sizes(model: nn.Module) -> dict[str, tuple[int, int, int]]:
    """name -> (ndim, fan_out, fan_in) for every trainable parameter."""
    out = {}
    for mod_name, module in model.named_modules():
        for local, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            name = f"{mod_name}.{local}" if mod_name else local
            if p.dim() < 2:
                out[name] = (p.dim(), 1, 1)
                continue
            fo, fi = _fan_dims(module, local, p.dim())
            out[name] = (p.dim(), p.shape[fo], math.prod(p.shape[d] for d in fi))
    return out


def _freeze(obj):
    if isinstance(obj, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in obj.items()))
    if isinstance(obj, list | tuple):
        return tuple(_freeze(v) for v in obj)
    return obj


def _model_options(model: ForceField) -> dict:
    return {
        "elements": tuple(model.elements),
        "cutoff": model.cutoff,
        "max_neighbors": model.max_neighbors,
        "forces": model.force_mode,
        **dict(getattr(model, "overrides", {}) or {}),
    }


@cache
def _reference_shapes(cls: type[ForceField], options: tuple) -> tuple[dict, dict]:
    """Fan sizes of the family built at base_width and at 2 * base_width (cached per family and options)."""
    kwargs = dict(options)
    base = cls(cls.base_width, **kwargs)
    double = cls(2 * cls.base_width, **kwargs)
    return _fan_sizes(base), _fan_sizes(double)


def parameter_roles(model: ForceField) -> dict[str, ParameterRole]:
    """Role and width multiplier of each trainable parameter of `model`, by name."""
    base, double = _reference_shapes(type(model), _freeze(_model_options(model)))
    current = _fan_sizes(model)
    if set(base) != set(current):
        missing = sorted(set(base) ^ set(current))[:5]
        raise RuntimeError(f"{model.arch}: parameter names differ from the base model: {missing}")
    roles = {}
    for name, (ndim, _fan_out, fan_in) in current.items():
        _, bo, bi = base[name]
        _, do, di = double[name]
        out_grows, in_grows = do > bo, di > bi
        if ndim < 2 or not (out_grows or in_grows):
            role, mult = "vector", 1.0
        elif out_grows and in_grows:
            role, mult = "hidden", fan_in / bi
        elif in_grows:
            role, mult = "output", fan_in / bi
        else:
            role, mult = "input", 1.0
        roles[name] = ParameterRole(name, role, mult)
    return roles


def param_groups(model: ForceField, lr: float, weight_decay: float = 0.0, *, lr_scaling: bool = True) -> list[dict]:
    """Torch optimizer parameter groups with muP (Adam) learning rates: one group per (role, multiplier),
    each a dict with "params", "lr", "weight_decay", and for information "role" and "width_mult".
    `lr` is the learning rate tuned at `base_width`; see the module docstring for the rules.
    `lr_scaling=False` switches muP's learning-rate rule off: every group gets `lr` and `weight_decay` as given
    (matrices still decay, vectors still do not), the "single plain learning rate" of standard practice."""
    roles = parameter_roles(model)
    params = dict(model.named_parameters())
    groups: dict[tuple[str, float], dict] = {}
    for name, pr in roles.items():
        decays = params[name].dim() >= 2
        key = (pr.role, round(pr.width_mult, 12), decays)
        if key not in groups:
            scaled = lr_scaling and pr.role in ("hidden", "output")
            groups[key] = {
                "params": [],
                "lr": lr / pr.width_mult if scaled else lr,
                "weight_decay": weight_decay * (pr.width_mult if scaled else 1.0) if decays else 0.0,
                "role": pr.role,
                "width_mult": pr.width_mult,
            }
        groups[key]["params"].append(params[name])
    logger.debug("muP groups for %s: %s", model.arch, [(k, len(g["params"])) for k, g in groups.items()])
    return list(groups.values())


@torch.no_grad()
def standard_readout_init(model: ForceField) -> list[str]:
    """Re-draw every output matrix of `model` (role "output": fan-in grows with width, fan-out does not) from
    N(0, 1 / fan_in), the standard parametrisation, instead of muP's N(0, 1 / fan_in^2). Switches muP's readout
    rule off (for the coordinate check and ablations); returns the names of the re-drawn parameters."""
    params = dict(model.named_parameters())
    sizes = _fan_sizes(model)
    names = [name for name, pr in parameter_roles(model).items() if pr.role == "output"]
    for name in names:
        params[name].normal_(0.0, 1.0 / math.sqrt(sizes[name][2]))
    return names
