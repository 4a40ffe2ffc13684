"""The learning-rate stage of a study (issue 13 item 1): sweeps before the grid, the best rate to the runs,
rerun-safe, listed by the dry run; the paper preset tunes at about 1M parameters."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from fake_runs import fake_lr_run
from symscale.errors import SymscaleError
from symscale.models.ladders import count_parameters
from symscale.study.runner import run_study
from symscale.study.spec import expand_runs, load_spec
from symscale.study.tuning import estimate_sweeps, format_sweeps, sweeps

LRS = [1e-3, 3e-2, 1.0, 1e3]  # 1e3 fails (fake_lr_run: NaN above 100); 3e-2 is the fake optimum


def _spec(tmp_path: Path, **tune) -> Path:
    data = tmp_path / "data.xyz"
    data.write_text("")  # the fake run function never reads it
    raw = {
        "name": "tuned",
        "dataset": {"path": str(data), "val": 5, "size_hint": {"structures": 200, "atoms_per_structure": 10}},
        "families": [{"arch": "mpnn", "widths": [3, 5]}, {"arch": "egnn", "widths": [2, 4]}],
        "evaluation": {"eval_points": 3},
        "training": {"lr": 1e-3},
        "executor": {"kind": "local", "workers": 1, "threads_per_worker": 1},
        "report": False,
        "fits": {"bootstrap": 20},  # the fits are not what these tests are about
        "tune": {"lrs": LRS, "width": {"mpnn": 4}, "prefix": 0.5, **tune},
    }
    path = tmp_path / "tuned.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_sweeps_pick_the_best_rate_and_hand_it_to_the_family_runs(tmp_path):
    spec, study, lines = load_spec(_spec(tmp_path)), tmp_path / "study", []
    result = run_study(spec, study, run_fn=fake_lr_run, out=lines.append)
    assert (result.finished, result.failed) == (4, 0)
    for arch, width in (("mpnn", 4), ("egnn", 2)):  # egnn: no width given, its smallest
        record = json.loads((study / "tune" / f"{arch}.json").read_text())
        assert record["best_lr"] == pytest.approx(3e-2) and record["width"] == width
        assert [r["status"] for r in record["runs"]] == ["finished", "finished", "finished", "failed"]
    plans = [json.loads(p.read_text()) for p in (study / "runs").glob("*.plan.json")]
    assert len(plans) == 4 and all(p["config"]["training"]["lr"] == pytest.approx(3e-2) for p in plans)
    # rerun: the finished sweeps are not repeated and the grid keeps its ids
    stamps = {p: p.stat().st_mtime_ns for p in (study / "tune").rglob("metrics.jsonl")}
    again = []
    assert run_study(spec, study, run_fn=fake_lr_run, out=again.append).finished == 4
    assert not any("learning-rate stage:" in line for line in again)
    assert {p: p.stat().st_mtime_ns for p in (study / "tune").rglob("metrics.jsonl")} == stamps
    assert any("all 4 runs" in line for line in again)


def test_a_sweep_where_every_rate_fails_stops_the_study_before_the_grid(tmp_path):
    spec = load_spec(_spec(tmp_path, lrs=[500.0, 1e3]))
    with pytest.raises(SymscaleError, match="learning-rate sweep of mpnn failed"):
        run_study(spec, tmp_path / "study", run_fn=fake_lr_run, out=lambda _: None)
    assert not list((tmp_path / "study" / "runs").glob("*.plan.json"))


def test_the_dry_run_lists_a_tuning_stage_per_family(tmp_path):
    spec = load_spec(_spec(tmp_path))
    stages, grid = estimate_sweeps(spec, measure_kappa=False)
    assert len(grid) == 4 and [len(e) for _, e in stages] == [4, 4]
    text = format_sweeps(stages)
    assert "tune mpnn" in text and "width     4" in text and "tune egnn" in text
    assert "lrs [0.001, 0.03, 1, 1000]" in text and "4 runs at prefix 0.5" in text
    assert "no learning-rate stage" in format_sweeps(estimate_sweeps(load_spec("quickstart"), measure_kappa=False)[0])


def test_bad_tune_sections_are_one_line_errors(tmp_path):
    with pytest.raises(SymscaleError, match="tune.prefix"):
        load_spec(_spec(tmp_path, prefix=0.0))
    with pytest.raises(SymscaleError, match="not both"):
        load_spec(_spec(tmp_path, fraction=0.3))  # the deprecated name beside the new one
    path = _spec(tmp_path)
    raw = yaml.safe_load(path.read_text())
    raw["tune"]["fraction"] = raw["tune"].pop("prefix")  # a spec written before the rename
    path.write_text(yaml.safe_dump(raw))
    assert load_spec(path).tune.prefix == 0.5  # the old name still reads
    with pytest.raises(SymscaleError, match="unknown key 'steps' in tune"):
        load_spec(_spec(tmp_path, steps=3))


def test_the_paper_preset_tunes_every_family_at_about_a_million_parameters():
    spec = load_spec("paper")
    assert load_spec("quickstart").tune is None  # the quickstart keeps its shipped rates
    elements = list(range(1, 84))  # OMol25-like: Z = 1..83 embedded
    assert {sw.arch for sw in sweeps(spec)} == {"mpnn", "egnn", "gemnet_oc", "esen"}
    for fam in spec.families:
        n = count_parameters(fam.arch, spec.tune.width_of(fam), elements, **fam.overrides)
        assert 0.85e6 < n < 1.15e6, (fam.arch, n)
    grid = expand_runs(spec)
    assert len(sweeps(spec)[0].plans) == len(spec.tune.lrs) and grid


def _aselmdb(tmp_path: Path) -> Path:
    """A small OMol25-like `.aselmdb` (neutral toy molecules of 8-20 atoms)."""
    from symscale.data.readers import write_structures
    from symscale.data.toy import toy_structures

    path = tmp_path / "train.aselmdb"
    write_structures(path, toy_structures(80, seed=3, min_atoms=8, max_atoms=20))
    return path


def _tune_lines(text: str) -> dict[str, float]:
    """{family label: N} from the dry run's learning-rate stage lines."""
    found = re.findall(r"^\s+tune (\S+)\s+width\s+\d+\s+N\s+(\S+)", text, flags=re.M)
    return {label: float(n) for label, n in found}


