"""Dry runs of the presets: the run table with N, D, FLOPs and time, and the paper's scale beside it."""

from __future__ import annotations

import pytest

from symscale.cli import main
from symscale.errors import SymscaleError
from symscale.study.estimate import PAPER_KAPPA
from symscale.study.runner import dry_run, format_estimates
from symscale.study.spec import expand_runs, load_spec, preset_path


def test_quickstart_dry_run_table():
    spec = load_spec("quickstart")
    assert {f.arch for f in spec.families} == {"mpnn", "egnn", "gemnet_oc", "esen"}
    assert all(len(f.widths) >= 4 for f in spec.families)
    estimates = dry_run(spec, measure_kappa=False)
    assert len(estimates) == len(expand_runs(spec))
    for e in estimates:
        assert e.flops == pytest.approx(3 * PAPER_KAPPA[e.arch] * e.n_params * e.atoms)
        assert 5e2 < e.n_params < 3e5 and e.time_s > 0
    text = format_estimates(estimates)
    assert text.count("\n") >= len(estimates) + 2 and "total: " in text


def test_paper_dry_run_beside_reported_scale(capsys):
    assert main(["study", "paper", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "reference study: about 1e+18 FLOPs" in out and "total: " in out
    spec = load_spec("paper")
    assert spec.executor.kind == "slurm" and spec.training["batch_size"] == 64
    estimates = dry_run(spec, measure_kappa=False)
    largest = max(e.flops for e in estimates)
    assert 1e17 < largest < 1e19  # the paper: about 1e18 FLOPs for its largest runs
    n = sorted(e.n_params for e in estimates)
    assert n[0] > 3e4 and n[-1] > 3e6  # the paper's ladders: about 1e5 to 1e7 parameters


def test_paper_needs_its_data(capsys):
    assert main(["study", "paper"]) == 2
    assert "--data PATH" in capsys.readouterr().err
    with pytest.raises(SymscaleError, match="unknown study preset 'papr'; choices: quickstart"):
        preset_path("papr")


def test_extended_plans_the_staircase_and_the_new_rungs(capsys):
    """The extended preset: the quickstart's four families on the same ladders, plus frame averaging,
    canonicalisation and the graph-free transformer on theirs (issue 19)."""
    spec = load_spec("extended")
    quickstart = load_spec("quickstart")
    archs = [f.arch for f in spec.families]
    assert archs == [f.arch for f in quickstart.families] + ["fa_mpnn", "canonical_mpnn", "transformer"]
    widths = {f.arch: f.widths for f in spec.families}
    assert all(widths[f.arch] == f.widths for f in quickstart.families)
    assert all(len(widths[a]) >= 6 for a in ("fa_mpnn", "canonical_mpnn", "transformer"))
    assert main(["study", "extended", "--dry-run"]) == 0
    out = capsys.readouterr().out
    for arch in ("fa_mpnn-w8-", "canonical_mpnn-w64-", "transformer-w56-"):
        assert arch in out
