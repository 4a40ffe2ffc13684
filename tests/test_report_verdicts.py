"""The report's verdicts on the paper's three claims and on every pair of families (symscale.report.verdicts,
with the interval arithmetic of symscale.fit.compare): synthetic fit results for each verdict, then a
fake-run study through the report."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from fake_runs import fake_run
from symscale.fit.compare import Interval, compare_intervals, locate
from symscale.fit.results import FitResult
from symscale.report import verdicts
from symscale.report.render import family_info, write_report
from symscale.study.runner import run_study
from symscale.study.spec import load_spec


def _frontier(key: str, gamma: float, lo: float, hi: float, unresolved: dict | None = None) -> FitResult:
    arch, _, options = key.partition("-")
    return FitResult(
        group=key, law="frontier_C", params={"gamma": gamma, "F": 1.0}, ci95={"gamma": [lo, hi]},
        arch=arch, options=options, unresolved=unresolved or {},
    )  # fmt: skip


def _isoflop(key: str, a: float, lo: float, hi: float) -> FitResult:
    return FitResult(group=key, law="isoflop", params={"a": a, "G": 1.0}, ci95={"a": [lo, hi]}, arch=key)


def _families(keys):
    return {k: family_info(k.partition("-")[0], options=k.partition("-")[2]) for k in keys}


def _verdicts(fits, keys):
    return verdicts.claim_verdicts(fits, list(keys), _families(keys))


def test_interval_comparison_is_disjoint_or_overlapping():
    a, b = Interval(0.3, 0.25, 0.35), Interval(0.1, 0.05, 0.15)
    assert compare_intervals(a, b) == "above" and compare_intervals(b, a) == "below"
    assert compare_intervals(a, Interval(0.2, 0.1, 0.25)) == "overlapping"  # touching at 0.25 is overlapping
    assert compare_intervals(a, Interval(0.1, 0.0, 0.2, unresolved="zero-width interval")) == "unresolved"
    assert compare_intervals(a, Interval(0.1)) == "unresolved"
    assert locate(0.5, Interval(0.45, 0.3, 0.6)) == "inside"
    assert locate(0.5, Interval(0.7, 0.6, 0.8)) == "above" and locate(0.5, Interval(0.2, 0.1, 0.3)) == "below"


KEYS = ("mpnn", "egnn", "gemnet_oc", "esen")


@pytest.mark.parametrize(
    ("egnn", "verdict"),
    [
        ((0.2, 0.17, 0.23), "supported"),  # every equivariant interval above MPNN's
        ((0.12, 0.09, 0.15), "not resolved"),  # MC-EGNN's overlaps MPNN's
        ((0.05, 0.03, 0.07), "contradicted"),  # MC-EGNN's below MPNN's
    ],
)
def test_equivariance_claim(egnn, verdict):
    fits = [
        _frontier("mpnn", 0.12, 0.10, 0.14),
        _frontier("egnn", *egnn),
        _frontier("gemnet_oc", 0.25, 0.2, 0.3),
        _frontier("esen", 0.4, 0.35, 0.45),
    ]
    claim = _verdicts(fits, KEYS)[0]
    assert claim.verdict == verdict
    assert "MC-EGNN" in claim.evidence and f"[{egnn[1]:.3g}, {egnn[2]:.3g}]" in claim.evidence
    assert "[0.1, 0.14]" in claim.evidence  # MPNN's interval is shown beside each comparison


def test_equivariance_claim_without_an_interval_is_not_resolved():
    fits = [_frontier("mpnn", 0.12, 0.10, 0.14), _frontier("esen", 0.4, 0.4, 0.4, {"gamma": "zero-width interval"})]
    claim = _verdicts(fits, ("mpnn", "esen"))[0]
    assert claim.verdict == "not resolved" and "zero-width interval" in claim.evidence
    assert _verdicts([_frontier("esen", 0.4, 0.35, 0.45)], ("esen",))[0].evidence.startswith("Not tested")


@pytest.mark.parametrize(
    ("l4", "verdict"),
    [((0.4, 0.37, 0.43), "supported"), ((0.36, 0.33, 0.39), "not resolved"), ((0.2, 0.18, 0.22), "contradicted")],
)
def test_tensor_order_claim_compares_esen_lmax_groups(l4, verdict):
    fits = [_frontier("esen-l2", 0.35, 0.32, 0.36), _frontier("esen-l4", *l4)]
    claim = _verdicts(fits, ("esen-l2", "esen-l4"))[1]
    assert claim.verdict == verdict and "eSEN (l4)" in claim.evidence and "eSEN (l2)" in claim.evidence


def test_tensor_order_claim_needs_two_lmax_groups():
    claim = _verdicts([_frontier("esen", 0.4, 0.35, 0.45)], ("esen",))[1]
    assert claim.verdict == "not resolved" and "Not tested" in claim.evidence


@pytest.mark.parametrize(
    ("intervals", "verdict"),
    [
        ([(0.48, 0.35, 0.62), (0.55, 0.4, 0.7)], "supported"),
        ([(0.48, 0.35, 0.62), (0.8, 0.7, 0.9)], "contradicted"),  # 0.5 outside gemnet_oc's interval
        ([(0.48, -0.3, 1.4), (0.55, 0.4, 0.7)], "not resolved"),  # mpnn's interval includes 0 and 1: says nothing
    ],
)
def test_allocation_claim(intervals, verdict):
    fits = [_isoflop(k, *iv) for k, iv in zip(("mpnn", "gemnet_oc"), intervals)]
    claim = _verdicts(fits, ("mpnn", "gemnet_oc"))[2]
    assert claim.verdict == verdict and "GemNet-OC a = " in claim.evidence
    assert _verdicts([], ("mpnn",))[2].verdict == "not resolved"


def test_pair_table_states_every_pair_with_both_intervals():
    fits = [
        _frontier("mpnn", 0.12, 0.10, 0.14),
        _frontier("egnn", 0.13, 0.11, 0.16),
        _frontier("esen", 0.4, 0.35, 0.45),
    ]
    table = verdicts.pair_table(fits, ["mpnn", "egnn", "esen"], _families(("mpnn", "egnn", "esen")))
    got = {(r[0], r[2]): (r[1], r[3], r[4]) for r in table.rows}
    assert got == {
        ("MPNN", "MC-EGNN"): ("0.12 [0.1, 0.14]", "0.13 [0.11, 0.16]", "overlapping"),
        ("MPNN", "eSEN"): ("0.12 [0.1, 0.14]", "0.4 [0.35, 0.45]", "separated below"),
        ("MC-EGNN", "eSEN"): ("0.13 [0.11, 0.16]", "0.4 [0.35, 0.45]", "separated below"),
    }


def _fake_study(tmp_path: Path) -> Path:
    data = tmp_path / "data.xyz"
    data.write_text("")  # the fake run function never reads it
    raw = {
        "name": "fake",
        "dataset": {"path": str(data), "val": 5},
        "families": [{"arch": "mpnn", "widths": [2, 3, 5, 8, 13]}, {"arch": "esen", "widths": [2, 3, 5, 8, 13]}],
        "evaluation": {"eval_points": 5},
        "executor": {"kind": "local", "workers": 1, "threads_per_worker": 1},
        "fits": {"bootstrap": 20, "seed": 0},
        "report": True,
    }
    path = tmp_path / "fake.yaml"
    path.write_text(yaml.safe_dump(raw))
    study = tmp_path / "study"
    run_study(load_spec(path), study, run_fn=fake_run, out=lambda s: None, reporter=write_report)
    return study


def test_a_fake_run_study_reports_its_verdicts(tmp_path):
    study = _fake_study(tmp_path)
    md = (study / "report" / "report.md").read_text()
    section = md.split("## Verdicts on the paper's claims", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.endswith(".") and ": **" in line]
    assert len(lines) == 3
    assert all(re.search(r"\*\*(supported|contradicted|not resolved)\*\*", line) for line in lines)
    # the pair row follows the fitted intervals in fits.json
    rows = json.loads((study / "fits.json").read_text())["fits"]
    fits = {f["arch"]: f for f in rows if f["law"] == "frontier_C" and not f.get("variant")}
    (m_lo, m_hi), (e_lo, e_hi) = fits["mpnn"]["ci95"]["gamma"], fits["esen"]["ci95"]["gamma"]
    row = [r for r in section.splitlines() if r.startswith("| MPNN")][0]
    expected = "separated above" if m_lo > e_hi else "separated below" if m_hi < e_lo else "overlapping"
    if fits["mpnn"]["unresolved"].get("gamma") or fits["esen"]["unresolved"].get("gamma"):
        expected = "not comparable"
    assert row.rstrip(" |").endswith(expected), row
