"""Profiles across model sizes from learning curves drawn from a known sum law: the values at a fixed D, the
IsoFLOP parabola's minimum and the compute-optimal points agree with the law's closed form."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from symscale.fit.allocation import compute_optimal
from symscale.fit.profiles import allocation_points, fixed_levels, isoflop_parabola, profile_at
from symscale.fit.results import FitResult

sys.path.insert(0, str(Path(__file__).parent))
from test_fit_laws import learning_curves  # noqa: E402

ALPHA, BETA, A, B, K = 0.5, 0.3, 40.0, 80.0, 6.0
LAW = {"E": 0.0, "A": A, "B": B, "alpha": ALPHA, "beta": BETA}


@pytest.fixture(scope="module")
def table():
    return learning_curves(ALPHA, BETA, A=A, B=B, k=K, widths=20, points=60)


def test_profile_at_fixed_d_is_the_law(table):
    profile = profile_at(table, "D", 1e7)
    assert len(profile.N) == 20 and np.all(np.diff(profile.N) > 0)
    expected = A * profile.N**-ALPHA + B * 1e7**-BETA
    assert profile.loss == pytest.approx(expected, rel=1e-3)


def test_fixed_levels_are_reached_by_enough_sizes(table):
    levels = fixed_levels(table, "C", 4)
    assert 1 <= len(levels) <= 4
    assert all(len(profile_at(table, "C", c).N) >= 3 for c in levels)


def test_isoflop_parabola_minimum_is_near_the_compute_optimal_n(table):
    budget = 1e13
    parabola = isoflop_parabola(profile_at(table, "C", budget))
    n_star = float(compute_optimal(LAW, budget, K)[0])
    assert parabola is not None and parabola.N_opt is not None
    assert abs(np.log(parabola.N_opt / n_star)) < np.log(1.6), (parabola.N_opt, n_star)
    n, loss = parabola.curve()
    assert n[0] == pytest.approx(parabola.N_range[0]) and loss.min() == pytest.approx(parabola.loss_opt, rel=1e-2)


def test_a_profile_of_two_sizes_has_no_parabola(table):
    profile = profile_at(table, "C", 1e13)
    two = type(profile)(profile.level, profile.N[:2], profile.loss[:2])
    assert isoflop_parabola(two) is None


def test_allocation_points_from_the_sum_law_follow_its_closed_form(table):
    sum_fit = FitResult(group="x", law="sum", params=LAW)
    points = allocation_points(table, None, sum_fit)
    assert points is not None and points.source == "sum" and points.k == pytest.approx(K)
    C = np.geomspace(1e11, 1e14, 5)
    n_star, d_star = points.curve(C)
    expected_n, expected_d, _ = compute_optimal(LAW, C, K)
    assert n_star == pytest.approx(expected_n, rel=1e-9) and d_star == pytest.approx(expected_d, rel=1e-9)
    assert points.D_star == pytest.approx(points.C / (K * points.N_star))


def test_allocation_points_prefer_a_successful_isoflop_fit(table):
    iso = FitResult(
        group="x", law="isoflop", params={"a": 0.4, "G": 2.0}, extra={"budgets": [1e12, 1e13], "N_opt": [1e4, 3e4]}
    )
    points = allocation_points(table, iso, None)
    assert points.source == "isoflop" and points.N_star.tolist() == [1e4, 3e4]
    assert points.curve(np.array([1e12]))[0] == pytest.approx(2.0 * 1e12**0.4)
    failed = FitResult.failed("x", "isoflop", "too few budgets")
    assert allocation_points(table, failed, None).source == "sum"
    assert allocation_points(table, failed, None).curve(np.array([1e12])) is None  # no sum law: points only
