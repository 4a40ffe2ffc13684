"""Fits recover known laws from synthetic data, ignore row order, and refuse bad input."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from symscale.cli import main
from symscale.errors import SymscaleError
from symscale.fit import allocation, compute_frontier, fit_frontier, fit_isoflop, fit_sum_law
from symscale.fit.study import fit_laws_table
from symscale.fit.table import from_arrays


def sum_law_points(alpha, beta, E, noise=0.01, seed=0, A=400.0, B=900.0):
    rng = np.random.default_rng(seed)
    N = np.repeat(np.geomspace(1e4, 1e7, 8), 8)
    D = np.tile(np.geomspace(1e5, 1e9, 8), 8)
    loss = (E + A * N**-alpha + B * D**-beta) * np.exp(noise * rng.normal(size=N.size))
    return N, D, loss


def learning_curves(alpha=0.4, beta=0.3, E=0.0, A=30.0, B=60.0, k=6.0, widths=14, points=40):
    """Runs of a sum law: one run per N, evaluated along D; C = k N D."""
    rows = []
    for i, N in enumerate(np.geomspace(1e3, 1e7, widths)):
        D = np.geomspace(1e4, 1e10, points)
        loss = E + A * N**-alpha + B * D**-beta
        rows += [(N, d, k * N * d, l, f"r{i}", j / (points - 1)) for j, (d, l) in enumerate(zip(D, loss))]
    N, D, C, loss, run, frac = map(np.array, zip(*rows))
    return from_arrays(N=N, D=D, C=C, loss=loss, run=run, fraction=frac.astype(float))


@pytest.mark.parametrize("alpha,beta,E", [(0.35, 0.30, 0.0), (0.5, 0.25, 0.0), (0.3, 0.45, 1.5), (0.7, 0.5, 0.8)])
def test_sum_law_recovers_exponents(alpha, beta, E):
    N, D, loss = sum_law_points(alpha, beta, E)
    fit = fit_sum_law(N, D, loss, bootstrap=0)
    assert fit.params["alpha"] == pytest.approx(alpha, abs=0.03)
    assert fit.params["beta"] == pytest.approx(beta, abs=0.03)
    # E is only identifiable to a few percent of the smallest loss at 1% noise
    assert fit.params["E"] == pytest.approx(E, abs=0.05 + 0.03 * loss.min())


def test_varpro_recovers_exponents():
    N, D, loss = sum_law_points(0.4, 0.3, 1.0, noise=0.002)
    fit = fit_sum_law(N, D, loss, method="varpro", bootstrap=20, workers=1)
    assert fit.params["alpha"] == pytest.approx(0.4, abs=0.03)
    assert fit.params["beta"] == pytest.approx(0.3, abs=0.03)
    assert "alpha" in fit.se


def test_frontier_recovers_gamma_from_learning_curves():
    alpha, beta = 0.4, 0.3
    table = learning_curves(alpha, beta)
    fit = fit_frontier(table["C"], table["loss"], runs=table["run"], fraction=table["fraction"], bootstrap=50)
    assert fit.params["gamma"] == pytest.approx(alpha * beta / (alpha + beta), abs=0.015)
    assert fit.ci95["gamma"][0] <= fit.params["gamma"] <= fit.ci95["gamma"][1]


def test_frontier_is_the_lower_envelope():
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    loss = np.array([5.0, 4.0, 4.5, 3.0, 3.5])
    assert compute_frontier(x, loss, drop_fraction=0.0).tolist() == [0, 1, 3]


def test_free_l_inf_frontier_finds_the_floor():
    table = learning_curves(E=0.5)
    fit = fit_frontier(
        table["C"], table["loss"], runs=table["run"], fraction=table["fraction"], free_l_inf=True, bootstrap=0
    )
    assert fit.params["L_inf"] == pytest.approx(0.5, abs=0.05)


def test_isoflop_and_allocation_recover_a():
    alpha, beta = 0.5, 0.3
    table = learning_curves(alpha, beta, A=40.0, B=80.0, widths=20)
    iso = fit_isoflop(table["N"], table["C"], table["loss"], runs=table["run"], bootstrap=0)
    assert iso.params["a"] == pytest.approx(beta / (alpha + beta), abs=0.05)
    s = fit_sum_law(table["N"], table["D"], table["loss"], bootstrap=30, workers=1)
    alloc = allocation(s, 6.0, budget=1e15)
    assert alloc.params["a"] == pytest.approx(beta / (alpha + beta), abs=0.02)
    assert alloc.derived["N_star"] * alloc.derived["D_star"] * 6.0 == pytest.approx(1e15, rel=1e-9)


def test_study_fits_never_raise_and_report_why():
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


ORDERED = {}


@settings(max_examples=4, deadline=None)
@given(st.integers(min_value=0, max_value=10_000))
def test_row_order_does_not_change_the_fit(seed):
    N, D, loss = sum_law_points(0.4, 0.35, 1.0, noise=0.02, seed=3)
    perm = np.random.default_rng(seed).permutation(len(N))
    a = ORDERED.setdefault("fit", fit_sum_law(N, D, loss, bootstrap=0))
    b = fit_sum_law(N[perm], D[perm], loss[perm], bootstrap=0)
    for name in ("alpha", "beta", "E"):
        assert a.params[name] == pytest.approx(b.params[name], rel=1e-5, abs=1e-7)


@pytest.mark.parametrize(
    "N,D,loss,match",
    [
        ([1e3, 1e4, 1e5], [1e4, 1e5, 1e6], [3.0, 2.0, 1.0], "more points than parameters"),
        ([1e3, -1e4, 1e5, 1e6, 1e7, 1e8], [1e4] * 3 + [1e5] * 3, [3.0, 2.5, 2.0, 1.5, 1.2, 1.1], "positive"),
        ([1e3, 1e4, 1e5, 1e6, 1e7, 1e8], [1e4] * 3 + [1e5] * 3, [3.0, np.nan, 2.0, 1.5, 1.2, 1.1], "NaN"),
        ([1e3] * 6, [1e4, 1e5, 1e6, 1e7, 1e8, 1e9], [3.0, 2.5, 2.0, 1.5, 1.2, 1.1], "single distinct N"),
        ([1e3, 1e4, 1e5, 1e6, 1e7, 1e8], [1e4] * 6, [3.0, 2.5, 2.0, 1.5, 1.2, 1.1], "single distinct D"),
        ([1e3, 1e4, 1e5, 1e6, 1e7, 1e8], [1e4] * 3 + [1e5] * 3, [2.0] * 6, "no variation"),
    ],
)
def test_bad_input_is_refused(N, D, loss, match):
    with pytest.raises(SymscaleError, match=match):
        fit_sum_law(np.array(N), np.array(D), np.array(loss), bootstrap=0)


def test_cli_bad_input_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("N,D,loss\n1000,10000,2.0\n2000,20000,nan\n")
    assert main(["fit", str(tmp_path / "missing.csv")]) == 2
    assert main(["fit", str(bad), "--bootstrap", "0"]) == 2
    assert main(["fit", str(bad), "--col", "N"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("symscale fit: error:") for line in err)


def test_plan_reads_fit_json(tmp_path, capsys):
    table = learning_curves(widths=8, points=15)
    path = tmp_path / "laws.csv"
    cols = ["N", "D", "C", "loss", "run"]
    lines = [",".join(cols)] + [",".join(str(table[c][i]) for c in cols) for i in range(len(table))]
    path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "fits.json"
    assert main(["fit", str(path), "--law", "all", "--bootstrap", "20", "--workers", "1", "--json", str(out)]) == 0
    assert main(["plan", "--fits", str(out), "--budget", "1e18"]) == 0
    text = capsys.readouterr().out
    assert "N*" in text and "1e+18" in text
    assert main(["plan", "--fits", str(out), "--budget", "1e18", "--arch", "nope"]) == 2


def test_symmetry_modes_are_fitted_as_their_own_groups():
    from symscale.fit.study import study_groups

    a = learning_curves(widths=5, points=10)
    n = len(a)
    cols = {k: np.concatenate([a[k], a[k]]) for k in ("N", "D", "C", "loss", "run")}
    table = from_arrays(
        **cols, arch=np.array(["mpnn"] * (2 * n)), mode=np.array(["architecture"] * n + ["symmetry_loss"] * n)
    )
    names = [name for name, _ in study_groups(table, "arch")]
    assert names == ["mpnn", "mpnn/symmetry_loss"]
