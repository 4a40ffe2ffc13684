"""The embedded preset (issue 16 item 2): the larger study on the built-in set, with eSEN at lmax 2 and 4 as
groups of their own, the MPNN's symmetry-loss and augmentation modes, nested prefixes and seed repeats; and
per-family modes, which it uses."""

from __future__ import annotations

import math

import pytest

from symscale.errors import SymscaleError
from symscale.study.calibration import makespan
from symscale.study.estimate import group_label
from symscale.study.runner import dry_run, format_wall_time
from symscale.study.spec import expand_runs, load_spec, parse_spec
from symscale.study.tuning import sweeps


def test_embedded_plans_the_paper_claims_groups_modes_and_seeds():
    spec = load_spec("embedded")
    plans = expand_runs(spec)
    groups = {group_label(p) for p in plans}
    assert {"esen-lmax2/architecture", "esen-lmax4/architecture"} <= groups
    assert {"mpnn/symmetry_loss", "mpnn/augmentation"} <= groups
    # the ablation modes are the MPNN's only: no symmetry loss on an equivariant family
    assert {p.arch for p in plans if p.mode != "architecture"} == {"mpnn"}
    assert len(spec.prefixes) >= 3 and min(spec.prefixes) <= 0.1
    repeats = [p for p in plans if p.seed not in spec.seeds]
    assert repeats and {p.seed for p in repeats} == {1, 2}
    assert [s.label for s in sweeps(spec)] == ["mpnn", "egnn", "gemnet_oc", "esen-lmax2", "esen-lmax4"]
    estimates = dry_run(spec, measure_kappa=False)
    n = {}
    for e in estimates:
        n.setdefault(e.group, []).append(e.n_params)
    for group in ("mpnn/architecture", "egnn/architecture"):
        assert math.log10(max(n[group]) / min(n[group])) >= 2.0, group  # N over 2 decades where cost allows
    d = [e.atoms for e in estimates]
    first = spec.evaluation["eval_first_fraction"]
    assert math.log10(max(d) / (first * min(d))) >= 2.0  # D over 2 decades along and across the prefixes
    # its dry run states the wall time on its two workers
    text = format_wall_time(spec, [], estimates)
    assert text.startswith("predicted wall time: ") and "on 2 worker(s)" in text
    assert makespan([e.time_s for e in estimates], 2) < sum(e.time_s for e in estimates)


def test_family_modes_override_the_spec_modes():
    raw = {
        "name": "m", "dataset": {"builtin": 50, "val": 5}, "modes": ["architecture"],
        "families": [{"arch": "mpnn", "widths": [4], "modes": ["architecture", "symmetry_loss"]},
                     {"arch": "egnn", "widths": [4]}],
    }  # fmt: skip
    plans = expand_runs(parse_spec(raw))
    assert sorted((p.arch, p.mode) for p in plans) == [
        ("egnn", "architecture"), ("mpnn", "architecture"), ("mpnn", "symmetry_loss"),
    ]  # fmt: skip
    raw["families"][0]["modes"] = ["symmetry_lss"]
    with pytest.raises(SymscaleError, match="modes"):
        parse_spec(raw)