def test_the_paper_dry_run_on_an_aselmdb_lists_a_tuning_stage_per_family_at_a_million(tmp_path):
    """Issue 13, done means: the paper preset's dry run on a small .aselmdb lists each family's sweep at about
    1M parameters (fast: kappa from the paper's table; the CLI's measured version is the slow test below)."""
    path = _aselmdb(tmp_path)
    spec = load_spec("paper", overrides={"dataset": {"path": str(path)}})
    stages, grid = estimate_sweeps(spec, [str(path)], measure_kappa=False)
    found = _tune_lines(format_sweeps(stages))
    assert set(found) == {"mpnn", "egnn", "gemnet_oc", "esen"}
    assert all(0.85e6 < n < 1.15e6 for n in found.values()), found
    assert all(len(ests) == len(spec.tune.lrs) for _, ests in stages) and grid


@pytest.mark.slow  # minutes on 2 cores: kappa measured for every family at the paper's depths
def test_the_paper_cli_dry_run_on_an_aselmdb_measures_the_tuning_stage_and_lmax4(tmp_path, capsys):
    from symscale.cli import main

    path = _aselmdb(tmp_path)
    assert main(["study", "paper", "--data", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    found = _tune_lines(out)
    assert set(found) == {"mpnn", "egnn", "gemnet_oc", "esen"} and all(0.85e6 < n < 1.15e6 for n in found.values())
    assert "of the study's data" in out  # kappa measured on the .aselmdb's own batches
    assert re.search(r"esen-\S*lmax4\S*: kappa", out), out  # eSEN's group carries the ladder's lmax 4
