"""The report's tables from real fits (symscale.fit) of a synthetic laws table with known exponents."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from symscale.report import narrative, reference, tables
from symscale.report.render import load_study

sys.path.insert(0, str(Path(__file__).parent))
from symscale.fit.menu import FitSettings, fit_table  # noqa: E402
from symscale.fit.table import read_table  # noqa: E402
from test_report_render import gamma_of, make_study  # noqa: E402

ARCHS = ("mpnn", "esen")


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    root = make_study(tmp_path_factory.mktemp("fit") / "study", archs=ARCHS)
    results = fit_table(read_table(root / "laws.csv"), FitSettings(bootstrap=40, seed=0))
    return results, root


def test_fitted_gamma_is_the_table_cell_and_near_the_truth(fitted):
    fits, _ = fitted
    families = {a: reference.FAMILIES[a] for a in ARCHS}
    rows = {r[0]: r for r in tables.exponent_table(fits, ARCHS, families).rows}
    for arch in ARCHS:
        fit = tables.find_fit(fits, arch, "frontier_C")
        assert fit is not None and fit.ok, fit
        gamma = fit.params["gamma"]
        cell = rows[families[arch].label][3]
        assert float(re.match(r"[0-9.]+", cell).group()) == pytest.approx(gamma, rel=5e-3)
        assert abs(gamma - gamma_of(arch)) < 0.06, (arch, gamma, gamma_of(arch))


def test_sum_law_exponents_recovered(fitted):
    fits, _ = fitted
    for arch, (alpha, beta) in (("mpnn", (0.28, 0.31)), ("esen", (0.8, 0.75))):
        est_alpha = tables.estimate(tables.find_fit(fits, arch, "sum"), "alpha")
        est_beta = tables.estimate(tables.find_fit(fits, arch, "sum"), "beta")
        assert est_alpha is not None and abs(est_alpha.value - alpha) < 0.1
        assert est_beta is not None and abs(est_beta.value - beta) < 0.1


def test_narrative_from_real_fits_separates_esen_from_mpnn(fitted, tmp_path):
    fits, root = fitted
    data = load_study(root)
    data = type(data)(**{**data.__dict__, "fits": fits})
    text = " ".join(narrative.what_this_shows(data))
    assert "eSEN > MPNN" in text  # gamma 0.39 vs 0.15: far apart
