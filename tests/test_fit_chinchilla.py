"""Golden regression: Epoch AI's replication of Chinchilla's approach 3.

Reference figures: Besiroglu, Erdil, Barnett, You, "Chinchilla Scaling: A replication attempt" (Epoch AI,
2024, arXiv 2404.10102), fit to the 240 points they extracted from Chinchilla's Figure 4 (the 5 highest-loss
points excluded): E = 1.817 (SE 0.026), alpha = 0.3478 (SE 0.0154), beta = 0.3658 (SE 0.0206),
A = 482 (SE 125), B = 2085 (SE 1293), a = 0.513. The data file is theirs, as published.
"""

from pathlib import Path

import numpy as np
import pytest

from symscale.cli import main
from symscale.fit import fit_sum_law, read_table

DATA = Path(__file__).parent / "data" / "chinchilla_epoch_svg_extracted.csv"
PUBLISHED = {"E": 1.817, "alpha": 0.3478, "beta": 0.3658, "A": 482.0, "B": 2085.0}
PUBLISHED_SE = {"E": 0.026, "alpha": 0.0154, "beta": 0.0206, "A": 125.0, "B": 1293.0}


def chinchilla():
    table = read_table(DATA, columns={"N": "Model Size"}, derive={"D": "{Training FLOP} / (6 * {N})"})
    keep = np.zeros(len(table), dtype=bool)
    keep[np.argsort(table["loss"])[:-5]] = True  # Epoch excluded the 5 highest-loss points
    return table.select(keep)


def test_point_estimates_match_epoch():
    t = chinchilla()
    assert len(t) == 240
    fit = fit_sum_law(t["N"], t["D"], t["loss"], bootstrap=0)
    assert abs(fit.params["alpha"] - PUBLISHED["alpha"]) < 0.005
    assert abs(fit.params["beta"] - PUBLISHED["beta"]) < 0.005
    assert abs(fit.params["E"] - PUBLISHED["E"]) < 0.01
    assert abs(fit.derived["a"] - 0.513) < 0.005
    assert fit.converged


def test_bootstrap_standard_errors_match_epoch_within_20_percent():
    t = chinchilla()
    fit = fit_sum_law(t["N"], t["D"], t["loss"], bootstrap=4000, seed=42, workers=2)
    for name, published in PUBLISHED_SE.items():
        assert abs(fit.se[name] / published - 1) < 0.2, (name, fit.se[name], published)
    lo, hi = fit.ci95["alpha"]
    assert lo < fit.params["alpha"] < hi


def test_the_readme_command_reproduces_it(tmp_path, capsys):
    out = tmp_path / "fit.json"
    args = ["fit", str(DATA), "--col", "N=Model Size", "--derive", "D={Training FLOP} / (6 * {N})"]
    assert main(args + ["--drop-highest-loss", "5", "--l-inf", "free", "--bootstrap", "0", "--json", str(out)]) == 0
    import json

    fit = json.loads(out.read_text())["fits"][0]
    assert (
        fit["n_points"] == 240 and fit["n_excluded"] == 5 and abs(fit["params"]["alpha"] - PUBLISHED["alpha"]) < 0.005
    )
    assert "alpha" in capsys.readouterr().out


def test_varpro_and_fixed_E_run_on_the_same_data():
    t = chinchilla()
    varpro = fit_sum_law(t["N"], t["D"], t["loss"], method="varpro", bootstrap=0)
    fixed = fit_sum_law(t["N"], t["D"], t["loss"], fix_E=0, bootstrap=0)
    assert fixed.params["E"] == 0.0 and fixed.settings["fix_E"] == 0
    assert 0.2 < varpro.params["alpha"] < 0.6 and varpro.params["E"] > 0
    # with E forced to zero the power laws must absorb the floor: much smaller exponents
    assert fixed.params["alpha"] < 0.5 * PUBLISHED["alpha"] or fixed.params["beta"] < 0.5 * PUBLISHED["beta"]


@pytest.mark.parametrize("fraction", [0.3])
def test_holdout_reports_prediction_error(fraction, capsys):
    args = ["fit", str(DATA), "--col", "N=Model Size", "--derive", "D={Training FLOP} / (6 * {N})"]
    assert main(args + ["--l-inf", "free", "--bootstrap", "0", "--holdout-top-compute", str(fraction)]) == 0
    assert "holdout" in capsys.readouterr().out
