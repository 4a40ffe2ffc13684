"""`symscale eval`: metrics of a trained checkpoint on any readable dataset."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from symscale.cli import write_output
from symscale.errors import SymscaleError


def add_parser(subparsers) -> None:
    """Register the `symscale eval` subcommand and its options on `subparsers`."""
    p = subparsers.add_parser(
        "eval",
        help="evaluate a checkpoint on a dataset (energy MAE, force MAE, force cosine, equivariance error)",
        description=(
            "Evaluate a trained model on any dataset symscale reads (.aselmdb, ASE .db, extxyz; a folder of "
            "shards is one dataset), in batches. Reports the validation loss of the training objective, the "
            "energy MAE per atom (meV/atom), the force MAE per Cartesian component (meV/A), the mean force "
            "cosine and the equivariance error of the forces under random rotations (meV/A)."
        ),
    )
    p.add_argument("checkpoint", help="run directory or checkpoint file (.pt)")
    p.add_argument("--data", required=True, nargs="+", help="dataset file(s) or folder(s)")
    p.add_argument("--neutral-only", action="store_true", help="keep only charge 0, spin multiplicity 1")
    p.add_argument("--skip-invalid", action="store_true", help="skip (and count) invalid structures")
    p.add_argument("--energy-key", default="energy", help="label key of the energy (MACE-style files: REF_energy)")
    p.add_argument("--forces-key", default="forces", help="label key of the forces (MACE-style files: REF_forces)")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first LIMIT structures")
    p.add_argument("--batch-size", type=int, default=64, help="structures per forward pass (default 64)")
    p.add_argument("--rotations", type=int, default=2, help="random rotations for the equivariance error")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--json", dest="json_out", default=None, help="write the metrics as JSON to this file")
    p.set_defaults(func=run)


def evaluate_checkpoint(
    checkpoint: str | Path,
    data: list[str],
    *,
    neutral_only: bool = False,
    skip_invalid: bool = False,
    limit: int | None = None,
    batch_size: int = 64,
    rotations: int = 2,
    device: str = "cpu",
    energy_key: str = "energy",
    forces_key: str = "forces",
) -> dict:
    """Metrics of `checkpoint` on `data` (see `symscale.train.evaluation.evaluate`)."""
    import numpy as np

    from symscale.data.loader import BatchLoader
    from symscale.data.readers import open_dataset
    from symscale.train.checkpoint import load_model
    from symscale.train.evaluation import evaluate

    if limit is not None and limit < 1:
        raise SymscaleError.invalid("limit", limit, "an integer >= 1 (structures)")
    if rotations < 1:
        raise SymscaleError.invalid("rotations", rotations, "an integer >= 1")
    model, ckpt = load_model(checkpoint, device=device)
    dataset = open_dataset(
        data, neutral_only=neutral_only, skip_invalid=skip_invalid, energy_key=energy_key, forces_key=forces_key
    )
    n = len(dataset) if limit is None else min(limit, len(dataset))
    if n == 0:
        raise SymscaleError(f"dataset {dataset.description} has no structures to evaluate")
    loader = BatchLoader(dataset, np.arange(n), batch_size, cutoff=model.cutoff, max_neighbors=model.max_neighbors)
    batches = [b.to(device) for b in loader]
    force_rms = float((ckpt.get("stats") or {}).get("force_rms", 1.0))
    metrics: dict[str, Any] = evaluate(
        model, batches, force_rms, equivariance_batch=batches[0], equivariance_rotations=rotations
    )
    metrics.update(
        {
            "checkpoint": str(checkpoint),
            "data": dataset.description,
            "structures": n,
            "atoms": int(sum(b.num_atoms for b in batches)),
            "skipped_invalid": int(getattr(dataset, "skipped", 0)),
            "arch": model.arch,
            "force_mode": model.force_mode,
        }
    )
    return metrics


def check_arguments(args: argparse.Namespace) -> None:
    """Counts that must be positive, and the --json folder, checked before the checkpoint is loaded."""
    for flag, value in (("--limit", args.limit), ("--batch-size", args.batch_size), ("--rotations", args.rotations)):
        if value is not None and value < 1:
            raise SymscaleError.invalid(flag, value, "an integer >= 1")
    if args.json_out and not Path(args.json_out).parent.is_dir():
        raise SymscaleError(
            f"cannot write metrics to {args.json_out}: folder {Path(args.json_out).parent} does not exist"
        )


def run(args: argparse.Namespace) -> int:
    """Run `symscale eval` with the parsed `args`; returns the exit status."""
    check_arguments(args)
    metrics = evaluate_checkpoint(
        args.checkpoint,
        args.data,
        neutral_only=args.neutral_only,
        skip_invalid=args.skip_invalid,
        limit=args.limit,
        batch_size=args.batch_size,
        rotations=args.rotations,
        device=args.device,
        energy_key=args.energy_key,
        forces_key=args.forces_key,
    )
    print(f"{metrics['arch']} on {metrics['data']}: {metrics['structures']} structures, {metrics['atoms']} atoms")
    rows = [
        ("loss (training objective)", metrics["val_loss"], ""),
        ("energy MAE", metrics["energy_mae_mev_per_atom"], "meV/atom"),
        ("force MAE", metrics["force_mae_mev_per_A"], "meV/A"),
        ("force cosine", metrics["force_cos"], ""),
        ("equivariance error, forces", metrics.get("equivariance_error_forces", float("nan")), "meV/A"),
        ("equivariance error, energy", metrics.get("equivariance_error_energy", float("nan")), "meV/atom"),
    ]
    for name, value, unit in rows:
        print(f"  {name:<28} {value:12.4f} {unit}")
    if metrics["skipped_invalid"]:
        print(f"  skipped {metrics['skipped_invalid']} invalid structures")
    if args.json_out:
        write_output(args.json_out, json.dumps(metrics, indent=2), "metrics")
    return 0
