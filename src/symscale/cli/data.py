"""`symscale data`: generate the built-in GFN2-xTB dataset, describe a dataset, convert between formats."""

from __future__ import annotations

import argparse
import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from symscale.errors import SymscaleError

FORMATS = ".aselmdb (OMol25/fairchem), ASE .db, extxyz (.xyz/.extxyz); a folder of such files is one dataset"


def add_parser(subparsers) -> None:
    """Register `symscale data` (generate, info, convert) and its options on `subparsers`."""
    p = subparsers.add_parser(
        "data",
        help="generate, describe or convert datasets",
        description=f"Datasets of labelled molecules. Formats: {FORMATS}.",
    )
    sub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    g = sub.add_parser(
        "generate",
        help="generate the built-in GFN2-xTB dataset",
        description=(
            "Generate GFN2-xTB-labelled structures (energies eV, forces eV/A): 75%% QM9 molecules, 25%% "
            "drug-like ones with S/Cl/Br (<= 30 atoms), ETKDGv3 conformers, MMFF94 Langevin MD at 300-1200 K, "
            "4 snapshots per molecule. Written in OMol25's .aselmdb schema (charge 0, spin 1). Reproducible "
            "from the seed for any number of workers; an interrupted run continues where it stopped when "
            "rerun with the same --out and --seed."
        ),
    )
    g.add_argument("--structures", type=int, required=True, metavar="N", help="number of structures to write")
    g.add_argument("--out", required=True, metavar="PATH.aselmdb", help="output file (resumed if it exists)")
    g.add_argument("--workers", type=int, default=None, metavar="K", help="processes (default: one per core)")
    g.add_argument("--seed", type=int, default=0, metavar="S", help="seed of molecules and dynamics (default 0)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.set_defaults(func=run_generate)

    i = sub.add_parser(
        "info",
        help="counts, elements, charge/spin and label statistics of a dataset",
        description=f"Describe a dataset: {FORMATS}. Reads every structure (or --sample of them).",
    )
    i.add_argument("paths", nargs="+", metavar="PATH", help="dataset files or folders (one dataset)")
    _filter_options(i)
    i.add_argument("--sample", type=int, default=None, metavar="N", help="statistics on N seeded structures")
    i.set_defaults(func=run_info)

    c = sub.add_parser(
        "convert",
        help="convert a dataset between .aselmdb, .db and extxyz",
        description=f"Copy every structure of IN to OUT (format from OUT's extension). {FORMATS}.",
    )
    c.add_argument("input", metavar="IN", help="dataset file or folder")
    c.add_argument("output", metavar="OUT", help="output file: .aselmdb, .db, .xyz or .extxyz (replaced)")
    _filter_options(c)
    c.set_defaults(func=run_convert)


def _open_filtered(paths: Any, args: argparse.Namespace) -> Any:
    """`paths` opened with the filter and label-key options of `_filter_options`."""
    from symscale.data.readers import open_dataset

    return open_dataset(
        paths,
        neutral_only=args.neutral_only,
        skip_invalid=args.skip_invalid,
        energy_key=args.energy_key,
        forces_key=args.forces_key,
    )


def _filter_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--neutral-only", action="store_true", help="keep only charge 0 and spin multiplicity 1")
    p.add_argument(
        "--skip-invalid",
        action="store_true",
        help="skip (and count) structures with missing/NaN labels, unknown elements or overlapping atoms "
        "instead of stopping at the first one",
    )
    _label_key_options(p)


def _label_key_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--energy-key", default="energy", help="label key of the energy (MACE-style files: REF_energy)")
    p.add_argument("--forces-key", default="forces", help="label key of the forces (MACE-style files: REF_forces)")


def run_generate(args) -> int:
    """Run `symscale data generate`: write the built-in GFN2-xTB set; returns the exit status."""
    from symscale.data.generate import generate_dataset

    workers = args.workers if args.workers is not None else max(1, len(os.sched_getaffinity(0)))
    r = generate_dataset(args.out, args.structures, workers=workers, seed=args.seed, progress=not args.no_progress)
    rejected = ", ".join(f"{k} {v}" for k, v in sorted(r.rejected.items())) or "none"
    print(
        f"{r.path}: {r.n_structures} structures ({r.n_new} new from {r.n_molecules} molecules in {r.seconds:.1f} s, "
        f"{r.structures_per_s:.1f} structures/s; resumed from {r.resumed_from}); rejected: {rejected}"
    )
    return 0


def run_info(args) -> int:
    """Run `symscale data info`: print counts, elements and label statistics of a dataset."""
    from ase.data import chemical_symbols

    from symscale.data.stats import sample_indices

    ds = _open_filtered(args.paths, args)
    idx = sample_indices(np.arange(len(ds)), args.sample or len(ds))
    n_atoms, energies, e_per_atom, f_sq, f_max = [], [], [], 0.0, 0.0
    elements: Counter[int] = Counter()
    charge_spin: Counter[tuple[int, int]] = Counter()
    for i in idx:
        s = ds[int(i)]
        n_atoms.append(len(s))
        energies.append(s.energy)
        e_per_atom.append(s.energy / len(s))
        f_sq += float((s.forces**2).sum())
        f_max = max(f_max, float(np.linalg.norm(s.forces, axis=1).max()))
        elements.update(chemical_symbols[z] for z in s.numbers.tolist())
        charge_spin[(s.charge, s.spin)] += 1
    n_atoms_arr, e = np.array(n_atoms), np.array(energies)
    print(ds.description)
    print(f"structures: {len(ds)}" + (f" (statistics on {len(idx)})" if len(idx) < len(ds) else ""))
    lo, hi = n_atoms_arr.min(), n_atoms_arr.max()
    print(f"atoms: {n_atoms_arr.sum()} (per structure mean {n_atoms_arr.mean():.1f}, {lo}-{hi})")
    print("elements: " + ", ".join(f"{k} {v}" for k, v in sorted(elements.items(), key=lambda kv: -kv[1])))
    print("charge/spin: " + ", ".join(f"{c:+d}/{m}: {v}" for (c, m), v in sorted(charge_spin.items())))
    print(f"energy (eV): mean {e.mean():.3f}, std {e.std():.3f}, min {e.min():.3f}, max {e.max():.3f}")
    print(f"energy per atom (eV): mean {np.mean(e_per_atom):.3f}, std {np.std(e_per_atom):.3f}")
    print(f"forces (eV/A): RMS component {np.sqrt(f_sq / (3 * n_atoms_arr.sum())):.3f}, max |F| {f_max:.3f}")
    _print_skipped(ds)
    return 0


def run_convert(args) -> int:
    """Run `symscale data convert`: write a dataset (filtered) in another format."""
    from symscale.data.readers import expand_paths, write_structures

    _refuse_same_file(expand_paths(args.input), Path(args.output))
    ds = _open_filtered(args.input, args)
    n = write_structures(args.output, iter(ds))
    print(f"wrote {n} structures to {args.output}")
    _print_skipped(ds)
    return 0


def _refuse_same_file(inputs: list[Path], output: Path) -> None:
    """OUT must not be one of IN's files, by any name (symlink, hard link, relative path): the convert would
    replace the dataset it is reading."""
    if not output.exists():
        return
    for f in inputs:
        if f.exists() and os.path.samefile(f, output):
            raise SymscaleError(
                f"cannot convert {f} into {output}: they are the same file; expected an OUT other than IN"
            )


def _print_skipped(ds) -> None:
    if ds.skipped:
        reasons = ", ".join(f"{k} {v}" for k, v in ds.skip_reasons.most_common())
        print(f"skipped {ds.skipped} invalid structures ({reasons})")
