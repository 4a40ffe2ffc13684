"""Report tables and the generated text, from hand-written fit dictionaries (no figures, fast)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from symscale.fit.results import FitResult
from symscale.report import narrative, reference, tables


def _fit(group, law, params, lo_hi=None, ok=True, reason=None, derived=None, **fields) -> FitResult:
    ci = {k: list(lo_hi[k]) for k in lo_hi} if lo_hi else {}
    return FitResult.from_dict(
        {
            "group": group,
            "law": law,
            "ok": ok,
            "reason": reason,
            "params": params,
            "ci95": ci,
            "derived": derived or {},
            "derived_ci95": {},
            "n_points": 10,
            "n_excluded": 1,
            "method": "test",
            "converged": ok,
            "message": "",
            **fields,
        }
    )


FAMILIES = {a: reference.FAMILIES[a] for a in ("mpnn", "egnn", "gemnet_oc", "esen")}
DATA = SimpleNamespace(families=FAMILIES)


def test_formatting():
    assert tables.fmt(0.14159) == "0.142"
    assert tables.fmt(None) == "—"
    assert tables.fmt(2.5e6) == "2.50e+06"
    assert tables.fmt_estimate(tables.Estimate(0.2, 0.15, 0.25)) == "0.2 [0.15, 0.25]"
    assert tables.fmt_count(123456) == "1.23e+05" and tables.fmt_count(640) == "640"


def test_find_fit_matches_the_fields_a_fit_carries():
    fits = [
        _fit("mpnn", "sum", {"alpha": 0.3}),
        _fit("mpnn/augmentation", "sum", {"alpha": 0.5}, arch="mpnn", mode="augmentation"),
        _fit("esen-l2", "sum", {"alpha": 0.6}, arch="esen", options="l2"),
        _fit("esen-l4", "sum", {"alpha": 0.8}, arch="esen", options="l4"),
    ]
    assert tables.find_fit(fits, "mpnn", "sum").params["alpha"] == 0.3
    assert tables.find_fit(fits, "mpnn", "sum", "augmentation").params["alpha"] == 0.5
    assert tables.find_fit(fits, "esen", "sum", options="l4").params["alpha"] == 0.8
    assert tables.find_fit(fits, "egnn", "sum") is None
    # a label is never parsed: a fit that says it is mpnn's own is found as such whatever its label reads
    odd = [_fit("mpnn:mode=augmentation", "sum", {"alpha": 0.4}, arch="mpnn", mode="architecture")]
    assert tables.find_fit(odd, "mpnn", "sum").params["alpha"] == 0.4
    assert tables.find_fit(odd, "mpnn", "sum", "augmentation") is None


def test_estimate_reads_params_then_derived():
    fit = _fit("x", "sum", {"alpha": 0.3}, {"alpha": (0.2, 0.4)}, derived={"gamma": 0.1})
    assert tables.estimate(fit, "alpha") == tables.Estimate(0.3, 0.2, 0.4)
    assert tables.estimate(fit, "gamma") == tables.Estimate(0.1)
    assert tables.estimate(FitResult(group="x", law="sum", ok=False, reason="too few runs"), "alpha") is None
    assert tables.estimate(_fit("x", "sum", {"alpha": float("inf")}), "alpha") is None  # never ok


def test_impossible_fit_gets_a_numbered_reason():
    fits = [
        _fit("egnn", "frontier_C", {}, ok=False, reason="2 runs finished, need 3"),
        _fit("egnn", "sum", {}, ok=False, reason="a single data prefix"),
        _fit("mpnn", "frontier_C", {"gamma": 0.15, "F": 1.0}, {"gamma": (0.1, 0.2)}),
    ]
    table = tables.exponent_table(fits, ["mpnn", "egnn"], FAMILIES)
    rows = {r[0]: r for r in table.rows}
    assert rows["MPNN"][3] == "0.15 [0.1, 0.2]" and rows["MPNN"][4] == "0.14"
    assert rows["MC-EGNN"][3] == "not possible [1]" and rows["MC-EGNN"][7] == "not possible [2]"
    assert any("[1] egnn" in n and "not possible: 2 runs finished, need 3" in n for n in table.notes)
    assert any("[2] egnn" in n and "not possible: a single data prefix" in n for n in table.notes)


def test_consistency_uses_point_estimates_without_intervals():
    fits = [
        _fit("esen", "frontier_C", {"gamma": 0.4}, {"gamma": (0.35, 0.45)}),
        _fit("esen", "sum", {"alpha": 0.8, "beta": 0.8}),
    ]
    row = tables.consistency_table(fits, ["esen"], FAMILIES).rows[0]
    assert row[2] == "0.4" and row[3] == "no intervals"  # 0.8*0.8/1.6, no covariance to make an interval
    assert row[5] == "0.5"


def test_kappa_table_median_and_ratio():
    table = tables.kappa_table({"egnn": [20.0, 28.09, 30.0]}, ["egnn"], FAMILIES)
    assert table.rows[0][1] == "28.1" and table.rows[0][4] == "28.09" and table.rows[0][5] == "1"


def test_narrative_orders_only_disjoint_intervals():
    gammas = {
        "mpnn": tables.Estimate(0.14, 0.10, 0.18),
        "egnn": tables.Estimate(0.17, 0.12, 0.22),  # overlaps mpnn
        "esen": tables.Estimate(0.40, 0.35, 0.45),
    }
    text = narrative.gamma_ordering(DATA, gammas)
    assert "eSEN > MPNN" in text and "eSEN > MC-EGNN" in text
    assert "cannot distinguish" in text and "MPNN and MC-EGNN" in text
    assert "MC-EGNN > MPNN" not in text
    assert "agrees with the paper" in text


def test_narrative_flags_order_against_the_paper_and_missing_intervals():
    gammas = {"mpnn": tables.Estimate(0.5, 0.45, 0.55), "esen": tables.Estimate(0.2, 0.15, 0.25)}
    assert "Against the paper's order: MPNN > eSEN" in narrative.gamma_ordering(DATA, gammas)
    gammas = {"mpnn": tables.Estimate(0.14), "esen": tables.Estimate(0.4)}
    text = narrative.gamma_ordering(DATA, gammas)
    assert ">" not in text and "no ordering is claimed" in text
    assert "nothing is claimed" in narrative.gamma_ordering(DATA, {})


def test_paper_comparison_and_coverage():
    gammas = {"mpnn": tables.Estimate(0.15, 0.12, 0.18), "esen": tables.Estimate(0.2, 0.15, 0.25)}
    text = narrative.paper_comparison(DATA, gammas)
    assert "inside our 95% interval for MPNN (0.14)" in text and "outside it for eSEN (0.4)" in text
    runs = [SimpleNamespace(status="finished"), SimpleNamespace(status="failed")]
    laws = {"N": np.array([1e3, 5e3]), "D": np.array([1e5, 1e7]), "C": np.array([1e9, 1e12])}
    text = narrative.coverage(SimpleNamespace(runs=runs, archs=["mpnn"], laws=laws))
    assert "1 failed" in text and "less than a decade" in text and "2.0 decades" in text


def test_narrative_flags_families_that_barely_learned():
    rows = []
    for run, losses in (("m1", [1.46, 1.45, 1.44]), ("m2", [1.45, 1.40, 1.38])):  # falls of 1% and 5%
        rows += [{"arch": "mpnn", "run": run, "D": d, "loss": v} for d, v in zip((1e3, 1e4, 1e5), losses)]
    rows += [{"arch": "esen", "run": "e1", "D": d, "loss": v} for d, v in zip((1e3, 1e4, 1e5), (1.4, 0.8, 0.3))]
    laws = {k: np.array([r[k] for r in rows]) for k in ("arch", "run", "D", "loss")}  # as the report reads them
    laws["family"] = laws["arch"]  # no model options
    data = SimpleNamespace(families=FAMILIES, archs=["mpnn", "esen"], laws=laws)
    text = narrative.barely_learning(data)
    assert "MPNN (at most 5%)" in text and "eSEN" not in text
    laws["loss"][3:6] = [1.45, 1.2, 1.0]  # one run that learned clears the family
    assert narrative.barely_learning(data) == ""


def test_unresolved_intervals_print_why_not_numbers():
    free = {"l_inf": "free"}
    fits = [
        _fit("mpnn", "sum", {"E": 1.32e-26, "alpha": 0.3, "beta": 0.4},
             {"E": (1.32e-26, 1.32e-26), "alpha": (0.626, 33.6)}, settings=free,
             unresolved={"E": "zero-width interval", "alpha": "interval wider than the estimate"}),
        _fit("mpnn", "frontier_C", {"gamma": 0.15, "L_inf": 0.1, "F": 1.0}, {"gamma": (0.14, 0.16)}, settings=free),
    ]  # fmt: skip
    row = dict(
        zip(
            tables.exponent_table(fits, ["mpnn"], FAMILIES).columns,
            tables.exponent_table(fits, ["mpnn"], FAMILIES).rows[0],
        )
    )
    assert row["E (sum law)"] == "1.32e-26 (unresolved: zero-width interval)"
    assert row["α (params)"] == "0.3 (unresolved: interval wider than the estimate)" and "33.6" not in row["α (params)"]
    assert row["γ_C (FLOPs)"] == "0.15 [0.14, 0.16]"


def test_rows_are_families_with_options_and_the_sensitivity_row_shows_the_other_policy():
    zero, free = {"l_inf": "zero", "fix_E": 0}, {"l_inf": "free"}
    fits = []
    for options, gamma in (("l2", 0.3), ("l4", 0.4)):
        for variant, settings, shift in (("", zero, 0.0), ("l_inf=free", free, 0.05)):
            kw = dict(arch="esen", options=options, settings=settings, variant=variant)
            fits += [
                _fit(f"esen-{options}", "frontier_C", {"gamma": gamma + shift, "F": 1.0, "L_inf": shift}, **kw),
                _fit(f"esen-{options}", "sum", {"E": shift, "alpha": 0.8, "beta": 0.7}, **kw),
            ]
    families = {"esen-l2": reference.FamilyInfo("eSEN (l2)", "SO(3)", 2, 2, "esen", "l2"),
                "esen-l4": reference.FamilyInfo("eSEN (l4)", "SO(3)", 2, 4, "esen", "l4")}  # fmt: skip
    table = tables.exponent_table(fits, ["esen-l2", "esen-l4"], families)
    assert [(r[0], r[3]) for r in table.rows] == [("eSEN (l2)", "0.3"), ("eSEN (l4)", "0.4")]
    assert any("fixed at 0" in note for note in table.notes)
    assert tables.find_fit(fits, "esen", "sum") is None  # the ablations are never pooled under "esen"
    sens = tables.sensitivity_table(fits, ["esen-l2", "esen-l4"], families)
    assert [(r[0], r[1][:4], r[2]) for r in sens.rows] == [
        ("eSEN (l2)", "zero", "0.3"), ("eSEN (l2)", "free", "0.35"),
        ("eSEN (l4)", "zero", "0.4"), ("eSEN (l4)", "free", "0.45"),
    ]  # fmt: skip
    assert tables.sensitivity_table([f for f in fits if not f.variant], ["esen-l2"], families) is None
    assert (
        reference.paper_value("esen-l2", "gamma_flops") == 0.35
        and reference.paper_value("esen-l4", "gamma_flops") == 0.4
    )


def _degenerate_fits() -> list[FitResult]:
    """mpnn: intervals that fail the rule with no flag recorded (a fits.json from before the flags): zero width
    and wider than the estimate; egnn: plausible-looking intervals the fit menu flagged from its resamples."""
    zero, free = {"l_inf": "zero", "fix_E": 0}, {"l_inf": "free"}
    at_one = "80% of the resamples at one value"
    fits = [
        _fit("mpnn", "frontier_C", {"gamma": 0.15, "F": 1.0}, {"gamma": (0.15, 0.15)}, settings=zero),
        _fit("mpnn", "frontier_H", {"gamma": 0.2, "F": 1.0}, {"gamma": (0.05, 0.5)}, settings=zero),
        _fit("mpnn", "sum", {"E": 0.0, "alpha": 0.3, "beta": 0.4}, {"alpha": (0.05, 33.6), "beta": (0.4, 0.4)},
             settings=zero),
        _fit("mpnn", "isoflop", {"a": 0.5}, {"a": (0.1, 0.9)}, derived={"b": 0.5}, derived_ci95={"b": [0.5, 0.5]}),
        _fit("mpnn", "allocation", {}, derived={"a": 0.57, "b": 0.43, "gamma": 0.171},
             derived_ci95={"a": [0.57, 0.57], "b": [0.01, 0.99], "gamma": [0.0015, 0.9]}),
        _fit("mpnn", "frontier_C", {"gamma": 0.18, "F": 1.0, "L_inf": 1.32e-26},
             {"gamma": (0.01, 0.6), "L_inf": (1.32e-26, 1.32e-26)}, settings=free, variant="l_inf=free"),
        _fit("mpnn", "sum", {"E": 1.32e-26, "alpha": 0.35, "beta": 0.45},
             {"E": (1.32e-26, 1.32e-26), "alpha": (0.35, 3.0), "beta": (0.45, 0.45)}, settings=free,
             variant="l_inf=free"),
        _fit("egnn", "frontier_C", {"gamma": 0.2, "F": 1.0}, {"gamma": (0.19, 0.21)}, settings=zero,
             unresolved={"gamma": at_one}),
        _fit("egnn", "sum", {"E": 0.0, "alpha": 0.39, "beta": 0.39}, {"alpha": (0.38, 0.4), "beta": (0.38, 0.4)},
             settings=zero, unresolved={"alpha": at_one, "beta": at_one}),
    ]  # fmt: skip
    return fits


def _estimate_cells(table: tables.Table) -> list[str]:
    """The cells of `table` that print a measured value (not a label, a paper value, a status or a dash)."""
    skip = {"family", "ν", "ℓ", "L∞ policy", "agree?", "mode"}
    return [
        cell
        for row in table.rows
        for column, cell in zip(table.columns, row, strict=True)
        if column not in skip and "paper" not in column and cell not in ("—", "0 (fixed)", "—*")
    ]


def test_degenerate_intervals_are_flagged_in_every_table_the_markdown_the_html_and_the_narrative():
    """Zero-width intervals and intervals wider than the estimate are printed `value (unresolved: why)`, never
    as numbers, whether the fit flagged them or not: the laws (exponent) table's frontier, sum-law, IsoFLOP a/b
    and E cells, the consistency check, the L_inf sensitivity rows, the modes table, the Markdown and the HTML
    they render to, and the "what this shows" text."""
    from symscale.report.render import to_html, to_markdown

    fits, archs = _degenerate_fits(), ["mpnn", "egnn"]
    built = [
        tables.exponent_table(fits, archs, FAMILIES),
        tables.consistency_table(fits, archs, FAMILIES),
        tables.sensitivity_table(fits, archs, FAMILIES),
        tables.modes_table(fits, archs, ["architecture"], FAMILIES),
    ]
    for table in built:
        cells = _estimate_cells(table)
        assert cells, table.title
        for cell in cells:  # every measured value that has an interval here fails the rule: each is flagged
            assert "(unresolved: " in cell and "[" not in cell, (table.title, cell)
    exponents = dict(zip(built[0].columns, built[0].rows[0], strict=True))
    assert exponents["γ_C (FLOPs)"] == "0.15 (unresolved: zero-width interval)"
    assert exponents["α (params)"] == "0.3 (unresolved: interval wider than the estimate)"
    assert exponents["a (N* ~ C^a)"] == "0.5 (unresolved: interval wider than the estimate)"
    assert exponents["b (D* ~ C^b)"] == "0.5 (unresolved: zero-width interval)"
    egnn = dict(zip(built[0].columns, built[0].rows[1], strict=True))
    assert egnn["γ_C (FLOPs)"] == "0.2 (unresolved: 80% of the resamples at one value)"
    assert "agree" not in built[1].rows[0] and "differ" not in built[1].rows[0]  # nothing claimed
    text = to_markdown(built) + to_html(built, "t")
    for number in ("0.15, 0.15", "33.6", "0.05, 0.5", "0.1, 0.9", "1.32e-26, 1.32e-26", "0.19, 0.21"):
        assert number not in text, number
    assert text.count("unresolved: zero-width interval") >= 8 and "unresolved: interval wider" in text
    data = SimpleNamespace(families=FAMILIES, archs=archs, fits=fits)
    gammas = {a: tables.estimate(tables.find_fit(fits, a, "frontier_C"), "gamma") for a in archs}
    said = narrative.gamma_ordering(data, gammas)
    assert "MPNN 0.15 (unresolved: zero-width interval)" in said and "[0.15" not in said
    assert "Unresolved intervals" in said and "Separated" not in said and "(no bootstrap)" not in said
    assert narrative.paper_comparison(data, gammas) == "" and narrative.consistency(data) == ""


def test_a_resolved_interval_is_still_printed_as_numbers():
    fit = _fit("mpnn", "frontier_C", {"gamma": 0.15, "F": 1.0}, {"gamma": (0.12, 0.18)})
    assert tables.fmt_estimate(tables.estimate(fit, "gamma")) == "0.15 [0.12, 0.18]"
