"""The one fit menu: groups by family, options and mode, never raises on one group, and gives the study's
fits.json from `symscale fit STUDY/laws.csv` with the study's settings."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from symscale.cli import main
from symscale.errors import SymscaleError
from symscale.fit.menu import FitSettings, Group, fit_laws_table, fit_table, groups
from symscale.fit.table import from_arrays, read_table

sys.path.insert(0, str(Path(__file__).parent))
from test_fit_laws import learning_curves  # noqa: E402
from test_report_render import make_study  # noqa: E402


def test_fits_never_raise_and_say_why():
    table = learning_curves(widths=6, points=12)
    tiny = from_arrays(N=[1e3, 1e3], D=[1e4, 1e5], C=[6e7, 6e8], loss=[2.0, 1.5], run=["x", "x"], arch=["b", "b"])
    both = from_arrays(
        **{k: np.concatenate([table[k], tiny[k]]) for k in ("N", "D", "C", "loss", "run")},
        arch=np.array(["a"] * len(table) + ["b", "b"]),
    )
    results = fit_laws_table(both, bootstrap=10, workers=1)
    by = {(r.group, r.law): r for r in results}
    assert by[("a", "frontier_C")].ok and by[("a", "sum")].ok
    assert not by[("b", "sum")].ok and "single distinct N" in by[("b", "sum")].reason
    assert [r.law for r in results if r.arch == "a" and not r.variant] == ["frontier_C", "sum", "isoflop", "allocation"]
    # the study's fits come with the L_inf sensitivity fits under the other policy
    assert [r.law for r in results if r.arch == "a" and r.variant] == ["frontier_C", "sum", "allocation"]
    assert {r.variant for r in results if r.variant} == {"l_inf=free"}


def test_groups_split_by_options_and_mode_and_carry_them_as_fields():
    a = learning_curves(widths=5, points=10)
    n = len(a)
    cols = {k: np.concatenate([a[k]] * 3) for k in ("N", "D", "C", "loss", "run")}
    table = from_arrays(
        **cols,
        arch=np.array(["esen"] * (3 * n)),
        options=np.array(["l2"] * n + ["l4"] * (2 * n)),
        mode=np.array(["architecture"] * (2 * n) + ["symmetry_loss"] * n),
    )
    found = [g for g, _ in groups(table, "arch")]
    assert found == [Group("esen", "l2"), Group("esen", "l4"), Group("esen", "l4", "symmetry_loss")]
    assert [g.label for g in found] == ["esen-l2", "esen-l4", "esen-l4/symmetry_loss"]
    results = fit_table(table, FitSettings(laws=("frontier",), bootstrap=0))
    assert {(r.arch, r.options, r.mode) for r in results} == {
        ("esen", "l2", "architecture"),
        ("esen", "l4", "architecture"),
        ("esen", "l4", "symmetry_loss"),
    }


def test_sum_law_sees_only_the_late_rows_of_each_run():
    table = learning_curves(widths=6, points=20)
    settings = FitSettings(laws=("sum",), bootstrap=0, group_by=None, drop_fraction=0.3)
    (fit,) = [r for r in fit_table(table, settings) if r.law == "sum"]
    assert fit.n_points == int((table["fraction"] >= 0.3).sum()) < len(table)


def test_drop_highest_loss_is_counted_per_group():
    table = learning_curves(widths=6, points=12)
    two = from_arrays(
        **{k: np.concatenate([table[k], table[k]]) for k in ("N", "D", "C", "loss", "run", "fraction")},
        arch=np.array(["a"] * len(table) + ["b"] * len(table)),
    )
    two.columns["loss"][len(table)] = 1e6  # one outlier in group b
    settings = FitSettings(laws=("frontier",), axes=("C",), bootstrap=0, drop_highest_loss=1)
    by = {r.arch: r for r in fit_table(two, settings)}
    plain = {r.arch: r for r in fit_table(two, FitSettings(laws=("frontier",), axes=("C",), bootstrap=0))}
    assert by["b"].n_excluded == plain["b"].n_excluded  # one row fewer in the fit, one counted as dropped
    assert by["a"].n_excluded == plain["a"].n_excluded and by["b"].settings["drop_highest_loss"] == 1


def test_symscale_fit_on_a_study_laws_csv_reproduces_the_study_fits_json(tmp_path, capsys):
    from symscale.study.runner import _fit as study_fit  # the call the study makes after its runs

    root = make_study(tmp_path / "study", archs=("mpnn", "esen"), modes=("architecture", "symmetry_loss"))
    settings = {"bootstrap": 12, "seed": 3, "group_by": "arch"}
    path, why = study_fit(root, SimpleNamespace(fits=settings, depth=None))  # the spec fields _fit reads
    assert why is None, why
    study = json.loads(Path(path).read_text())["fits"]
    out = tmp_path / "cli.json"
    args = ["fit", str(root / "laws.csv"), "--law", "all", "--group-by", "arch", "--bootstrap", "12", "--seed", "3"]
    args += ["--l-inf", "zero", "--sensitivity"]
    assert main(args + ["--json", str(out)]) == 0
    cli = json.loads(out.read_text())["fits"]
    assert [(f["group"], f["law"]) for f in cli] == [(f["group"], f["law"]) for f in study]
    assert {f["mode"] for f in cli} == {"architecture", "symmetry_loss"}
    assert cli == study
    # the CLI's former rules (modes mixed in one group, every row, IsoFLOP bootstrap up to 1000) would differ
    assert len({f["group"] for f in study}) == 4


def test_settings_refuse_unknown_laws():
    from symscale.errors import SymscaleError

    with pytest.raises(SymscaleError, match="unknown|fit law"):
        FitSettings(laws=("sums",))


def test_a_table_without_group_column_is_one_group(tmp_path):
    table = learning_curves(widths=6, points=12)
    path = tmp_path / "laws.csv"
    cols = ["N", "D", "C", "loss", "run", "fraction"]
    lines = [",".join(cols)] + [",".join(str(table[c][i]) for c in cols) for i in range(len(table))]
    path.write_text("\n".join(lines) + "\n")
    results = fit_table(read_table(path), FitSettings(laws=("frontier",), bootstrap=0, group_by=None))
    assert [(r.group, r.arch, r.mode) for r in results] == [("all", "all", "architecture")]


def test_empty_options_and_mode_cells_are_the_plain_family(tmp_path):
    path = tmp_path / "laws.csv"
    path.write_text("arch,options,mode,N,D,loss\n" + "".join(f"mpnn,,,1e{i},1e5,{3 - i / 5}\n" for i in range(3, 9)))
    assert [g for g, _ in groups(read_table(path), "arch")] == [Group("mpnn")]


# ---------------------------------------------------------------- the protocol (issue 13 items 2, 3, 5, 7)


def test_one_l_inf_policy_for_every_law_default_zero():
    from symscale.fit.menu import study_settings

    table = learning_curves(E=0.05, widths=8, points=16)
    assert FitSettings().l_inf == "zero" and study_settings().l_inf == "zero"
    by = {
        r.law: r
        for r in fit_table(table, FitSettings(laws=("frontier", "sum"), axes=("C",), bootstrap=0, group_by=None))
    }
    assert by["sum"].params["E"] == 0.0 and by["frontier_C"].params["L_inf"] == 0.0
    assert by["sum"].settings["l_inf"] == by["frontier_C"].settings["l_inf"] == "zero"
    free = {
        r.law: r
        for r in fit_table(
            table, FitSettings(laws=("frontier", "sum"), axes=("C",), bootstrap=0, group_by=None, l_inf="free")
        )
    }
    assert free["sum"].params["E"] > 0.01 and free["frontier_C"].params["L_inf"] > 0.01
    assert free["sum"].settings["l_inf"] == free["frontier_C"].settings["l_inf"] == "free"
    with pytest.raises(SymscaleError):
        FitSettings(l_inf="fitted")


def test_the_study_fits_the_other_policy_as_a_sensitivity_variant():
    table = learning_curves(E=0.05, widths=8, points=12)
    results = fit_laws_table(table, group_by=None, bootstrap=8, workers=1)
    own = {r.law: r for r in results if not r.variant}
    other = {r.law: r for r in results if r.variant == "l_inf=free"}
    assert set(other) == {"frontier_C", "frontier_H", "sum", "allocation"} - {"frontier_H"}
    assert other["sum"].params["E"] > 0 and own["sum"].params["E"] == 0
    assert other["sum"].settings["l_inf"] == "free" and own["sum"].settings["l_inf"] == "zero"
    # the allocation's gamma follows its own sum law: like with like
    assert other["allocation"].params["gamma"] != own["allocation"].params["gamma"]


def test_a_fixed_l_inf_has_no_interval_and_few_runs_are_flagged():
    table = learning_curves(widths=4, points=12)  # 4 runs: too few to resample
    results = fit_table(
        table, FitSettings(laws=("frontier", "sum"), axes=("C",), bootstrap=30, group_by=None, workers=1)
    )
    by = {r.law: r for r in results}
    assert "L_inf" not in by["frontier_C"].ci95 and "E" not in by["sum"].ci95
    assert "too few runs" in by["frontier_C"].unresolved["gamma"]
    assert "too few runs" in by["sum"].unresolved["alpha"]
    many = fit_table(
        learning_curves(widths=10, points=12), FitSettings(laws=("frontier",), axes=("C",), bootstrap=30, group_by=None)
    )
    assert "gamma" not in many[0].unresolved  # a clean law with ten runs is resolved


def test_loss_setting_fits_the_chosen_term():
    table = learning_curves(widths=8, points=16)  # total: alpha 0.4, beta 0.3
    force = learning_curves(alpha=0.6, beta=0.5, widths=8, points=16)
    table.columns["loss_force"] = force["loss"]
    table.columns["loss_energy"] = table["loss"] - 0.5 * force["loss"]
    settings = FitSettings(laws=("frontier",), axes=("C",), bootstrap=0, group_by=None)
    total = fit_table(table, settings)[0]
    on_force = fit_table(table, dataclasses.replace(settings, loss="force"))[0]
    assert on_force.params["gamma"] == pytest.approx(0.6 * 0.5 / 1.1, abs=0.03)
    assert total.params["gamma"] == pytest.approx(0.4 * 0.3 / 0.7, abs=0.03)
    assert on_force.settings["loss"] == "force" and total.settings["loss"] == "total"
    del table.columns["loss_energy"]
    with pytest.raises(SymscaleError, match="loss_energy"):
        fit_table(table, dataclasses.replace(settings, loss="energy"))


def test_symscale_fit_refits_a_table_on_the_force_term(tmp_path, capsys):
    table = learning_curves(widths=8, points=12)
    force = learning_curves(alpha=0.6, beta=0.5, widths=8, points=12)
    path = tmp_path / "laws.csv"
    cols = ["N", "D", "C", "loss", "loss_force", "run", "run_fraction"]
    values = {**table.columns, "loss_force": force["loss"]}
    path.write_text(
        "\n".join([",".join(cols)] + [",".join(str(values[c][i]) for c in cols) for i in range(len(table))])
    )
    out = tmp_path / "fits.json"
    assert main(["fit", str(path), "--law", "frontier", "--loss", "force", "--bootstrap", "0", "--json", str(out)]) == 0
    (fit,) = json.loads(out.read_text())["fits"]
    assert fit["settings"]["loss"] == "force" and abs(fit["params"]["gamma"] - 0.6 * 0.5 / 1.1) < 0.03
    assert main(["fit", str(path), "--law", "frontier", "--loss", "energy", "--bootstrap", "0"]) == 2


def test_drop_fraction_and_ema_are_settings_recorded_in_the_fit():
    table = learning_curves(widths=8, points=16)
    s = FitSettings(laws=("frontier",), axes=("C",), bootstrap=0, group_by=None, drop_fraction=0.1, ema=0.5)
    (fit,) = fit_table(table, s)
    assert fit.settings["drop_fraction"] == 0.1 and fit.settings["ema"] == 0.5
    assert FitSettings().drop_fraction == 0.05  # within the paper's 1-10%
    for bad in ({"drop_fraction": 1.5}, {"ema": 1.0}, {"loss": "forces"}):
        with pytest.raises(SymscaleError):
            FitSettings(**bad)


def test_options_label_makes_ablations_their_own_groups():
    from symscale.fit.results import option_values, options_label

    assert options_label({"lmax": 2}, "direct") == "l2"
    assert options_label({"num_layers": 6, "lmax": 4, "mmax": 2}, "conservative") == "l4-d6-mmax=2-conservative"
    assert options_label(None, None) == "" and options_label({}, "direct") == ""
    assert option_values("l4-d6-mmax=2-conservative") == {"lmax": 4, "num_layers": 6}


def test_the_study_spec_accepts_the_protocol_fit_settings(tmp_path):
    from symscale.study.spec import parse_spec

    base = {"name": "s", "dataset": {"builtin": 50}, "families": [{"arch": "mpnn", "widths": [8]}]}
    spec = parse_spec({**base, "fits": {"l_inf": "free", "loss": "force", "ema": 0.3, "drop_fraction": 0.02}})
    assert spec.fits["loss"] == "force"
    with pytest.raises(SymscaleError, match="l_inf"):
        parse_spec({**base, "fits": {"l_inf": "floating"}})


def test_a_laws_table_of_an_old_study_reads_its_fraction_column_as_run_fraction(tmp_path):
    from symscale.fit.table import read_table

    path = tmp_path / "laws.csv"
    path.write_text("N,D,loss,run,fraction\n10,100,0.5,a,0.25\n")
    table = read_table(path)
    assert "run_fraction" in table.columns and "fraction" not in table.columns
    assert table["run_fraction"][0] == table["fraction"][0] == 0.25  # the old name still reads


def test_isoflop_profiles_come_from_the_largest_prefix_only():
    """Runs on a smaller nested prefix are a different data pool (a multi-epoch run repeats it): averaged into
    the profiles they moved MC-EGNN's a from 0.616 [0.413, 0.771] to an unresolved 0.187 on the quickstart. A
    prefix-0.1 copy of the ladder with a distorted loss must leave the IsoFLOP fit exactly as the full prefix
    alone gives it, while the sum law (which models D) still sees it."""
    full = learning_curves(alpha=0.5, beta=0.3, A=40.0, B=80.0, widths=12, points=20)
    small = {k: full[k] for k in ("N", "D", "C", "run", "fraction")}
    small["run"] = np.array([f"{r}-p01" for r in full["run"]])
    small["loss"] = full["loss"] * np.exp(0.3 * np.log(full["N"] / 1e3))  # worse the wider: another pool
    both = from_arrays(
        **{k: np.concatenate([full[k], small[k]]) for k in ("N", "D", "C", "loss", "run", "fraction")},
        prefix=np.array([1.0] * len(full) + [0.1] * len(full)),
    )
    alone = from_arrays(**{k: full[k] for k in ("N", "D", "C", "loss", "run", "fraction")}, prefix=np.ones(len(full)))
    settings = FitSettings(laws=("sum", "isoflop"), bootstrap=0, group_by=None)
    by = {r.law: r for r in fit_table(both, settings)}
    ref = {r.law: r for r in fit_table(alone, settings)}
    assert by["isoflop"].ok and by["isoflop"].params["a"] == pytest.approx(ref["isoflop"].params["a"], rel=1e-12)
    assert by["sum"].n_points == 2 * ref["sum"].n_points
