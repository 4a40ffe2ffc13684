"""`symscale models`: list the model families (symmetry, body order, tensor order) and their width ladders."""

from __future__ import annotations

import argparse

from symscale.errors import SymscaleError

_DEFAULT_ELEMENTS = "H C N O F S Cl Br"


def add_parser(subparsers) -> None:
    """Register the `symscale models` subcommand and its options on `subparsers`."""
    p = subparsers.add_parser(
        "models",
        help="list model families and their width ladders",
        description=(
            "List the registered model families with their symmetry group, body order nu, tensor order l, "
            "muP base width and default depth. With --ladder, list the ladder's widths with the exact "
            "parameter count N of each and the depth and lmax the ladder builds them at."
        ),
    )
    p.add_argument(
        "--ladder",
        choices=("cpu", "paper"),
        help="print this width ladder with N per width (cpu: N ~1e3-1e5; paper: N ~1e5-1e7); default: none",
    )
    p.add_argument("--arch", help="only this family (default: all registered families)")
    p.add_argument(
        "--elements",
        nargs="+",
        default=_DEFAULT_ELEMENTS.split(),
        metavar="EL",
        help=f"elements the models are built for, as symbols or atomic numbers; N depends on their number "
        f"(default: {_DEFAULT_ELEMENTS}, the built-in data set)",
    )
    p.set_defaults(func=run)


def _parse_elements(items: list[str]) -> list[int]:
    from ase.data import atomic_numbers

    out = []
    for item in items:
        if item.isdigit():
            out.append(int(item))
        elif item in atomic_numbers:
            out.append(atomic_numbers[item])
        else:
            raise SymscaleError.invalid("element", item, "a chemical symbol (e.g. Cl) or an atomic number")
    return out


def _option_text(value) -> str:
    return "-" if value is None else str(value)


def _print_ladder(arch: str, name: str, elements: list[int]) -> None:
    from symscale.models.ladders import DEPTH_OPTIONS, ladder_option, ladder_rungs

    try:
        rungs = ladder_rungs(arch, name, elements)
    except SymscaleError as err:
        print(f"{arch}: {err}")
        return
    depth = _option_text(ladder_option(arch, name, DEPTH_OPTIONS))
    lmax = _option_text(ladder_option(arch, name, ("lmax",)))
    for r in rungs:
        print(f"{arch:<10} {r.width:>6} {'N=' + format(r.num_parameters, ','):>14} {depth:>5} {lmax:>4}")


def _default_depth(cls) -> str:
    from symscale.models.ladders import DEPTH_OPTIONS, ladder_option

    return _option_text(ladder_option(cls.arch, None, DEPTH_OPTIONS))


def run(args: argparse.Namespace) -> int:
    """Run `symscale models` with the parsed `args`; returns the exit status."""
    from symscale.models.registry import get_family, list_archs

    archs = [args.arch] if args.arch else list_archs()
    families = {arch: get_family(arch) for arch in archs}  # unknown arch -> error before any output
    elements = _parse_elements(args.elements)
    print(f"{'arch':<10} {'group':<6} {'nu':>3} {'l':>4} {'base width':>10} {'depth':>5}")
    for arch in archs:
        cls = families[arch]
        sym = cls.symmetry
        l_text = "-" if sym.l is None else str(sym.l)
        print(f"{arch:<10} {sym.group:<6} {sym.nu:>3} {l_text:>4} {cls.base_width:>10} {_default_depth(cls):>5}")
    if args.ladder:
        print(f"\nladder {args.ladder!r} (N for Z = {elements}; depth and lmax as the ladder builds them):")
        print(f"{'arch':<10} {'width':>6} {'N':>14} {'depth':>5} {'lmax':>4}")
        for arch in archs:
            _print_ladder(arch, args.ladder, elements)
    return 0
