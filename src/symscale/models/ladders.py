"""Width ladders: the widths a study trains per family, shipped as presets in the package.

`src/symscale/configs/ladders/<arch>.yaml` holds two lists of widths: `cpu` (N from about 1e3 to 1e5
parameters, for the embedded study on a laptop) and `paper` (about 1e5 to 1e7, the reference study's range).
Each spans at least 1.5 decades of N; the YAML comments give N per width for the built-in elements.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import yaml

from symscale.errors import SymscaleError
from symscale.models.registry import build, get_family

# the elements of the built-in GFN2-xTB data set and of the ladder comments: H C N O F S Cl Br
BUILTIN_ELEMENTS = (1, 6, 7, 8, 9, 16, 17, 35)


@dataclass(frozen=True)
class Rung:
    """One width of a ladder and its exact parameter count N."""

    width: int
    num_parameters: int


def _ladder_file(arch: str):
    get_family(arch)  # unknown arch -> SymscaleError with the choices
    path = importlib.resources.files("symscale").joinpath("configs", "ladders", f"{arch}.yaml")
    if not path.is_file():
        raise SymscaleError(f"no ladder preset for arch {arch!r} (expected configs/ladders/{arch}.yaml)")
    return path


def ladder_overrides(arch: str, name: str) -> dict:
    """Model options that ladder `name` of `arch` is defined with (the file's `overrides: {name: {...}}`),
    e.g. eSEN's `paper` ladder is at lmax 4. Empty when the ladder uses the family's defaults."""
    data = yaml.safe_load(_ladder_file(arch).read_text()) or {}
    return dict((data.get("overrides") or {}).get(name) or {})


def load_ladder(arch: str, name: str) -> list[int]:
    """The widths of ladder `name` ("cpu" or "paper") of family `arch`, ascending."""
    data = yaml.safe_load(_ladder_file(arch).read_text()) or {}
    data.pop("overrides", None)
    if name not in data:
        raise SymscaleError.invalid(f"ladder for arch {arch!r}", name, f"one of {', '.join(sorted(data))}")
    widths = data[name]
    if not isinstance(widths, list) or not all(isinstance(w, int) and w > 0 for w in widths):
        raise SymscaleError(f"ladder {name!r} of {arch!r} must be a list of positive integers, got {widths!r}")
    return sorted(widths)


def count_parameters(arch: str, width: int, elements: Sequence[int] = BUILTIN_ELEMENTS, **overrides) -> int:
    """Exact N of `arch` at `width`, built on the meta device (no memory, no initialisation cost)."""
    with torch.device("meta"):
        model = build(arch, width, elements=list(elements), **overrides)
    return model.num_parameters()


def ladder_rungs(arch: str, name: str, elements: Sequence[int] = BUILTIN_ELEMENTS, **overrides) -> list[Rung]:
    """Widths of a ladder with their exact N for `elements` (at the ladder's own overrides, then `overrides`)."""
    options = {**ladder_overrides(arch, name), **overrides}
    return [Rung(w, count_parameters(arch, w, elements, **options)) for w in load_ladder(arch, name)]
