"""Learning-rate search under muP: short runs over a grid of learning rates at a family's base width.

muP makes the best learning rate transfer across widths, so it is searched once per family at its base
width and reused at every other width. Each trial is an ordinary run (`train_run`) in `out/lr-<lr>/`, so a
search resumes like any run.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from symscale import rundir
from symscale.config import RunConfig
from symscale.train.loop import train_run


@dataclass(frozen=True)
class LrSearch:
    """Short runs over a grid of learning rates; the best by final validation loss (failed runs excluded)."""

    best_lr: float | None
    runs: list[dict]  # {"lr", "status", "val_loss", "reason", "run_dir"}

    def to_dict(self) -> dict:
        return {"best_lr": self.best_lr, "runs": list(self.runs)}


def best_learning_rate(runs: list[dict]) -> float | None:
    """The "lr" of the run with the lowest finite final "val_loss" (None when no run has one)."""
    ok = [r for r in runs if r.get("val_loss") is not None and math.isfinite(r["val_loss"])]
    return min(ok, key=lambda r: r["val_loss"])["lr"] if ok else None


def tune_learning_rate(
    config: RunConfig, lrs: list[float], out_dir: str | os.PathLike, *, dataset: Any = None, progress: bool = False
) -> LrSearch:
    """Train `config` once per learning rate in `lrs` (runs in out_dir/lr-<lr>, resumable) and pick the lr
    with the lowest final validation loss. Tune at the family's base width: muP transfers it to other widths."""
    out = Path(out_dir)
    runs = []
    for lr in lrs:
        result = train_run(config.updated({"lr": lr}), out / f"lr-{lr:g}", progress=progress, dataset=dataset)
        val = result.final["val_loss"] if result.final and result.status == "finished" else None
        runs.append({"lr": lr, "status": result.status, "val_loss": val, "reason": result.reason,
                     "run_dir": str(result.out_dir)})  # fmt: skip
    search = LrSearch(best_learning_rate(runs), runs)
    rundir.write_json(out / "tune_lr.json", {**search.to_dict(), "arch": config.arch, "width": config.width})
    return search
