"""Width ladders: the widths a study trains per family, shipped as presets in the package.

`src/symscale/configs/ladders/<arch>.yaml` holds two lists of widths: `cpu` (N from about 1e3 to 1e5
parameters, for the embedded study on a laptop) and `paper` (about 1e5 to 1e7, the reference study's range).
Each spans at least 1.5 decades of N; the YAML comments give N per width for the built-in elements.
Those comments are regenerated, never typed: `regenerate_ladder_comments(arch)` rewrites them from the built
models (every other line of the file is kept as it is), and

    python -m symscale.models.ladders --write      # rewrite the comments of every family's ladder file
    python -m symscale.models.ladders              # only report which files are out of date (exit 1 if any)
"""

from __future__ import annotations

import argparse
import importlib.resources
import inspect
import math
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import yaml

from symscale.errors import SymscaleError
from symscale.models.registry import build, get_family, list_archs

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


# constructor options that set a family's depth, in the order they are looked for
DEPTH_OPTIONS = ("num_layers", "num_blocks", "num_interactions")
_COMMENT_COLUMN = 16


def ladder_option(arch: str, name: str | None, options: Sequence[str]) -> int | None:
    """The value of the first of `options` that family `arch` takes: from ladder `name`'s overrides (None:
    no ladder), else the family's constructor default; None when the family takes none of them (e.g. lmax
    of the MPNN). E.g. `ladder_option("egnn", "paper", DEPTH_OPTIONS)` is the paper ladder's depth."""
    overrides = ladder_overrides(arch, name) if name is not None else {}
    params = inspect.signature(get_family(arch).__init__).parameters
    for option in options:
        if option in overrides:
            return overrides[option]
        if option in params and params[option].default is not inspect.Parameter.empty:
            return params[option].default
    return None


def _commented(code: str, comment: str) -> str:
    return f"{code:<{_COMMENT_COLUMN - 1}} # {comment}"


def _short(n: int) -> str:
    return f"{n:.1e}".replace("e+0", "e").replace("e+", "e")


def _summary(arch: str, name: str, rungs: list[Rung]) -> str:
    n = [r.num_parameters for r in rungs]
    depth, lmax = ladder_option(arch, name, DEPTH_OPTIONS), ladder_option(arch, name, ("lmax",))
    text = f"N {_short(n[0])} .. {_short(n[-1])} ({math.log10(n[-1] / n[0]):.2f} decades), {len(n)} widths"
    text += f", depth {depth}" if depth is not None else ""
    return text + (f", lmax {lmax}" if lmax is not None else "")


def regenerate_ladder_comments(arch: str, *, write: bool = False) -> tuple[str, bool]:
    """The ladder file of `arch` with its N comments recomputed (for `BUILTIN_ELEMENTS`): each ladder key
    gets the range of N, the number of widths, depth and lmax; each width gets its exact N. A flow-style list
    (`cpu: [2, 4]`) is rewritten one width per line; every other line is kept. Returns (text, changed);
    with `write=True` the file is rewritten when it changed."""
    path = _ladder_file(arch)
    old = path.read_text()
    data = yaml.safe_load(old) or {}
    names = [k for k in data if k != "overrides"]
    lines, current, counts = [], None, {}
    for line in old.splitlines():
        key = re.match(r"^(\w+):\s*(\[[^\]]*\])?\s*(#.*)?$", line)
        item = re.match(r"^(\s+)-\s*(\d+)\s*(#.*)?$", line)
        if key and key.group(1) in names:
            current = key.group(1)
            rungs = ladder_rungs(arch, current)
            counts = {r.width: r.num_parameters for r in rungs}
            lines.append(_commented(f"{current}:", _summary(arch, current, rungs)))
            if key.group(2):  # flow style: one width per line from here on
                lines.extend(_commented(f"  - {w}", f"N = {counts[w]:,}") for w in data[current])
                current = None
        elif item and current is not None:
            width = int(item.group(2))
            lines.append(_commented(f"{item.group(1)}- {width}", f"N = {counts[width]:,}"))
        else:
            if line[:1] not in ("", " ", "#"):
                current = None  # another top-level key ends the ladder
            lines.append(line)
    new = "\n".join(lines) + "\n"
    if yaml.safe_load(new) != data:
        raise RuntimeError(f"regenerating the comments of {path.name} would change its data")
    if write and new != old:
        path.write_text(new)
    return new, new != old


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m symscale.models.ladders [--write]`: check (or rewrite) the N comments of every ladder file."""
    parser = argparse.ArgumentParser(prog="python -m symscale.models.ladders", description=main.__doc__)
    parser.add_argument("--write", action="store_true", help="rewrite out-of-date files (default: only report)")
    parser.add_argument("--arch", nargs="+", help="only these families (default: all with a ladder file)")
    args = parser.parse_args(argv)
    stale = []
    for arch in args.arch or list_archs():
        try:
            _, changed = regenerate_ladder_comments(arch, write=args.write)
        except SymscaleError as err:
            print(f"{arch}: {err}", file=sys.stderr)
            continue
        if changed:
            stale.append(arch)
            print(f"{arch}: {'rewritten' if args.write else 'out of date'}")
    return 0 if args.write or not stale else 1


if __name__ == "__main__":
    sys.exit(main())
