"""`symscale export RUN --out FILE`: a trained model as a torch.export program for deployment."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    """Register the `symscale export` subcommand and its options on `subparsers`."""
    p = subparsers.add_parser(
        "export",
        help="export a trained model as a torch.export program (.pt2) for deployment",
        description=(
            "Write a run's model as a torch.export program: one molecule's graph in, energy (eV) and forces "
            "(eV/A) out, with the cutoff, neighbour limit and elements stored beside it. Load it with "
            "`symscale.export.load_exported(FILE).predict(structure)`. Conservative models are exported as "
            "their energy, and forces are its gradient."
        ),
    )
    p.add_argument("checkpoint", metavar="RUN", help="run directory or checkpoint file (.pt)")
    p.add_argument("--out", required=True, help="output file (.pt2)")
    p.add_argument("--dtype", choices=["float64", "float32"], default="float64", help="precision (default float64)")
    p.add_argument("--forces", choices=["direct", "conservative"], default=None, help="override the force mode")
    p.add_argument("--device", default="cpu", help="device the program runs on: cpu, cuda or auto (default cpu)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run `symscale export` with the parsed `args`; returns the exit status."""
    from symscale.export import export_model, load_exported

    path = export_model(args.checkpoint, args.out, dtype=args.dtype, forces=args.forces, device=args.device)
    meta = load_exported(path).metadata
    print(
        f"exported {meta['arch']} (width {meta['width']}, {meta['forces']} forces, {meta['dtype']}, "
        f"elements {meta['elements']}) to {path} (torch.export)"
    )
    return 0
