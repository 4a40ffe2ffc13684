"""How much the MPNN learns in one quickstart run, by how its relative vector enters the messages (issue 16).

    python benchmarks/bench_mpnn_learning.py [--widths 16,64] [--seeds 0] [--inputs inverse,cutoff]
                                             [--out benchmarks/results/mpnn_learning.json]

Each configuration is one run as the quickstart gives it (built-in set, one epoch, its batch size and learning
rate for mpnn, 8 evaluations from 5% of the run), trained one at a time on one thread, with
`model_overrides: {vector_input: ...}` (`inverse`: r_ij / r^2, the default; `cutoff`: r_ij / r_cut, the input
before the change). Printed per run: the validation loss at the first evaluation, the best later one and the drop
between them (issue 16's target: >= 30% for the family's best run), the energy and force terms at the end and
the force cosine. Losses do not depend on the machine's load; the wall time does and is only recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from _common import git_sha, quickstart_config  # benchmarks/ is the script's own folder


def one_run(width: int, seed: int, vector_input: str, folder: Path) -> dict:
    from symscale.train.loop import train_run

    d = quickstart_config("mpnn", width).to_dict()
    d["seed"] = seed
    d["model_overrides"] = {**(d.get("model_overrides") or {}), "vector_input": vector_input}
    d["evaluation"]["checkpoint_every"] = 0
    config = type(quickstart_config("mpnn", width)).from_dict(d)
    out = folder / f"mpnn-w{width}-s{seed}-{vector_input}"
    start = time.perf_counter()
    train_run(config, out, progress=False)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    losses = [r["val_loss"] for r in rows]
    best = min(losses[1:]) if len(losses) > 1 else losses[0]
    return {
        "width": width,
        "seed": seed,
        "vector_input": vector_input,
        "batch_size": config.training.batch_size,
        "lr": config.training.lr,
        "steps": rows[-1]["step"],
        "first_val_loss": losses[0],
        "best_val_loss": best,
        "drop": 1 - best / losses[0],
        "val_losses": losses,
        "final_energy_term": rows[-1]["val_energy_loss"],
        "final_force_term": rows[-1]["val_force_loss"],
        "final_force_cos": rows[-1]["force_cos"],
        "wall_s": time.perf_counter() - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", default="16,64")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--inputs", default="inverse,cutoff", help="vector_input values, comma-separated")
    parser.add_argument("--out", default=None, help="JSON file of the results (default: print only)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-mpnn-") as tmp:
        for width in (int(w) for w in args.widths.split(",")):
            for seed in (int(s) for s in args.seeds.split(",")):
                for vector_input in args.inputs.split(","):  # interleaved: the inputs side by side per width
                    r = one_run(width, seed, vector_input, Path(tmp))
                    results.append(r)
                    print(
                        f"mpnn w{width} seed {seed} {vector_input:8s} val {r['first_val_loss']:.4f} -> "
                        f"{r['best_val_loss']:.4f} (drop {100 * r['drop']:.1f}%), end: energy "
                        f"{r['final_energy_term']:.3f} force {r['final_force_term']:.3f} cos "
                        f"{r['final_force_cos']:.2f}, {r['steps']} steps, {r['wall_s']:.0f} s",
                        flush=True,
                    )
    if args.out:
        from symscale.rundir import write_json

        write_json(
            args.out,
            {"git_sha": git_sha(), "load_average": os.getloadavg(), "torch": torch.__version__, "runs": results},
        )


if __name__ == "__main__":
    main()
