"""Seed repeats (issue 16 item 4): the spec's `seed_repeats` adds each family's smallest runs over extra
seeds; they stay out of laws.csv and the fits, and the report shows their seed-to-seed spread."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import yaml

from fake_runs import fake_run
from symscale.errors import SymscaleError
from symscale.fit.compare import seed_spread
from symscale.report.render import write_report
from symscale.study.catalogue import Catalogue
from symscale.study.runner import run_study
from symscale.study.spec import expand_runs, load_spec, parse_spec


def _raw(tmp_path: Path, **extra) -> dict:
    data = tmp_path / "data.xyz"
    data.write_text("")  # the fake run function never reads it
    return {
        "name": "seeds",
        "dataset": {"path": str(data), "val": 5},
        "families": [{"arch": "mpnn", "widths": [8, 2, 3, 5, 13]}, {"arch": "egnn", "widths": [2, 3, 5, 8, 13]}],
        "prefixes": [0.5, 1.0],
        "evaluation": {"eval_points": 4},
        "executor": {"kind": "local", "workers": 1, "threads_per_worker": 1},
        "fits": {"bootstrap": 10, "seed": 0},
        "report": True,
        **extra,
    }


def test_seed_repeats_add_the_smallest_widths_over_extra_seeds(tmp_path):
    spec = parse_spec(_raw(tmp_path, seed_repeats={"smallest": 2, "seeds": [1, 2]}))
    plans = expand_runs(spec)
    repeats = [p for p in plans if p.seed != 0]
    assert len(plans) == 2 * 5 * 2 + len(repeats)
    # per family the two narrowest widths (not the first two listed), at both prefixes, for seeds 1 and 2
    assert sorted({(p.arch, p.width) for p in repeats}) == [("egnn", 2), ("egnn", 3), ("mpnn", 2), ("mpnn", 3)]
    assert len(repeats) == 4 * 2 * 2 and {p.seed for p in repeats} == {1, 2}
    assert all(p.config.seed == p.seed for p in repeats)
    assert len(expand_runs(parse_spec(_raw(tmp_path)))) == 20


@pytest.mark.parametrize(
    "bad",
    [{"smallest": 1, "seeds": [0]}, {"smallest": 0, "seeds": [1]}, {"seeds": []}, {"smallest": 1, "seed": [1]}],
)
def test_bad_seed_repeats_are_user_errors(tmp_path, bad):
    with pytest.raises(SymscaleError, match="seed_repeats"):
        parse_spec(_raw(tmp_path, seed_repeats=bad))


def test_seed_spread():
    s = seed_spread([1.0, 1.2, float("nan"), 0.8])
    assert (s.n_seeds, round(s.mean, 9), round(s.std, 9), round(s.relative_range, 9)) == (3, 1.0, 0.2, 0.4)
    assert seed_spread([2.0]).std == 0.0 and seed_spread([float("nan")]) is None


def test_seed_repeats_are_shown_in_the_report_and_not_fitted(tmp_path):
    raw = _raw(tmp_path, seed_repeats={"smallest": 1, "seeds": [1, 2]}, prefixes=[1.0])
    path = tmp_path / "seeds.yaml"
    path.write_text(yaml.safe_dump(raw))
    study = tmp_path / "study"
    result = run_study(load_spec(path), study, run_fn=fake_run, out=lambda s: None, reporter=write_report)
    assert result.finished == 10 + 4 and result.failed == 0
    with (study / "laws.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert {r["seed"] for r in rows} == {"0"} and len({r["run"] for r in rows}) == 10
    losses = {}
    for r in Catalogue(study).runs():
        if r.width == 2:
            losses.setdefault(r.arch, {})[r.seed] = r.loss
    md = (study / "report" / "report.md").read_text()
    table = md.split("**Seed-to-seed spread**", 1)[1].split("\n\n", 2)[1]
    body = [line for line in table.splitlines()[2:] if line.startswith("|")]
    assert len(body) == 2  # one row per family's repeated point (width 2, prefix 1)
    for line, (arch, label) in zip(body, (("mpnn", "MPNN"), ("egnn", "MC-EGNN"))):
        cells = [c.strip() for c in line.strip("|").split("|")]
        spread = seed_spread(list(losses[arch].values()))
        assert cells[0] == label and cells[1] == "2" and cells[6] == f"{100 * spread.relative_range:.1f}%"
        assert cells[4].startswith("0: ") and "2: " in cells[4]
