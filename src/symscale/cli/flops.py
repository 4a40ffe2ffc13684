"""`symscale flops`: measured N, kappa (raw and corrected) and FLOPs per atom of a family or a ladder."""

from __future__ import annotations

import argparse

from symscale.errors import SymscaleError


def add_parser(subparsers) -> None:
    """Register the `symscale flops` subcommand and its options on `subparsers`."""
    p = subparsers.add_parser(
        "flops",
        help="measure N, kappa and FLOPs per atom of a family at a width or along a ladder",
        description=(
            "Count FLOPs with torch's FlopCounterMode over one forward (kappa) and one forward + backward "
            "(training FLOPs) of a reference batch: 64 toy molecules, or the first 64 structures of --data. "
            "kappa = forward FLOPs / (atoms x N); 'raw' counts matmuls only (torch's registry), 'corrected' "
            "adds elementwise, gather and scatter work (symscale.train.compute)."
        ),
    )
    p.add_argument("--arch", required=True, help="model family, e.g. mpnn")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--width", type=int, help="one width")
    group.add_argument("--ladder", choices=["cpu", "paper"], help="every width of a ladder preset")
    p.add_argument("--data", default=None, help="dataset path for the reference batch (default: toy molecules)")
    p.add_argument("--structures", type=int, default=64, help="structures in the reference batch (default 64)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run `symscale flops` with the parsed `args`; returns the exit status."""
    from symscale.train.compute import measure_family, reference_batch

    overrides = {}
    if args.ladder:
        from symscale.models.ladders import ladder_overrides, load_ladder

        widths = load_ladder(args.arch, args.ladder)
        overrides = ladder_overrides(args.arch, args.ladder)  # the ladder's model options (eSEN paper: lmax 4)
    else:
        if args.width < 1:
            raise SymscaleError.invalid("width", args.width, "an integer >= 1")
        widths = [args.width]
    dataset = None
    if args.data:
        from symscale.data.readers import open_dataset

        dataset = open_dataset(args.data)
        if len(dataset) < args.structures:
            raise SymscaleError.invalid("--structures", args.structures, f"at most {len(dataset)} (the data's size)")
    batch = reference_batch(args.structures, dataset=dataset)
    what = (
        f"the first {batch.num_structures} structures of {args.data}"
        if args.data
        else (f"{batch.num_structures} toy molecules (a stand-in: pass --data for the study's own structures)")
    )
    print(
        f"reference batch: {what}; {batch.num_atoms} atoms, {batch.num_edges} edges, "
        f"{batch.num_atoms / batch.num_structures:.1f} atoms per structure, "
        f"{batch.num_edges / batch.num_atoms:.1f} edges per atom"
    )
    if overrides:
        print(f"model options of the {args.ladder} ladder: {overrides}")
    header = f"{'arch':<10} {'width':>6} {'N':>12} {'kappa_raw':>10} {'kappa':>10}"
    print(f"{header} {'fwd FLOP/atom':>14} {'train FLOP/atom':>16}")
    for w in widths:
        f = measure_family(args.arch, w, batch, **overrides)
        print(
            f"{f.arch:<10} {f.width:>6} {f.num_parameters:>12,} {f.kappa_raw:>10.3f} {f.kappa_corrected:>10.3f} "
            f"{f.forward_flops_per_atom:>14.4g} {f.train_flops_per_atom:>16.4g}"
        )
    return 0
