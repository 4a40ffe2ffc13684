"""Fits recover known laws from synthetic data, ignore row order, and refuse bad input."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from symscale.cli import main
from symscale.errors import SymscaleError
from symscale.fit import allocation, compute_frontier, fit_frontier, fit_isoflop, fit_sum_law
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


def test_lower_envelope_without_dropping():
    from symscale.fit.frontier import lower_envelope

    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    y = np.array([5.0, 6.0, 4.0, 4.0, 1.0])
    assert lower_envelope(x, y).tolist() == [True, False, True, False, True]


def test_free_l_inf_frontier_finds_the_floor():
    table = learning_curves(E=0.5)
    fit = fit_frontier(
        table["C"], table["loss"], runs=table["run"], fraction=table["fraction"], free_l_inf=True, bootstrap=0
    )
    assert fit.params["L_inf"] == pytest.approx(0.5, abs=0.05)


def test_free_l_inf_bootstrap_refits_from_the_full_fit_reach_the_three_start_optimum():
    """The bootstrap refits of a free-L_inf frontier start from the full-data fit only (the cost of the L_inf
    sensitivity row); they must land where the three-start search of the full fit lands."""
    from symscale.fit import frontier
    from symscale.fit.bootstrap import weights_for

    rng = np.random.default_rng(3)
    table = learning_curves(E=0.5, widths=8, points=12)
    loss = table["loss"] * np.exp(rng.normal(0, 0.01, len(table["loss"])))
    fit = fit_frontier(table["C"], loss, runs=table["run"], fraction=table["fraction"], free_l_inf=True,
                       bootstrap=12, seed=5)  # fmt: skip
    fraction, lx = np.asarray(table["fraction"], float), np.log(table["C"])
    for w, gamma in zip(weights_for(len(loss), table["run"], 12, 5), fit.samples["gamma"], strict=True):
        sub = np.flatnonzero(w > 0)
        idx = sub[compute_frontier(table["C"][sub], loss[sub], runs=table["run"][sub], fraction=fraction[sub])]
        assert frontier._power_law(lx[idx], np.log(loss[idx]), True)[2] == pytest.approx(gamma, rel=1e-4)


def test_isoflop_and_allocation_recover_a():
    alpha, beta = 0.5, 0.3
    table = learning_curves(alpha, beta, A=40.0, B=80.0, widths=20)
    iso = fit_isoflop(table["N"], table["C"], table["loss"], runs=table["run"], bootstrap=0)
    assert iso.params["a"] == pytest.approx(beta / (alpha + beta), abs=0.05)
    s = fit_sum_law(table["N"], table["D"], table["loss"], bootstrap=30, workers=1)
    alloc = allocation(s, 6.0, budget=1e15)
    assert alloc.params["a"] == pytest.approx(beta / (alpha + beta), abs=0.02)
    assert alloc.derived["N_star"] * alloc.derived["D_star"] * 6.0 == pytest.approx(1e15, rel=1e-9)


def one_epoch_runs(alpha=0.5, beta=0.3, A=40.0, B=80.0, k=6.0, widths=12, points=10, D_end=1e8):
    """Runs of a sum law as a one-epoch study makes them: every N sees the same data, evaluated from 5% of it
    to its end, so each run covers 1.3 decades of C and the ladder's runs end two decades apart."""
    rows = []
    for i, N in enumerate(np.geomspace(1e3, 1e5, widths)):
        D = np.geomspace(0.05 * D_end, D_end, points)
        rows += [(N, d, k * N * d, A * N**-alpha + B * d**-beta, f"r{i}") for d in D]
    return tuple(map(np.array, zip(*rows)))


def test_isoflop_budgets_span_the_compute_that_three_runs_reach_in_a_one_epoch_ladder():
    """No budget is reached by every run of a one-epoch ladder (the widest starts after the narrowest ends);
    the budgets must still cover the decades where at least three runs have a curve, or a (the slope of
    log N_opt on log C) rests on a factor of 2 in C and its error triples under 1% noise."""
    from symscale.fit.isoflop import default_budgets

    N, _, C, loss, run = one_epoch_runs()
    budgets = default_budgets(C, run)
    assert budgets[-1] / budgets[0] > 100
    for c in budgets:
        reach = {r for r in set(run) if C[run == r].min() <= c * (1 + 1e-9) and c <= C[run == r].max() * (1 + 1e-9)}
        assert len(reach) >= 3
    errors = []
    for seed in range(6):
        noisy = loss * np.exp(np.random.default_rng(seed).normal(0, 0.01, len(loss)))
        errors.append(abs(fit_isoflop(N, C, noisy, runs=run, bootstrap=0).params["a"] - 0.3 / 0.8))
    assert np.median(errors) < 0.045


