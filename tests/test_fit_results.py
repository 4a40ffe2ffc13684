"""FitResult: never ok with a non-finite coefficient; read back from JSON with its group's fields."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from symscale.cli import main
from symscale.fit.results import FitResult

SUM = {"E": 0.5, "A": 400.0, "B": math.inf, "alpha": 0.3, "beta": 0.3}


def test_a_non_finite_coefficient_is_a_failed_fit_that_names_it():
    fit = FitResult(group="mpnn", law="sum", params=SUM)
    assert not fit.ok and not fit.converged
    assert "B = inf" in fit.reason
    assert FitResult(group="mpnn", law="sum", params={**SUM, "B": 900.0}).ok


def test_null_coefficient_in_fits_json_reads_as_failed():
    written = FitResult(group="mpnn", law="sum", params={**SUM, "B": 900.0}).to_dict()
    written["params"]["B"] = None  # what an older symscale wrote for B = inf
    fit = FitResult.from_dict(written)
    assert not fit.ok and "B = null" in fit.reason


def test_round_trip_keeps_arch_options_and_mode():
    fit = FitResult(group="esen-l4/augmentation", law="frontier_C", params={"gamma": 0.4, "F": 2.0, "L_inf": 0.0})
    fit = type(fit)(**{**fit.__dict__, "arch": "esen", "options": "l4", "mode": "augmentation"})
    back = FitResult.from_dict(json.loads(json.dumps(fit.to_dict())))
    assert (back.arch, back.options, back.mode, back.ok) == ("esen", "l4", "augmentation", True)


def test_legacy_group_label_is_read_once_into_fields():
    old = {"group": "mpnn/symmetry_loss", "law": "sum", "ok": False, "reason": "too few runs"}
    fit = FitResult.from_dict(old)
    assert (fit.arch, fit.mode) == ("mpnn", "symmetry_loss")
    assert FitResult.from_dict({"group": "egnn", "law": "sum"}).mode == "architecture"


@pytest.mark.parametrize("arch", [None, "mpnn"])
def test_plan_says_not_possible_instead_of_printing_nan(tmp_path, capsys, arch):
    good = FitResult(group="egnn", law="sum", params={**SUM, "B": 900.0}).to_dict()
    bad = {**good, "group": "mpnn", "params": {**good["params"], "B": None}}
    path = tmp_path / "fits.json"
    path.write_text(json.dumps({"fits": [good, bad]}))
    args = ["plan", "--fits", str(path), "--budget", "1e18"] + (["--arch", arch] if arch else [])
    code = main(args)
    captured = capsys.readouterr()
    assert "nan" not in captured.out
    if arch is None:
        assert code == 0 and "mpnn" in captured.out and "not possible: non-finite coefficient" in captured.out
    else:
        assert code == 2 and "no successful sum-law fit" in captured.err


def test_interval_problem_names_each_degenerate_interval():
    from symscale.fit.results import interval_problem

    assert interval_problem(0.3, [0.25, 0.35], np.linspace(0.25, 0.35, 50), n_units=10) is None
    assert interval_problem(0.3, [0.25, 0.35], n_units=3).startswith("too few runs")
    assert interval_problem(1.32e-26, [1.32e-26, 1.32e-26], n_units=10) == "zero-width interval"
    at_zero = np.r_[np.zeros(30), np.linspace(0.01, 0.2, 20)]
    assert "at the bound 0" in interval_problem(0.05, [0.0, 0.18], at_zero, n_units=10, bound=0.0, bound_tol=1e-9)
    assert interval_problem(0.25, [0.25, 0.35], n_units=10) == "estimate on the interval's edge"
    assert interval_problem(1.2, [0.626, 33.6], n_units=10) == "interval wider than the estimate"
    assert interval_problem(0.3, None) is None and interval_problem(0.3, [float("nan"), 1.0]) is None


def test_flagged_intervals_survive_fits_json():
    from symscale.fit.results import FitResult, flag_intervals

    fit = FitResult("g", "sum", params={"E": 1e-26, "alpha": 0.3}, ci95={"E": [1e-26, 1e-26], "alpha": [0.2, 0.4]})
    flagged = flag_intervals(fit, n_units=12)
    assert flagged.unresolved == {"E": "zero-width interval"}
    assert FitResult.from_dict(flagged.to_dict()).unresolved == {"E": "zero-width interval"}


def test_plan_uses_the_study_fit_not_its_l_inf_sensitivity_variant(tmp_path, capsys):
    own = FitResult(group="egnn", law="sum", params={**SUM, "B": 900.0}).to_dict()
    variant = {**own, "variant": "l_inf=free", "params": {**own["params"], "A": 1e6}}
    path = tmp_path / "fits.json"
    path.write_text(json.dumps({"fits": [own, variant]}))
    assert main(["plan", "--fits", str(path), "--budget", "1e18"]) == 0
    shown = capsys.readouterr().out
    path.write_text(json.dumps({"fits": [own]}))
    assert main(["plan", "--fits", str(path), "--budget", "1e18"]) == 0
    assert capsys.readouterr().out == shown
