"""The model registry: a short user-facing name per family, filled by a decorator.

@register("egnn")
class EGNN(ForceField): ...

model = build("egnn", width=32, elements=[1, 6, 7, 8])
"""

from __future__ import annotations

import importlib

from symscale.errors import SymscaleError
from symscale.models.base import ForceField

_REGISTRY: dict[str, type[ForceField]] = {}
# modules that register a family when imported
_FAMILY_MODULES = ("mpnn", "egnn", "gemnet_oc", "esen", "frame_averaging", "transformer")


def register(name: str):
    def decorator(cls: type[ForceField]) -> type[ForceField]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise RuntimeError(f"arch {name!r} registered twice")
        cls.arch = name
        _REGISTRY[name] = cls
        return cls

    return decorator


def _load_families() -> None:
    for module in _FAMILY_MODULES:
        try:
            importlib.import_module(f"symscale.models.{module}")
        except ModuleNotFoundError as err:
            if err.name != f"symscale.models.{module}":
                raise


def list_archs() -> list[str]:
    """Registered family names, sorted."""
    _load_families()
    return sorted(_REGISTRY)


def get_family(arch: str) -> type[ForceField]:
    _load_families()
    if arch not in _REGISTRY:
        raise SymscaleError(f"unknown arch {arch!r}; choices: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[arch]


def build(arch: str, width: int, **kwargs) -> ForceField:
    """Build family `arch` at `width`. Keyword arguments: `elements` (required), `cutoff`, `max_neighbors`,
    `forces` ("direct" | "conservative"), `element_energies`, `force_scale`, and family overrides
    (e.g. `num_layers`, `lmax`). An unknown override is a `SymscaleError`."""
    cls = get_family(arch)
    try:
        return cls(width, **kwargs)
    except TypeError as err:
        raise SymscaleError(f"invalid option for arch {arch!r}: {err}") from None