def test_isoflop_without_interior_minima_says_at_which_edge_the_optimum_sat():
    """A ladder whose every budget is won by the smallest size reaching it (data-limited: the loss falls with D
    far more than with N) must say so, not ask for widths around an optimum it never bracketed."""
    N, _, C, loss, run = one_epoch_runs(A=1e-3, B=1e3)
    with pytest.raises(SymscaleError, match="smallest size reaching the budget is best"):
        fit_isoflop(N, C, loss, runs=run, bootstrap=0)


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


BAD_TABLES = {
    "more points than parameters": "N,D,loss\n1e3,1e4,3\n1e4,1e5,2\n1e5,1e6,1\n",
    "positive": "N,D,loss\n1e3,1e4,3\n-1e4,1e4,2.5\n1e5,1e4,2\n1e6,1e5,1.5\n1e7,1e5,1.2\n1e8,1e5,1.1\n",
    "NaN": "N,D,loss\n1e3,1e4,3\n1e4,1e4,nan\n1e5,1e4,2\n1e6,1e5,1.5\n1e7,1e5,1.2\n1e8,1e5,1.1\n",
    "single distinct N": "N,D,loss\n" + "".join(f"1e3,1e{i},{3 - i / 5}\n" for i in range(4, 10)),
    "single distinct D": "N,D,loss\n" + "".join(f"1e{i},1e4,{3 - i / 5}\n" for i in range(3, 9)),
    "no variation": "N,D,loss\n" + "".join(f"1e{i},1e{i + 1},2.0\n" for i in range(3, 9)),
}


