"""`symscale md`: molecular dynamics with a trained model through ASE."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from symscale.cli import progress_bar, write_output
from symscale.errors import SymscaleError


def add_parser(subparsers) -> None:
    """Register the `symscale md` subcommand and its options on `subparsers`."""
    p = subparsers.add_parser(
        "md",
        help="run molecular dynamics with a trained model (ASE, NVE or Langevin)",
        description=(
            "Run NVE (velocity Verlet) or Langevin molecular dynamics of one molecule with a trained model and "
            "report the total-energy drift per atom per picosecond. The drift is meaningful for models with "
            "conservative forces; direct-force models (the paper's setting) do not conserve energy by "
            "construction, and the report says so."
        ),
    )
    p.add_argument("checkpoint", help="run directory or checkpoint file (.pt)")
    p.add_argument("--structure", required=True, help="starting structure, any file ASE reads (xyz, extxyz, ...)")
    p.add_argument("--steps", type=int, default=1000, help="number of MD steps (default 1000)")
    p.add_argument("--dt", type=float, default=0.5, help="time step in fs (default 0.5)")
    p.add_argument("--temperature", type=float, default=300.0, help="initial/bath temperature in K (default 300)")
    p.add_argument("--thermostat", choices=["nve", "langevin"], default="nve", help="integrator (default nve)")
    p.add_argument("--friction", type=float, default=0.01, help="Langevin friction in 1/fs (default 0.01)")
    p.add_argument("--interval", type=int, default=10, help="write every INTERVAL-th frame (default 10)")
    p.add_argument("--out", default="traj.xyz", help="trajectory file, extxyz (default traj.xyz)")
    p.add_argument(
        "--forces",
        choices=["direct", "conservative"],
        default=None,
        help="override the checkpoint's force mode (conservative: -dE/dx of the energy head)",
    )
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial velocities (default 0)")
    p.add_argument("--json", dest="json_out", default=None, help="also write the summary as JSON to this file")
    p.add_argument("--quiet", action="store_true", help="no progress bar (it is drawn only on a terminal anyway)")
    p.set_defaults(func=run)


def check_arguments(args: argparse.Namespace) -> None:
    """Counts and physical values that must be positive, and the --json folder, checked before any work."""
    for flag, value in (("--steps", args.steps), ("--interval", args.interval)):
        if value < 1:
            raise SymscaleError.invalid(flag, value, "an integer >= 1")
    if not args.dt > 0:
        raise SymscaleError.invalid("--dt", args.dt, "a positive time step in fs")
    if not args.temperature >= 0:
        raise SymscaleError.invalid("--temperature", args.temperature, "a temperature >= 0 K")
    if args.thermostat == "langevin" and not args.friction > 0:
        raise SymscaleError.invalid("--friction", args.friction, "a positive friction in 1/fs")
    if args.json_out and not Path(args.json_out).parent.is_dir():
        raise SymscaleError(f"cannot write --json {args.json_out}: folder {Path(args.json_out).parent} does not exist")


def run(args: argparse.Namespace) -> int:
    """Run `symscale md` with the parsed `args`; returns the exit status."""
    from ase.io import read

    from symscale.ase import SymscaleCalculator, run_md

    check_arguments(args)
    path = Path(args.structure)
    if not path.is_file():
        raise SymscaleError(f"structure file {str(path)!r} does not exist")
    try:
        atoms = read(path)
    except Exception as err:  # ASE raises many types for unreadable files
        raise SymscaleError(f"cannot read structure {str(path)!r}: {err}") from None
    calc = SymscaleCalculator(args.checkpoint, device=args.device, forces=args.forces)
    with progress_bar(args.steps, "md", quiet=args.quiet, unit="steps") as bar:
        result = run_md(
            atoms,
            calc,
            steps=args.steps,
            dt_fs=args.dt,
            temperature_k=args.temperature,
            thermostat=args.thermostat,
            friction_per_fs=args.friction,
            seed=args.seed,
            trajectory=args.out,
            interval=args.interval,
            on_step=lambda step: bar.update(1),
        )
    conservative = calc.model.force_mode == "conservative"
    summary = {
        "steps": args.steps,
        "dt_fs": args.dt,
        "thermostat": args.thermostat,
        "force_mode": calc.model.force_mode,
        "energy_drift_ev_per_atom_per_ps": result.drift_ev_per_atom_per_ps,
        "max_energy_deviation_ev_per_atom": result.max_deviation_ev_per_atom,
        "mean_temperature_k": float(result.temperature_k.mean()),
        "trajectory": str(args.out),
    }
    print(f"{args.steps} steps of {args.dt} fs ({args.thermostat}), trajectory in {args.out}")
    print(f"mean temperature       {summary['mean_temperature_k']:.1f} K")
    print(f"energy drift           {1000 * summary['energy_drift_ev_per_atom_per_ps']:.3f} meV/atom/ps")
    print(f"max energy deviation   {1000 * summary['max_energy_deviation_ev_per_atom']:.3f} meV/atom")
    if args.thermostat != "nve":
        print("note: a thermostat exchanges energy with a bath; drift is only a conservation test for NVE")
    if not conservative:
        print(
            "note: this model predicts forces directly (not -dE/dx), so energy is not conserved by construction; "
            "use a conservative model (or --forces conservative) to test energy conservation"
        )
    if args.json_out:
        write_output(args.json_out, json.dumps(summary, indent=2), "the MD summary")
    return 0
