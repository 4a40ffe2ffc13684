"""`symscale train`: one training run (single epoch, schedule-free AdamW, muP, measured compute, resumable)."""

from __future__ import annotations

import argparse

from symscale.config import RunConfig, read_yaml_mapping

EPILOG = """\
common RunConfig keys for --set / --config (defaults; all keys: symscale.config.allowed_keys()):
  n_val=200                 structures in the fixed validation set
  split_seed=0              seed of the validation set and of the nested prefixes
  batch_size=64             structures per step
  lr=1e-3                   schedule-free AdamW learning rate at the base width (muP scales it)
  warmup_steps=100          linear warmup (capped at 10% of the run)
  weight_decay=0.0          decoupled weight decay
  grad_clip=10.0            maximum gradient norm (none: off)
  energy_weight=1.0         weight of the per-atom energy error (units of the force RMS x 1 Angstrom)
  force_weight=1.0          weight of the mean force-error norm (units of the force RMS)
  eval_points=24            log-spaced evaluations from eval_first_fraction=0.01 of the run to its end
  checkpoint_every=1        checkpoint at every k-th evaluation (0: only at the end)
  divergence_factor=1000    failed as diverged when val_loss > this x the first evaluation's
  divergence_patience=6     ... or when it rose at this many evaluations in a row above the first (0: off)
  dtype=float32             float32 | float64
  precision=fp32            fp32 | bf16 (bf16 autocast of the training step, CPU or CUDA; weights, losses and
                            evaluations stay float32; autocast_bf16=true is the old name)
  tf32=false                TF32 matmuls on CUDA
  compile=off               on: torch.compile of the forward (inductor, dynamic shapes; needs a C++ compiler on
                            CPU; eager with one warning when compilation fails); pays only in long runs
  model_overrides={num_layers: 4}   family options
"""


def add_parser(subparsers) -> None:
    """Register the `symscale train` subcommand and its options on `subparsers`."""
    p = subparsers.add_parser(
        "train",
        help="train one model on a nested training prefix (resumes an existing run directory)",
        description=(
            "Train one family at one width for one pass over a nested training prefix, evaluating on a fixed "
            "validation set at log-spaced points and recording atoms seen (D), FLOPs (C) and device seconds. "
            "Rerunning with the same --out resumes from the last checkpoint; a finished run is not retrained. "
            "Settings not given here come from --config, then from the RunConfig defaults."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--arch", required=True, help="model family (see `symscale models`), e.g. mpnn, egnn, gemnet_oc, esen"
    )
    p.add_argument("--width", required=True, type=int, help="the family's width (channels); N grows with it")
    p.add_argument(
        "--data",
        default=None,
        help="dataset: a file or folder (.aselmdb, ASE .db, extxyz), or 'builtin' for the built-in GFN2-xTB set "
        "(config default: builtin)",
    )
    p.add_argument(
        "--val-data",
        default=None,
        help="separate validation data (file or folder; data.val_source); default: n_val structures carved out "
        "of --data",
    )
    p.add_argument(
        "--structures",
        type=int,
        default=None,
        help="structures in the nested training prefix (data.n_train; default: all non-validation structures)",
    )
    p.add_argument(
        "--energy-key", default=None, help="label key of the energy in --data (default energy; MACE: REF_energy)"
    )
    p.add_argument(
        "--forces-key", default=None, help="label key of the forces in --data (default forces; MACE: REF_forces)"
    )
    p.add_argument("--out", required=True, help="run directory (created; an existing one is resumed)")
    p.add_argument("--config", default=None, help="YAML file of RunConfig keys (nested, dotted or flat)")
    p.add_argument(
        "--set",
        dest="assignments",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one RunConfig key, repeatable: --set training.lr=3e-4 --set n_val=500",
    )
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], default=None, help="device (default: cpu)")
    p.add_argument("--seed", type=int, default=None, help="seed of initialisation, data order, rotations (default 0)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--epochs", type=int, default=None, help="passes over the prefix (default 1, the study's protocol)")
    p.add_argument(
        "--augment",
        choices=["none", "so3", "o3"],
        default=None,
        help="random rotation (so3) or rotation+inversion (o3) per structure per step (default none)",
    )
    p.add_argument(
        "--symmetry-loss",
        type=int,
        default=None,
        metavar="M",
        help="add lambda * mean loss over M random rotations of each input (default 0: off; the study: 5)",
    )
    p.add_argument("--symmetry-weight", type=float, default=None, help="lambda of the symmetry loss (default 1.0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (train.log is always written)")
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """RunConfig from --config, then the explicit options, then --set (later wins)."""
    raw = read_yaml_mapping(args.config) if args.config else {}
    raw.update(arch=args.arch, width=args.width)
    cfg = RunConfig.from_dict(raw)
    flags = {
        "source": args.data,
        "val_source": args.val_data,
        "n_train": args.structures,
        "energy_key": args.energy_key,
        "forces_key": args.forces_key,
        "device": args.device,
        "seed": args.seed,
        "threads": args.threads,
        "epochs": args.epochs,
        "augment": args.augment,
        "symmetry_loss_rotations": args.symmetry_loss,
        "symmetry_loss_weight": args.symmetry_weight,
    }
    cfg = cfg.updated({k: v for k, v in flags.items() if v is not None})
    return cfg.with_overrides(args.assignments)


def run(args: argparse.Namespace) -> int:
    """Run `symscale train` with the parsed `args`; returns the exit status."""
    from symscale.train.loop import train_run

    config = config_from_args(args)
    result = train_run(config, args.out, progress=not args.no_progress)
    final = result.final or {}
    if result.status != "finished":
        print(f"run {result.out_dir} failed at step {result.steps}: {result.reason}")
        return 1
    print(
        f"run {result.out_dir} finished: {result.steps} steps, N = {result.num_parameters}, "
        f"val_loss = {final.get('val_loss', float('nan')):.5g}, "
        f"force MAE = {final.get('force_mae_mev_per_A', float('nan')):.4g} meV/A, "
        f"C = {final.get('flops', 0):.3g} FLOPs"
    )
    return 0
