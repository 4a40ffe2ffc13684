"""The model registry: a short user-facing name per family, filled by a decorator.

@register("egnn")
class EGNN(ForceField): ...

model = build("egnn", width=32, elements=[1, 6, 7, 8])
"""

from __future__ import annotations

import importlib
import inspect
import math
import numbers
from collections.abc import Mapping
from typing import Any

from symscale.config import MODEL_REVISIONS
from symscale.errors import SymscaleError
from symscale.models.base import SHARED_OPTIONS, ForceField

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


# The constructor option that sets each family's depth (interaction blocks or layers): the depth study
# (`symscale.study.spec`, `depth:`) sweeps it. Every registered family has an entry (a contract test checks it).
DEPTH_OPTION: dict[str, str] = {
    "mpnn": "num_layers",
    "egnn": "num_layers",
    "gemnet_oc": "num_blocks",
    "esen": "num_layers",
    "fa_mpnn": "num_layers",
    "canonical_mpnn": "num_layers",
    "transformer": "num_layers",
}


def depth_option(arch: str) -> str:
    """The model option that sets the depth of family `arch` (`DEPTH_OPTION`), e.g. "num_blocks" for GemNet-OC."""
    get_family(arch)  # unknown arch -> SymscaleError with the choices
    if arch not in DEPTH_OPTION:
        raise SymscaleError(f"arch {arch!r} has no depth option; families with one: {', '.join(sorted(DEPTH_OPTION))}")
    return DEPTH_OPTION[arch]


def build(arch: str, width: int, revision: int | None = None, **kwargs) -> ForceField:
    """Build family `arch` at `width`. Keyword arguments: `elements` (required), `cutoff`, `max_neighbors`,
    `forces` ("direct" | "conservative"), `element_energies`, `force_scale`, and family overrides
    (e.g. `num_layers`, `lmax`). An unknown override, or one of the wrong type or out of range
    (`check_options`), is a `SymscaleError`. `revision` (a checkpoint's; None: today's) rebuilds an earlier
    revision of the family (`config.MODEL_REVISIONS`): its `legacy_options`, under any option given."""
    cls = get_family(arch)
    current = MODEL_REVISIONS.get(arch, 1)
    for older in range(current - 1, (revision or current) - 1, -1):  # the model it was trained as, not today's
        kwargs = {**cls.legacy_options.get(older, {}), **kwargs}
    check_options(cls, {k: v for k, v in kwargs.items() if k not in SHARED_OPTIONS})
    try:
        return cls(width, **kwargs)
    except TypeError as err:
        raise SymscaleError(f"invalid option for arch {arch!r}: {err}") from None


def check_options(cls: type[ForceField], options: Mapping[str, Any]) -> None:
    """Check a family's own options against the annotations of its constructor, before anything is built.

    An `int` option (a depth or a size: num_layers, num_radial, lmax, ...) must be an integer (2.5 and "3"
    are refused, never truncated) and at least its minimum, 1 unless `OPTION_MINIMUM` says otherwise; a
    `float` option a finite number > 0; a `bool` option true or false; a `str` option a string. `None` is
    accepted where the annotation allows it. Unknown options are left to the constructor (a TypeError).
    """
    params = inspect.signature(getattr(cls.__init__, "__wrapped__", cls.__init__)).parameters
    for name, value in options.items():
        if name not in params:
            continue
        annotation = str(params[name].annotation).replace(" ", "")
        kinds = set(annotation.split("|"))
        if value is None and "None" in kinds:
            continue
        expected = _expected(name, kinds, value)
        if expected is not None:
            raise SymscaleError.invalid(f"{cls.arch} option {name}", value, expected)


# options for which 0 is meaningful (no m > 0 channels, no dihedral orders); every other int option is >= 1
OPTION_MINIMUM = {"mmax": 0, "max_dihedral_order": 0}


def _expected(name: str, kinds: set[str], value: Any) -> str | None:
    """What `value` should have been for an option annotated with `kinds`, or None when it is fine."""
    if "int" in kinds:
        minimum = OPTION_MINIMUM.get(name, 1)
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= minimum
        return None if ok else f"an integer >= {minimum}"
    if "float" in kinds:
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value) and value > 0
        return None if ok else "a finite number > 0"
    if "bool" in kinds:
        return None if isinstance(value, bool) else "true or false"
    if "str" in kinds:
        return None if isinstance(value, str) else "a string"
    return None
