"""The catalogue's laws table: the group's model options and every term of the validation loss per evaluation."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from symscale.study.catalogue import Catalogue, export_laws


def _run(root: Path, run_id: str, overrides: dict | None, forces: str = "direct") -> None:
    runs = root / "runs"
    (runs / run_id).mkdir(parents=True)
    config = {"arch": "esen", "width": 8, "forces": forces, **({"model_overrides": overrides} if overrides else {})}
    plan = {"run_id": run_id, "arch": "esen", "width": 8, "seed": 0, "mode": "architecture", "fraction": 1.0}
    (runs / f"{run_id}.plan.json").write_text(json.dumps({**plan, "config": config}))
    (runs / run_id / "run.json").write_text(json.dumps({"arch": "esen", "width": 8, "N": 1000}))
    (runs / run_id / "status.json").write_text(json.dumps({"status": "finished"}))
    lines = [
        {"step": s, "fraction": s / 2, "atoms_seen": 1e3 * s, "flops": 1e9 * s, "device_seconds": 3.6 * s,
         "val_loss": 1.0 / s, "val_energy_loss": 0.3 / s, "val_force_loss": 0.7 / s,
         "energy_mae_mev_per_atom": 20.0 / s, "force_mae_mev_per_A": 90.0 / s}
        for s in (1, 2)
    ]  # fmt: skip
    (runs / run_id / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))


def test_laws_csv_carries_options_and_the_loss_terms(tmp_path):
    _run(tmp_path, "esen-l2", {"lmax": 2})
    _run(tmp_path, "esen-l4", {"lmax": 4}, forces="conservative")
    _run(tmp_path, "esen-plain", None)
    n = export_laws(Catalogue(tmp_path), tmp_path / "laws.csv") if Catalogue(tmp_path).refresh() else 0
    rows = list(csv.DictReader((tmp_path / "laws.csv").open()))
    assert n == len(rows) == 6
    by_run = {r["run"]: r for r in rows if r["step"] == "2"}
    assert {k: v["options"] for k, v in by_run.items()} == {
        "esen-l2": "l2",
        "esen-l4": "l4-conservative",
        "esen-plain": "",
    }
    last = by_run["esen-l2"]
    assert float(last["loss_energy"]) == 0.15 and float(last["loss_force"]) == 0.35 and float(last["loss"]) == 0.5
    assert float(last["energy_mae_mev_per_atom"]) == 10.0 and float(last["force_mae_mev_per_A"]) == 45.0
