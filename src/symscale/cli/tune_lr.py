"""`symscale tune-lr`: short runs over a grid of learning rates at one width; records the best for muP."""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from symscale.cli import write_output
from symscale.config import RunConfig, read_yaml_mapping
from symscale.errors import SymscaleError


def add_parser(subparsers) -> None:
    """Register the `symscale tune-lr` subcommand and its options on `subparsers`."""
    p = subparsers.add_parser(
        "tune-lr",
        help="pick the learning rate at the base width by short runs (muP transfers it)",
        description=(
            "Train the family once per learning rate (each a normal, resumable run in OUT/lr-<lr>) and pick "
            "the one with the lowest final validation loss. The choice is written to --record as a partial "
            "RunConfig ({training: {lr: ...}}) that `symscale train --config` reads; muP transfers it to "
            "other widths. Run it at the family's base width."
        ),
    )
    p.add_argument("--arch", required=True, help="model family, e.g. mpnn")
    p.add_argument("--width", required=True, type=int, help="width of the runs (use the family's base_width)")
    p.add_argument("--lrs", required=True, help="comma-separated learning rates, e.g. 1e-4,3e-4,1e-3")
    p.add_argument("--data", default=None, help="dataset path or 'builtin' (default: builtin)")
    p.add_argument("--structures", type=int, default=None, help="structures in each short run's prefix")
    p.add_argument("--out", required=True, help="folder of the runs and of tune_lr.json")
    p.add_argument("--record", default=None, help="YAML file for the chosen lr (default: OUT/best_lr.yaml)")
    p.add_argument("--config", default=None, help="YAML file of RunConfig keys shared by the runs")
    p.add_argument("--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE",
                   help="override a RunConfig key, repeatable")  # fmt: skip
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], default=None, help="device (default: cpu)")
    p.add_argument("--seed", type=int, default=None, help="seed (default 0)")
    p.set_defaults(func=run)


def _lrs(text: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise SymscaleError.invalid("--lrs", text, "comma-separated numbers, e.g. 1e-4,3e-4,1e-3") from None
    if not values or any(v <= 0 for v in values):
        raise SymscaleError.invalid("--lrs", text, "positive learning rates")
    return values


def run(args: argparse.Namespace) -> int:
    """Run `symscale tune-lr` with the parsed `args`; returns the exit status."""
    from symscale.train.tune import tune_learning_rate

    raw = read_yaml_mapping(args.config) if args.config else {}
    raw.update(arch=args.arch, width=args.width)
    flags = {"source": args.data, "n_train": args.structures, "device": args.device, "seed": args.seed}
    config = RunConfig.from_dict(raw).updated({k: v for k, v in flags.items() if v is not None})
    config = config.with_overrides(args.assignments)
    search = tune_learning_rate(config, _lrs(args.lrs), args.out)
    for r in search.runs:
        loss = f"{r['val_loss']:.5g}" if r["val_loss"] is not None else f"{r['status']} ({r['reason']})"
        print(f"lr {r['lr']:<10g} val_loss {loss}")
    if search.best_lr is None:
        print("no run finished; nothing recorded")
        return 1
    record = Path(args.record) if args.record else Path(args.out) / "best_lr.yaml"
    write_output(record, yaml.safe_dump({"training": {"lr": search.best_lr}}), "the best learning rate")
    print(f"best lr {search.best_lr:g} (arch {args.arch}, width {args.width}) recorded in {record}")
    return 0