@pytest.mark.parametrize("match", list(BAD_TABLES))
def test_cli_refuses_each_bad_input_with_one_line(match, tmp_path, capsys):
    path = tmp_path / "bad.csv"
    path.write_text(BAD_TABLES[match])
    assert main(["fit", str(path), "--bootstrap", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("symscale fit: error:") and match in err[0]


def test_non_convergence_is_reported_with_the_best_residual(monkeypatch):
    import symscale.fit.parametric as parametric
    from symscale.fit.optimize import batched_lbfgs

    def never_converges(fg, x0, **kwargs):
        out = batched_lbfgs(fg, x0, max_iter=2)
        return type(out)(x=out.x, fun=out.fun, iterations=out.iterations, converged=out.converged & False)

    monkeypatch.setattr(parametric, "batched_lbfgs", never_converges)
    N, D, loss = sum_law_points(0.4, 0.3, 1.0)
    with pytest.raises(SymscaleError, match="did not converge from any .* best objective"):
        fit_sum_law(N, D, loss, bootstrap=0)


def test_frontier_refuses_too_few_and_bad_points():
    with pytest.raises(SymscaleError, match="more points than parameters"):
        fit_frontier(np.array([1.0, 2.0, 3.0]), np.array([2.0, 2.0, 2.0]), drop_fraction=0.0, bootstrap=0)
    with pytest.raises(SymscaleError, match="positive"):
        fit_frontier(np.array([1.0, -2.0, 3.0, 4.0]), np.array([4.0, 3.0, 2.0, 1.0]), bootstrap=0)


def test_frontier_holdout_predicts_the_top_compute_points():
    from symscale.fit.holdout import frontier_holdout

    table = learning_curves(0.4, 0.3)
    check = frontier_holdout(table["C"], table["loss"], runs=table["run"], fraction=table["fraction"], top_fraction=0.3)
    assert check["n_test"] > 0 and check["mean_abs_rel_error"] < 0.05


def test_bootstrap_resamples_whole_runs():
    from symscale.fit.bootstrap import weights_for

    runs = np.array(["a", "a", "a", "b", "b", "c"])
    w = weights_for(len(runs), runs, 200, seed=1)
    assert (w[:, 0] == w[:, 1]).all() and (w[:, 1] == w[:, 2]).all() and (w[:, 3] == w[:, 4]).all()
    assert (w[:, [0, 3, 5]].sum(1) == 3).all()  # three runs drawn per resample
    assert np.array_equal(w, weights_for(len(runs), runs, 200, seed=1))


def _pid_of_each_row(weights):
    """A bootstrap chunk function: the process that refitted each resample."""
    import os

    return np.full(len(weights), os.getpid())


def test_a_cheap_bootstrap_runs_in_this_process_and_an_expensive_one_in_workers(monkeypatch):
    import os

    from symscale.fit import bootstrap

    weights = np.ones((40, 3))
    # a chunk function this cheap would be done before a pool had started: it stays here
    assert (bootstrap.map_chunks(_pid_of_each_row, weights, workers=2) == os.getpid()).all()
    monkeypatch.setattr(bootstrap, "POOL_START_SECONDS", 0.0)  # as if it took longer than a pool's start
    pids = bootstrap.map_chunks(_pid_of_each_row, weights, workers=2)
    assert len(pids) == 40 and not (pids == os.getpid()).any()


def test_a_sum_law_bootstrap_gives_the_same_intervals_in_this_process_and_in_workers(monkeypatch):
    from symscale.fit import bootstrap

    rng = np.random.default_rng(3)
    N = np.repeat(np.geomspace(1e3, 1e6, 5), 6)
    D = np.tile(np.geomspace(1e4, 1e7, 6), 5)
    loss = (1.0 + 300 * N**-0.4 + 900 * D**-0.3) * np.exp(rng.normal(0, 0.02, N.size))
    runs = np.repeat(np.arange(5), 6)
    here = fit_sum_law(N, D, loss, runs=runs, bootstrap=24, workers=2)
    monkeypatch.setattr(bootstrap, "POOL_START_SECONDS", 0.0)
    pooled = fit_sum_law(N, D, loss, runs=runs, bootstrap=24, workers=2)
    assert here.se == pooled.se and here.ci95 == pooled.ci95  # the same chunks, wherever they ran


@pytest.mark.slow
def test_bootstrap_interval_covers_the_truth_at_about_the_nominal_rate():
    """Over repeated synthetic draws, the 95% percentile interval of alpha and beta covers the truth."""
    alpha, beta, draws = 0.4, 0.3, 80
    hits = {"alpha": 0, "beta": 0}
    for seed in range(draws):
        N, D, loss = sum_law_points(alpha, beta, 1.0, noise=0.02, seed=100 + seed)
        fit = fit_sum_law(N, D, loss, bootstrap=300, seed=seed, workers=2)
        hits["alpha"] += fit.ci95["alpha"][0] <= alpha <= fit.ci95["alpha"][1]
        hits["beta"] += fit.ci95["beta"][0] <= beta <= fit.ci95["beta"][1]
    for name, n in hits.items():
        assert 0.85 <= n / draws <= 1.0, (name, n / draws)


def test_cli_frontier_holdout(tmp_path, capsys):
    table = learning_curves(widths=8, points=15)
    path = tmp_path / "laws.csv"
    cols = ["N", "D", "C", "loss", "run", "fraction"]
    lines = [",".join(cols)] + [",".join(str(table[c][i]) for c in cols) for i in range(len(table))]
    path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "fits.json"
    args = ["fit", str(path), "--law", "frontier", "--bootstrap", "0", "--holdout-top-compute", "0.3"]
    assert main(args + ["--json", str(out)]) == 0
    assert "frontier_C holdout" in capsys.readouterr().out
    import json

    assert json.loads(out.read_text())["holdout"][0]["law"] == "frontier_C"


def test_ema_smooths_each_run_in_order_of_x():
    from symscale.fit.frontier import smoothed

    loss = np.array([4.0, 2.0, 1.0, 8.0, 4.0])
    x = np.array([1.0, 2.0, 3.0, 1.0, 2.0])
    runs = np.array(["a", "a", "a", "b", "b"])
    assert smoothed(loss, x, runs, 0.5).tolist() == [4.0, 3.0, 2.0, 8.0, 6.0]
    assert smoothed(loss, x, runs, 0.0).tolist() == loss.tolist()
    noisy = learning_curves(widths=8, points=20)
    noisy.columns["loss"] = noisy["loss"] * np.exp(0.05 * np.random.default_rng(0).normal(size=len(noisy)))
    plain = fit_frontier(noisy["C"], noisy["loss"], runs=noisy["run"], fraction=noisy["fraction"], bootstrap=0)
    ema = fit_frontier(noisy["C"], noisy["loss"], runs=noisy["run"], fraction=noisy["fraction"], ema=0.6, bootstrap=0)
    assert ema.settings["ema"] == 0.6 and plain.settings["ema"] == 0.0
    assert ema.params["gamma"] != plain.params["gamma"]


def test_the_frontier_law_is_drawn_over_the_frontier_range_only():
    from symscale.fit.frontier import frontier_curve

    table = learning_curves(widths=8, points=20)
    fit = fit_frontier(
        table["C"], table["loss"], runs=table["run"], fraction=table["fraction"], drop_fraction=0.1, bootstrap=0
    )
    x, _ = frontier_curve(fit)
    assert x.min() == pytest.approx(min(fit.extra["frontier_x"])) and x.max() == pytest.approx(
        max(fit.extra["frontier_x"])
    )
    assert x.min() > table["C"].min()  # the first evaluations (dropped, off the frontier) are not spanned
