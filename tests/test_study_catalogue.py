"""The catalogue, `symscale runs` and the report read a study's runs through one reader and agree."""

from __future__ import annotations

import json

from symscale import rundir
from symscale.cli import main
from symscale.report.render import load_study
from symscale.study.catalogue import LAWS_COLUMNS, Catalogue, export_laws

# run id -> (status, grid prefix); "planned" runs have a plan file and no directory yet
RUNS = {
    "mpnn-w4-finished": ("finished", 1.0),
    "mpnn-w8-failed": ("failed", 0.3),
    "egnn-w2-running": ("running", 0.1),
    "egnn-w4-planned": ("pending", 0.3),
}


def _study(root):
    """A study directory written with the run directory's own writer, as the study and the loop do."""
    for run_id, (status, prefix) in RUNS.items():
        arch, width = run_id.split("-")[0], int(run_id.split("-")[1][1:])
        run = root / "runs" / run_id
        plan = {"run_id": run_id, "arch": arch, "width": width, "seed": 0, "mode": "architecture"}
        # the failed run's plan was written by an older version (prefix under its old name "fraction")
        rundir.write_plan(run, {**plan, ("fraction" if status == "failed" else "prefix"): prefix})
        if status == "pending":
            continue
        run.mkdir()
        rundir.write_json(run / "run.json", {"arch": arch, "width": width, "N": 100 * width, "mode": "architecture"})
        rundir.write_status(run, status, "non-finite loss" if status == "failed" else None)
        for step in (1, 2):
            line = {"step": step, "fraction": step / 2, "atoms_seen": 1e3 * step, "flops": 1e9 * step,
                    "device_seconds": 36.0 * step, "val_loss": 1.0 / (step * width)}  # fmt: skip
            rundir.append_metrics(run, line)
    with (root / "runs" / "egnn-w2-running" / "metrics.jsonl").open("a") as fh:
        fh.write('{"step": 3, "val')  # the running run is mid-write
    return root


def _cli_rows(capsys, study) -> dict[str, tuple[str, float | None]]:
    assert main(["runs", str(study)]) == 0
    rows = {}
    for line in capsys.readouterr().out.splitlines():
        cells = line.split()
        if cells and cells[0] in RUNS:
            rows[cells[0]] = (cells[4], None if cells[3] == "-" else float(cells[3]))
    return rows


def test_catalogue_cli_and_report_agree_on_every_run(tmp_path, capsys):
    study = _study(tmp_path / "study")
    expected = {run_id: (status, prefix) for run_id, (status, prefix) in RUNS.items()}
    read = {r.run_id: (r.status, r.prefix) for r in Catalogue(study).runs()}
    assert read == expected
    assert not (study / "catalogue.sqlite").exists()  # reading the runs writes nothing
    indexed = {r.run_id: (r.status, r.prefix) for r in Catalogue(study).refresh()}
    assert indexed == expected
    assert Catalogue(study).refresh() == Catalogue(study).runs()  # the index holds what the directories say
    assert _cli_rows(capsys, study) == expected
    data = load_study(study)
    assert {r.run_id: (r.status, r.prefix) for r in data.runs} == expected
    assert {r.run_id: r.reason for r in data.runs}["mpnn-w8-failed"] == "non-finite loss"
    running = {r.run_id: r for r in data.runs}["egnn-w2-running"]
    assert (running.n_evals, running.step) == (2, 2)  # the torn line is skipped, not an error


def test_laws_export_has_finished_runs_only_and_leaves_no_temporary_file(tmp_path):
    study = _study(tmp_path / "study")
    catalogue = Catalogue(study)
    catalogue.refresh()
    assert export_laws(catalogue, study / "laws.csv") == 2  # two evaluations of the one finished run
    assert [p.name for p in study.iterdir() if p.name.startswith(".")] == []
    rows = (study / "laws.csv").read_text().splitlines()
    cells = rows[1].split(",")
    assert cells[:2] == ["mpnn", "mpnn-w4-finished"] and cells[LAWS_COLUMNS.index("prefix")] == "1.0"
    assert json.loads((study / "runs" / "mpnn-w4-finished" / "status.json").read_text())["status"] == "finished"
