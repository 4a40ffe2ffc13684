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
        assert 5e2 < e.n_params < 4e5 and e.time_s > 0  # the quickstart ladders: N 9.4e2 .. 3.4e5
    text = format_estimates(estimates)
    assert text.count("\n") >= len(estimates) + 2 and "total: " in text


@pytest.mark.slow  # about 3 minutes on 2 cores: it measures kappa for every family at the paper's depths
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
    assert main(["study", "extended", "--dry-run", "--no-calibrate"]) == 0  # timing 7 families: minutes
    out = capsys.readouterr().out
    for arch in ("fa_mpnn-w8-", "canonical_mpnn-w64-", "transformer-w56-"):
        assert arch in out


# -- an estimator that tells the truth (issue 13 item 6)


def _real_vs_estimated(spec, tmp_path) -> list[tuple[str, float, float]]:
    from symscale.rundir import read_metrics
    from symscale.study.estimate import estimate_runs
    from symscale.train.loop import train_run

    paths = None if spec.dataset.path is None else [spec.dataset.path]
    plans = expand_runs(spec)
    estimated = {e.run_id: e for e in estimate_runs(spec, plans, paths)}
    out = []
    for plan in plans:
        result = train_run(plan.config, tmp_path / plan.run_id)
        assert result.status == "finished", result.reason
        measured = read_metrics(tmp_path / plan.run_id)[-1]["flops"]
        out.append((plan.mode, estimated[plan.run_id].flops, measured))
    return out


def _small_spec(dataset: dict, families: list[dict]):
    from symscale.study.spec import parse_spec

    return parse_spec({
        "name": "truth", "dataset": dataset, "families": families, "modes": ["architecture", "symmetry_loss"],
        "evaluation": {"eval_points": 2}, "training": {"batch_size": 8, "progress": "off"},
    })  # fmt: skip


def test_dry_run_compute_is_within_15_percent_of_real_runs_on_a_data_file(tmp_path):
    from symscale.data.readers import write_structures
    from symscale.data.toy import toy_structures

    path = tmp_path / "data.extxyz"
    write_structures(path, toy_structures(60, seed=4, min_atoms=8, max_atoms=20))
    spec = _small_spec({"path": str(path), "val": 12}, [{"arch": "mpnn", "widths": [6]}])
    text = format_estimates(dry_run(spec))
    assert "of the study's data" in text and "edges per atom" in text and "x6 (symmetry loss)" in text
    rows = _real_vs_estimated(spec, tmp_path / "runs")
    for mode, estimated, measured in rows:
        assert estimated == pytest.approx(measured, rel=0.15), mode
    assert rows[1][1] == pytest.approx(6 * rows[0][1])  # M = 5 rotated copies: (M + 1)x


@pytest.mark.slow
def test_dry_run_compute_is_within_15_percent_of_real_runs_on_the_builtin_data(tmp_path, monkeypatch):
    from symscale.data.builtin import builtin_dataset

    monkeypatch.setenv("SYMSCALE_CACHE", str(tmp_path / "cache"))
    builtin_dataset(60, seed=0, progress=False)
    families = [{"arch": "mpnn", "widths": [8]}, {"arch": "egnn", "widths": [6]}]
    spec = _small_spec({"builtin": 60, "val": 12}, families)
    for mode, estimated, measured in _real_vs_estimated(spec, tmp_path / "runs"):
        assert estimated == pytest.approx(measured, rel=0.15), mode


def test_dry_run_keys_n_and_kappa_by_the_full_group(tmp_path, monkeypatch):
    from symscale.study.spec import parse_spec

    monkeypatch.setenv("SYMSCALE_CACHE", str(tmp_path))  # no generated built-in set: the representative sample

    spec = parse_spec({
        "name": "lmax", "dataset": {"builtin": 100, "val": 10},
        "families": [{"arch": "esen", "widths": [4], "overrides": {"lmax": 2}},
                     {"arch": "esen", "widths": [4], "overrides": {"lmax": 4}}],
    })  # fmt: skip
    lmax2, lmax4 = dry_run(spec)
    assert lmax2.group == "esen-lmax2/architecture" and lmax4.group == "esen-lmax4/architecture"
    assert lmax4.n_params > lmax2.n_params and lmax4.kappa != lmax2.kappa
    text = format_estimates([lmax2, lmax4])
    assert "representative sample" in text and "edges per atom" in text  # the built-in set is not generated here


def test_flops_counted_on_a_quarter_of_the_sample_give_its_kappa():
    """The dry run counts FLOPs on 16 of its 64 sampled structures, picked at even quantiles of edges per
    atom: kappa must stay the 64's (FLOPs per atom = a + b x edges per atom), while 16 structures taken as
    they come (the first 16) need not."""
    from symscale.data.graph import collate
    from symscale.data.toy import toy_structures
    from symscale.study.estimate import representative
    from symscale.train.compute import first_structures, measure_family

    structures = toy_structures(64, seed=2, min_atoms=4, max_atoms=40)
    sample = collate(structures, 6.0, 30)
    quarter = representative(sample, structures, 6.0, 30, 16)
    assert quarter.num_structures == 16
    full, picked = (measure_family("egnn", 8, b).kappa_corrected for b in (sample, quarter))
    first = measure_family("egnn", 8, first_structures(sample, 16)).kappa_corrected
    assert picked == pytest.approx(full, rel=0.02)
    assert abs(picked - full) < abs(first - full)
