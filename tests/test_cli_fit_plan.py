"""`fit --law all` fits every group it can, the bootstrap reports progress, `plan` warns when it extrapolates."""

import csv
import io
import json

import numpy as np
import pytest

from symscale.cli import main
from symscale.fit.frontier import fit_frontier
from symscale.fit.parametric import fit_sum_law


def _table(path, with_bad_groups: bool = True):
    """egnn: 4 widths x 8 evaluations of a known sum law; mpnn one width (no sum law); esen a single row."""
    rng = np.random.default_rng(0)
    rows = []
    for arch, widths in (("egnn", 4), ("mpnn", 1 if with_bad_groups else 4)):
        for w in range(widths):
            N = 1e4 * 2**w
            for j in range(1, 9):
                D = 1e4 * j
                loss = (2 * N**-0.3 + 3 * D**-0.3) * (1 + 0.01 * rng.normal())
                rows.append({"arch": arch, "run": f"{arch}-{w}", "N": N, "D": D, "C": 6 * N * D, "loss": loss,
                             "fraction": j / 8})  # fmt: skip
    if with_bad_groups:
        rows.append({"arch": "esen", "run": "esen-0", "N": 1e4, "D": 1e3, "C": 6e7, "loss": 1.0, "fraction": 1.0})
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_fit_all_fits_every_group_it_can_and_reports_the_others_in_one_line_each(tmp_path, capsys):
    table = _table(tmp_path / "laws.csv")
    argv = ["fit", str(table), "--law", "all", "--group-by", "arch", "--bootstrap", "0", "--quiet"]
    assert main(argv + ["--holdout-top-compute", "0.3", "--json", str(tmp_path / "f.json")]) == 0
    out = capsys.readouterr().out.splitlines()
    fits = json.loads((tmp_path / "f.json").read_text())["fits"]
    failed = [f for f in fits if not f["ok"]]
    assert {f["group"] for f in fits if f["ok"]} == {"egnn", "mpnn"}  # mpnn's frontier is fitted
    assert {(f["group"], f["law"]) for f in failed} >= {("mpnn", "sum"), ("esen", "sum"), ("esen", "frontier_C")}
    for f in failed:  # one line each, naming group, law and reason; nothing indented below it
        (line,) = [i for i, x in enumerate(out) if x.startswith(f"[{f['group']}] {f['law']}: not possible: ")]
        assert not out[line + 1].startswith("  ")
    assert f"{len(fits) - len(failed)} of {len(fits)} fits done; {len(failed)} not possible" in "\n".join(out)
    # the holdout check runs for egnn although it is not possible for mpnn and esen
    assert any(x.startswith("[egnn] sum holdout (top compute): fitted on") for x in out)
    assert any(x.startswith("[esen] holdout (top compute): not possible: ") for x in out)


def _reported(fit) -> list[tuple[int, int]]:
    from symscale.fit.bootstrap import reporting

    calls = []
    with reporting(lambda done, total: calls.append((done, total))):
        fit()
    return calls


def test_bootstrap_reports_progress_to_the_callback_and_never_prints(capsys):
    rng = np.random.default_rng(1)
    N = np.repeat([1e4, 2e4, 4e4, 8e4, 1.6e5, 3.2e5], 4)
    D = np.tile([1e4, 3e4, 1e5, 3e5], 6)
    loss = (2 * N**-0.3 + 3 * D**-0.3) * (1 + 0.01 * rng.normal(size=len(N)))
    runs = np.repeat(np.arange(6), 4).astype(str)
    for fit in (
        lambda: fit_sum_law(N, D, loss, runs=runs, fix_E=0.0, bootstrap=40, workers=2),
        lambda: fit_frontier(N * D * 6, loss, runs=runs, bootstrap=40),
    ):
        calls = _reported(fit)
        assert calls[0] == (0, 40) and calls[-1] == (40, 40) and len(calls) > 2
        assert all(a[0] < b[0] for a, b in zip(calls, calls[1:], strict=False))
    fit_sum_law(N, D, loss, runs=runs, fix_E=0.0, bootstrap=8, workers=1)  # no callback outside the block
    assert capsys.readouterr().out == ""


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_fit_draws_the_bootstrap_bar_on_a_terminal(tmp_path, monkeypatch):
    table = _table(tmp_path / "laws.csv", with_bad_groups=False)
    terminal = _Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    assert main(["fit", str(table), "--law", "frontier", "--group-by", "arch", "--bootstrap", "30"]) == 0
    assert "bootstrap" in terminal.getvalue() and "30/30" in terminal.getvalue()


@pytest.fixture(scope="module")
def fits(tmp_path_factory):
    root = tmp_path_factory.mktemp("plan")
    table = _table(root / "laws.csv", with_bad_groups=False)
    argv = ["fit", str(table), "--law", "all", "--group-by", "arch", "--bootstrap", "60", "--workers", "1"]
    assert main(argv + ["--quiet", "--json", str(root / "fits.json")]) == 0
    return root / "fits.json"


def test_plan_warns_with_decades_when_it_extrapolates(fits, capsys):
    capsys.readouterr()
    assert main(["plan", "--fits", str(fits), "--budget", "1e18"]) == 0
    out = capsys.readouterr().out
    # fitted: N up to 8e4, D up to 8e4, C = 6 N D up to 3.84e10
    assert "warning: [egnn] the budget C = 1e+18 is 7.4 decades above the largest fitted C (3.84e+10)" in out
    assert "warning: [egnn] N* = " in out and "decades above the largest fitted N (8e+04)" in out
    assert "warning: [egnn] D* = " in out and "decades above the largest fitted D (8e+04)" in out


def test_plan_inside_the_fitted_range_has_no_budget_warning_and_shows_intervals(fits, capsys):
    capsys.readouterr()
    assert main(["plan", "--fits", str(fits), "--budget", "1e9"]) == 0
    out = capsys.readouterr().out
    assert "the budget C" not in out
    ci = [x for x in out.splitlines() if "95% CI" in x]
    assert len(ci) == 2 and all("N* [" in x and "D* [" in x and "loss* [" in x for x in ci)
    lo, hi = (float(v) for v in ci[0].split("N* [")[1].split("]")[0].split(","))
    n_star = float([x for x in out.splitlines() if x.startswith("egnn")][0].split()[2])
    assert lo < n_star < hi


def test_plan_on_a_fits_file_without_ranges_says_so(fits, tmp_path, capsys):
    doc = json.loads(fits.read_text())
    for f in doc["fits"]:
        for key in ("N_range", "D_range", "ND_range", "bootstrap_params"):
            f["extra"].pop(key, None)
    old = tmp_path / "old.json"
    old.write_text(json.dumps(doc))
    capsys.readouterr()
    assert main(["plan", "--fits", str(old), "--budget", "1e18"]) == 0
    assert "records no fitted range" in capsys.readouterr().out
