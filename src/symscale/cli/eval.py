"""`symscale eval`: metrics of a trained checkpoint on any readable dataset.

Which structures (`--split`): on the run's own dataset (no `--data`, or `--data` naming the files the run
trained on, as its checkpoint's configuration records them) the run's split is rebuilt exactly as training
built it (`symscale.data.prefix.run_split`: same seed, same validation size, same nested prefix): `val` (the
default) is its validation set, `train` its training prefix, `all` every structure. On any other data there
is no split: `all` is the default and `val` or `train` is a one-line error. The run's own data is read as
the run read it (its neutral filter and label keys, from its configuration); `--neutral-only`,
`--skip-invalid`, `--energy-key` and `--forces-key` apply to other data.
"""

from __future__ import annotations

import argparse
import itertools
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from symscale.cli import progress_bar, write_output
from symscale.errors import SymscaleError

SPLITS = ("val", "train", "all")


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
    p.add_argument(
        "--data",
        nargs="+",
        default=None,
        help="dataset file(s) or folder(s) (default: the data the run trained on, as its checkpoint records it)",
    )
    p.add_argument(
        "--split",
        choices=SPLITS,
        default=None,
        help="on the run's own data: val (its validation set), train (its training prefix) or all; other data "
        "has no split, only all (default: val on the run's own data, else all)",
    )
    p.add_argument("--neutral-only", action="store_true", help="keep only charge 0, spin multiplicity 1")
    p.add_argument("--skip-invalid", action="store_true", help="skip (and count) invalid structures")
    p.add_argument("--energy-key", default="energy", help="label key of the energy (MACE-style files: REF_energy)")
    p.add_argument("--forces-key", default="forces", help="label key of the forces (MACE-style files: REF_forces)")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first LIMIT structures")
    p.add_argument("--batch-size", type=int, default=64, help="structures per forward pass (default 64)")
    p.add_argument("--rotations", type=int, default=2, help="random rotations for the equivariance error")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--json", dest="json_out", default=None, help="write the metrics as JSON to this file")
    p.add_argument("--quiet", action="store_true", help="no progress bar (it is drawn only on a terminal anyway)")
    p.set_defaults(func=run)


def _resolved(paths: Any) -> set[Path]:
    paths = [paths] if isinstance(paths, str | Path) else list(paths)
    return {Path(p).expanduser().resolve() for p in paths}


def trained_paths(config) -> set[Path]:
    """The files the run of `config` trained on (the built-in set's cache file for source "builtin")."""
    d = config.data
    if d.source == "builtin":
        from symscale.data.builtin import builtin_path

        return _resolved([builtin_path(d.builtin_structures, seed=d.builtin_seed)])
    return _resolved(d.source)


def select_structures(
    ckpt: dict, data: list[str] | None, split: str | None, open_foreign: Callable[[list[str]], Any]
) -> tuple[Any, Any, str]:
    """(dataset, indices of the structures to evaluate, split name): the run's split on its own data (see the
    module docstring), every structure of foreign data; `open_foreign(paths)` opens data that is not the run's."""
    import numpy as np

    from symscale.config import RunConfig
    from symscale.data.prefix import open_data, run_split

    config = RunConfig.from_dict(ckpt["config"]) if isinstance(ckpt.get("config"), dict) else None
    own = config is not None and (data is None or _resolved(data) == trained_paths(config))
    if data is None and not own:
        raise SymscaleError("eval: this checkpoint records no training configuration; give the data with --data")
    if not own:
        assert data is not None  # no data and not the run's own: refused above
        if split not in (None, "all"):
            raise SymscaleError(
                f"split {split!r} does not exist for {' '.join(data)}: it is not the data the run trained on "
                "(only its own data has a train/val split); expected --split all"
            )
        dataset = open_foreign(data)
        return dataset, np.arange(len(dataset)), "all"
    assert config is not None  # own data implies a recorded configuration
    split = split or "val"
    if config.data.source == "builtin" and not all(p.is_file() for p in trained_paths(config)):
        raise SymscaleError(
            f"eval: the run's built-in dataset is not in the cache ({', '.join(map(str, trained_paths(config)))}); "
            "expected it there (a run or study on the built-in data writes it) or the data given with --data"
        )
    dataset = open_data(config)
    if split == "all":
        return dataset, np.arange(len(dataset)), "all"
    dataset, train, val, _ = run_split(config, dataset)
    return dataset, (val if split == "val" else train), split


def _streamed(batches: Iterator, device: str, tally: dict[str, int], progress: Callable | None, total: int) -> Iterator:
    """The batches on `device`, their atoms counted into `tally`, `progress(n, total)` after each batch."""
    for b in batches:
        b = b.to(device)
        tally["atoms"] += b.num_atoms
        yield b
        if progress is not None:
            progress(b.num_structures, total)


def evaluate_checkpoint(
    checkpoint: str | Path,
    data: list[str] | None,
    *,
    split: str | None = None,
    neutral_only: bool = False,
    skip_invalid: bool = False,
    limit: int | None = None,
    batch_size: int = 64,
    rotations: int = 2,
    device: str = "cpu",
    energy_key: str = "energy",
    forces_key: str = "forces",
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Metrics of `checkpoint` on the `split` of `data` (module docstring; see
    `symscale.train.evaluation.evaluate`); `progress(n, total)` is called after each batch of n structures."""
    import numpy as np

    from symscale.data.loader import BatchLoader
    from symscale.data.readers import open_dataset
    from symscale.train.checkpoint import load_model
    from symscale.train.evaluation import evaluate

    if limit is not None and limit < 1:
        raise SymscaleError.invalid("limit", limit, "an integer >= 1 (structures)")
    if rotations < 1:
        raise SymscaleError.invalid("rotations", rotations, "an integer >= 1")
    if split is not None and split not in SPLITS:
        raise SymscaleError.invalid("split", split, " | ".join(SPLITS))
    model, ckpt = load_model(checkpoint, device=device)

    def open_foreign(paths: list[str]):
        return open_dataset(
            paths, neutral_only=neutral_only, skip_invalid=skip_invalid, energy_key=energy_key, forces_key=forces_key
        )

    dataset, indices, split = select_structures(ckpt, data, split, open_foreign)
    indices = np.asarray(indices)[: len(indices) if limit is None else limit]
    n = len(indices)
    if n == 0:
        raise SymscaleError(f"dataset {dataset.description} has no structures to evaluate (split {split})")
    loader = iter(BatchLoader(dataset, indices, batch_size, cutoff=model.cutoff, max_neighbors=model.max_neighbors))
    first = next(loader).to(device)  # also the batch of the equivariance error
    tally = {"atoms": 0}
    batches = _streamed(itertools.chain([first], loader), device, tally, progress, n)
    force_rms = float((ckpt.get("stats") or {}).get("force_rms", 1.0))
    metrics: dict[str, Any] = evaluate(
        model, batches, force_rms, equivariance_batch=first, equivariance_rotations=rotations
    )
    metrics.update(
        {
            "checkpoint": str(checkpoint),
            "data": getattr(dataset, "description", "dataset"),
            "split": split,
            "structures": n,
            "atoms": int(tally["atoms"]),
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
    with progress_bar(None, "eval", quiet=args.quiet, unit="structures") as bar:
        metrics = _evaluate(args, bar)
    print(
        f"{metrics['arch']} on {metrics['data']} ({metrics['split']}): {metrics['structures']} structures, "
        f"{metrics['atoms']} atoms"
    )
    _print_metrics(metrics)
    if args.json_out:
        write_output(args.json_out, json.dumps(metrics, indent=2), "metrics")
    return 0


def _evaluate(args: argparse.Namespace, bar) -> dict:
    return evaluate_checkpoint(
        args.checkpoint,
        args.data,
        split=args.split,
        neutral_only=args.neutral_only,
        skip_invalid=args.skip_invalid,
        limit=args.limit,
        batch_size=args.batch_size,
        rotations=args.rotations,
        device=args.device,
        energy_key=args.energy_key,
        forces_key=args.forces_key,
        progress=lambda n, total: _advance(bar, n, total),
    )


def _advance(bar, n: int, total: int) -> None:
    if bar.total != total:
        bar.reset(total=total)
    bar.update(n)


def _print_metrics(metrics: dict) -> None:
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
