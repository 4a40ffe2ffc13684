"""The study report: numbers in the tables, a self-contained HTML, non-trivial PNGs, bad input.

Studies are synthetic: learning curves drawn from the sum law L = A N^-alpha + B D^-beta (E = 0), whose
compute frontier has gamma = alpha beta/(alpha + beta) per family.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from symscale.cli import main
from symscale.errors import SymscaleError
from symscale.fit.frontier import lower_envelope
from symscale.report import reference, write_report

# family -> (alpha, beta, A, B, kappa); gamma = alpha beta / (alpha + beta)
TRUE = {
    "mpnn": (0.28, 0.31, 8.0, 40.0, 2.3),
    "egnn": (0.39, 0.39, 20.0, 300.0, 28.0),
    "esen": (0.8, 0.75, 3000.0, 2e5, 74.0),
}
WIDTHS = (8, 16, 32, 64, 128)
FRACTIONS = (0.25, 1.0)
D_TOTAL = 2e7  # atoms in the full training set


def gamma_of(arch: str) -> float:
    alpha, beta = TRUE[arch][:2]
    return alpha * beta / (alpha + beta)


def _curve(arch: str, width: int, fraction: float, rng: np.random.Generator) -> list[dict]:
    alpha, beta, A, B, kappa = TRUE[arch]
    N = 40.0 * width**2  # 2.6e3 .. 6.6e5 parameters
    D = np.geomspace(fraction * D_TOTAL / 40, fraction * D_TOTAL, 10)
    loss = (A * N**-alpha + B * D**-beta) * np.exp(rng.normal(0, 0.01, len(D)))
    C = 3 * kappa * N * D
    seconds = C / 2e10 + 0.05 * D / 1e4  # a device that is slow per FLOP for small models
    return [
        dict(
            step=int(k + 1) * 10,
            fraction=float((k + 1) / len(D)),
            structures_seen=int(d / 20),
            atoms_seen=float(d),
            flops=float(c),
            flops_raw=float(c),
            device_seconds=float(s),
            val_loss=float(v),
            energy_mae_mev_per_atom=1.0,
            force_mae_mev_per_A=10.0,
            force_cos=0.9,
            **({"equivariance_error_forces": float(0.3 * N**-0.2 * (d / 1e5) ** -0.1)} if arch == "mpnn" else {}),
        )
        for k, (d, c, s, v) in enumerate(zip(D, C, seconds, loss))
    ]


def make_study(
    root: Path,
    archs=tuple(TRUE),
    widths=WIDTHS,
    fractions=FRACTIONS,
    modes=("architecture",),
    failed=(),
    laws=True,
    seed=0,
) -> Path:
    """A study directory: spec.yaml, runs/<id>/{run.json,status.json,metrics.jsonl}, laws.csv (no fits.json)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "data.xyz").write_text("1\nenergy=-1.0\nH 0 0 0\n" * 50)
    spec = {
        "name": "synthetic",
        "dataset": {"path": str(root / "data.xyz"), "val": 50},
        "families": [{"arch": a, "widths": list(widths)} for a in archs],
        "prefixes": list(fractions),
        "modes": list(modes),
        "fits": {"bootstrap": 20, "seed": 0},
    }
    (root / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    rows = []
    for arch in archs:
        for width in widths:
            for fraction in fractions:
                for mode in modes:
                    run_id = f"{arch}-w{width}-f{fraction}-{mode}"
                    lines = _curve(arch, width, fraction, rng)
                    if mode != "architecture":  # the ablations: slightly different learning
                        for line in lines:
                            line["val_loss"] *= 0.9
                            if "equivariance_error_forces" in line:
                                line["equivariance_error_forces"] *= 0.3 if mode == "augmentation" else 0.5
                    status = "failed" if run_id in failed else "finished"
                    if status == "failed":
                        lines = lines[:3]
                    _write_run(root / "runs" / run_id, arch, width, fraction, mode, lines, status)
                    rows += [_laws_row(arch, run_id, width, fraction, mode, line) for line in lines]
    if laws:
        header = "arch,run,width,N,D,C,H,loss,step,seed,mode,fraction,prefix"
        body = [",".join(str(r[k]) for k in header.split(",")) for r in rows]
        (root / "laws.csv").write_text("\n".join([header, *body]) + "\n")
    return root


def _write_run(run_dir: Path, arch, width, fraction, mode, lines, status) -> None:
    run_dir.mkdir(parents=True)
    info = {
        "arch": arch,
        "width": width,
        "N": 40 * width**2,
        "kappa": TRUE[arch][4],
        "seed": 0,
        "mode": mode,
        "train_fraction": fraction,
        "dataset": "synthetic.xyz (extxyz, 1000 structures)",
        "n_total": 1000,
        "provenance": {
            "symscale_version": "0.1.0",
            "git_sha": "abc123",
            "torch_version": "2.13.0+cpu",
            "device": "cpu",
            "precision": "bf16 autocast, float32 weights",
        },
    }
    (run_dir / "run.json").write_text(json.dumps(info))
    reason = "loss became NaN at step 30" if status == "failed" else None
    (run_dir / "status.json").write_text(json.dumps({"status": status, "reason": reason}))
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))


def _laws_row(arch, run_id, width, fraction, mode, line) -> dict:
    return dict(
        arch=arch,
        run=run_id,
        width=width,
        N=40 * width**2,
        D=line["atoms_seen"],
        C=line["flops"],
        H=line["device_seconds"] / 3600,
        loss=line["val_loss"],
        step=line["step"],
        seed=0,
        mode=mode,
        fraction=line["fraction"],
        prefix=fraction,
    )


def _fit(group, law, params, ci=None, derived=None, ok=True, reason=None) -> dict:
    ci = ci if ci is not None else {k: [v - 0.02, v + 0.02] for k, v in params.items()}
    return {
        "group": group,
        "law": law,
        "ok": ok,
        "reason": reason,
        "params": params if ok else {},
        "se": {},
        "ci95": ci if ok else {},
        "derived": derived or {},
        "derived_se": {},
        "derived_ci95": {k: [v - 0.03, v + 0.03] for k, v in (derived or {}).items()},
        "n_points": 60,
        "n_excluded": 6,
        "method": "synthetic",
        "settings": {},
        "converged": ok,
        "message": "",
    }


def hand_written_fits(root: Path, archs=tuple(TRUE)) -> dict:
    """fits.json with the true exponents (intervals +-0.02) and prefactors the synthetic data was drawn with."""
    laws = np.genfromtxt(root / "laws.csv", delimiter=",", names=True, dtype=None, encoding="utf-8")
    fits = []
    for arch in archs:
        alpha, beta, A, B, kappa = TRUE[arch]
        g = round(gamma_of(arch), 3)
        a, b = round(beta / (alpha + beta), 3), round(alpha / (alpha + beta), 3)
        # the frontier prefactor: L*(C) = F C^-gamma for the sum law with E = 0 and C = 3 kappa N D
        F = _frontier_prefactor(alpha, beta, A, B, kappa)
        fits.append(_fit(arch, "frontier_C", {"gamma": g, "L_inf": 0.0, "F": F}))
        rows = laws[laws["arch"] == arch]
        env = lower_envelope(rows["H"], rows["loss"])
        F_H = float(np.exp(np.mean(np.log(rows["loss"][env]) + 1.2 * g * np.log(rows["H"][env]))))
        fits.append(_fit(arch, "frontier_H", {"gamma": round(g * 1.2, 3), "L_inf": 0.0, "F": F_H}))
        fits.append(
            _fit(arch, "sum", {"E": 0.0, "A": A, "B": B, "alpha": alpha, "beta": beta}, derived={"gamma": g, "a": a})
        )
        # the IsoFLOP law N* = G C^a from the closed form of the sum law at C = 3 kappa N D
        G = (alpha * A / (beta * B)) ** (1 / (alpha + beta)) * (3 * kappa) ** -a
        budgets = np.geomspace(1e11, 1e13, 4)
        iso = _fit(arch, "isoflop", {"a": a, "G": G}, ci={"a": [a - 0.02, a + 0.02]}, derived={"b": b})
        iso["extra"] = {"budgets": budgets.tolist(), "N_opt": (G * budgets**a).tolist()}
        fits.append(iso)
    return {"fits": fits, "symscale_version": "0.1.0"}


def _frontier_prefactor(alpha, beta, A, B, kappa) -> float:
    C = 1e15
    N = np.geomspace(1e2, 1e9, 20001)
    L = A * N**-alpha + B * (C / (3 * kappa * N)) ** -beta
    return float(L.min() * C ** (alpha * beta / (alpha + beta)))


def _table(md: str, title: str) -> list[list[str]]:
    """Rows (cells) of the Markdown table under **title**."""
    block = md.split(f"**{title}**", 1)[1].strip().split("\n\n", 1)[0]
    lines = [line for line in block.splitlines() if line.startswith("|")]
    return [[c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]] for line in lines[2:]]


def _leading(cell: str) -> float:
    return float(re.match(r"[-+0-9.e]+", cell).group())


def _interval(cell: str) -> tuple[float, float]:
    lo, hi = re.search(r"\[([-+0-9.e]+), ([-+0-9.e]+)\]", cell).groups()
    return float(lo), float(hi)


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def synthetic_report(tmp_path_factory) -> Path:
    root = make_study(tmp_path_factory.mktemp("study") / "synthetic", failed=("egnn-w128-f1.0-architecture",))
    (root / "fits.json").write_text(json.dumps(hand_written_fits(root)))
    return write_report(root)


# ---------------------------------------------------------------- tests


def test_exponent_table_shows_the_fitted_numbers_and_the_paper(synthetic_report):
    md = (synthetic_report.parent / "report.md").read_text()
    rows = {r[0]: r for r in _table(md, "Scaling exponents per family")}
    assert set(rows) == {"MPNN", "MC-EGNN", "eSEN"}
    for arch, label in (("mpnn", "MPNN"), ("egnn", "MC-EGNN"), ("esen", "eSEN")):
        row = rows[label]
        g = round(gamma_of(arch), 3)
        assert _leading(row[3]) == pytest.approx(g, abs=6e-4)
        assert _interval(row[3]) == pytest.approx((g - 0.02, g + 0.02), abs=6e-4)
        assert _leading(row[4]) == reference.paper_value(arch, "gamma_flops")
        assert _leading(row[7]) == pytest.approx(TRUE[arch][0], abs=6e-4)  # alpha
        assert _leading(row[8]) == reference.paper_value(arch, "alpha")
        assert _leading(row[9]) == pytest.approx(TRUE[arch][1], abs=6e-4)  # beta
        assert _leading(row[10]) == reference.paper_value(arch, "beta")
    assert rows["MC-EGNN"][1:3] == ["2", "1"]  # nu, l


def test_consistency_and_kappa_tables(synthetic_report):
    md = (synthetic_report.parent / "report.md").read_text()
    rows = {r[0]: r for r in _table(md, "Consistency check")}
    assert rows["eSEN"][3] == "agree"  # frontier gamma == alpha beta/(alpha+beta) in the hand-written fits
    kappa = {r[0]: r for r in _table(md, "κ per family: measured and the paper's")}
    assert _leading(kappa["MC-EGNN"][1]) == pytest.approx(28.0)
    assert _leading(kappa["MC-EGNN"][4]) == pytest.approx(28.09)


def test_runs_table_lists_every_run_and_the_failed_one(synthetic_report):
    md = (synthetic_report.parent / "report.md").read_text()
    runs = _table(md, "Runs")
    assert len(runs) == len(TRUE) * len(WIDTHS) * len(FRACTIONS)
    failed = _table(md, "Runs that did not finish")
    assert [r[1] for r in failed] == ["egnn-w128-f1.0-architecture"]
    assert "NaN" in failed[0][5]


def test_narrative_claims_only_what_intervals_support(synthetic_report):
    md = (synthetic_report.parent / "report.md").read_text()
    shows = md.split("## What this shows", 1)[1].split("\n## ", 1)[0]
    # gamma: mpnn 0.147, egnn 0.195, esen 0.387, all +-0.02: esen separated from both, mpnn/egnn overlap? no:
    # [0.127, 0.167] and [0.175, 0.215] are disjoint, so all three pairs are ordered
    assert "eSEN > MPNN" in shows and "eSEN > MC-EGNN" in shows and "MC-EGNN > MPNN" in shows
    assert "cannot distinguish" not in shows


def test_html_is_self_contained(synthetic_report):
    text = synthetic_report.read_text()
    assert not re.search(r"https?://", text)
    assert not re.search(r"""src=["'](?!data:)""", text)  # every image is a data URI
    pngs = sorted(synthetic_report.parent.glob("*.png"))
    assert text.count("data:image/png;base64,") == len(pngs) >= 6
    # the only links: each figure's SVG and PDF, beside the page
    links = re.findall(r"""href=["']([^"']+)["']""", text)
    assert sorted(links) == sorted(f"{p.stem}.{ext}" for p in pngs for ext in ("svg", "pdf"))
    md = (synthetic_report.parent / "report.md").read_text()
    for png in pngs:
        assert f"]({png.name})" in md and f"]({png.stem}.svg)" in md and f"]({png.stem}.pdf)" in md


def test_figures_are_nontrivial(synthetic_report):
    from matplotlib.image import imread

    names = {p.stem for p in synthetic_report.parent.glob("*.png")}
    assert {"frontier", "learning_curves", "parameter_scaling", "data_scaling", "isoflop", "compute_optimal"} <= names
    for name in names:
        path = synthetic_report.parent / f"{name}.png"
        assert path.stat().st_size > 20_000, name
        pixels = imread(path)[..., :3]
        assert pixels.std() > 0.05, name
        assert pixels.shape[1] >= 1500, name  # 150 dpi on a figure >= 10 inches wide


def test_provenance_names_dataset_versions_and_devices(synthetic_report):
    md = (synthetic_report.parent / "report.md").read_text()
    items = dict(r[:2] for r in _table(md, "Provenance"))
    assert "fingerprint sha256:" in items["dataset files"]
    assert items["git SHA (runs)"] == "abc123" and items["devices (runs)"] == "cpu"
    assert items["precision (runs)"] == "bf16 autocast, float32 weights"
    assert items["dataset size [structures]"] == "1000"
    assert "torch version (report)" in items and "symscale version (report)" in items
    assert "```yaml\nname: synthetic" in md  # the study spec


def test_too_few_runs_still_reports_why_through_the_cli(tmp_path, capsys):
    root = make_study(tmp_path / "tiny", archs=("egnn",), widths=(16,), fractions=(1.0,), laws=False)
    reason = "too few model sizes: 1 < 3"
    fits = [_fit("egnn", law, {}, ok=False, reason=reason) for law in ("frontier_C", "frontier_H", "sum", "isoflop")]
    (root / "fits.json").write_text(json.dumps({"fits": fits}))
    assert main(["report", str(root), "--out", str(tmp_path / "out")]) == 0
    assert "report.html" in capsys.readouterr().out
    md = (tmp_path / "out" / "report.md").read_text()
    row = _table(md, "Scaling exponents per family")[0]
    assert row[3].startswith("not possible [") and row[7].startswith("not possible [")
    assert reason in md and "laws.csv is missing" in md
    assert {p.name for p in (tmp_path / "out").glob("*.png")} >= {"frontier.png", "learning_curves.png"}


def test_missing_study_is_a_user_error(tmp_path):
    assert main(["report", str(tmp_path / "nope")]) == 2
    with pytest.raises(SymscaleError):
        write_report(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SymscaleError, match="no laws.csv"):
        write_report(tmp_path / "empty")


def test_modes_add_a_symmetry_figure_and_missing_fits_are_not_made_by_the_report(tmp_path, monkeypatch):
    import symscale.fit.menu

    def no_fitting(*args, **kwargs):
        raise AssertionError("the report must not fit")

    monkeypatch.setattr(symscale.fit.menu, "fit_table", no_fitting)
    modes = ("architecture", "symmetry_loss")
    root = make_study(tmp_path / "modes", archs=("mpnn",), widths=(8, 32), fractions=(1.0,), modes=modes)
    html = write_report(root)
    md = (html.parent / "report.md").read_text()
    assert "## Symmetry modes" in md and (html.parent / "symmetry_modes.png").is_file()
    assert "**Exponents per symmetry mode**" in md
    assert "fits.json is missing" in md
    command = re.search(r"symscale fit (\S+) .*--json (\S+)", md).group(0)
    assert "--group-by arch --bootstrap 20 --seed 0" in command  # the spec's fit settings
    monkeypatch.undo()
    assert main(command.split()[1:]) == 0  # the command the report names makes the study's fits
    md = (write_report(root).parent / "report.md").read_text()
    assert "fits.json is missing" not in md and "mpnn/symmetry_loss" in md


def test_a_fit_with_a_null_coefficient_is_reported_not_possible(tmp_path):
    """fits.json from an older symscale: a sum law 'ok' with B = inf, written as null (the figures raised
    TypeError on it)."""
    root = make_study(tmp_path / "null", archs=("mpnn", "esen"))
    doc = hand_written_fits(root, archs=("mpnn", "esen"))
    for fit in doc["fits"]:
        if fit["group"] == "mpnn" and fit["law"] == "sum":
            fit["params"]["B"] = None
    (root / "fits.json").write_text(json.dumps(doc))
    md = (write_report(root).parent / "report.md").read_text()
    row = {r[0]: r for r in _table(md, "Scaling exponents per family")}["MPNN"]
    assert row[7].startswith("not possible [")
    assert "not possible: non-finite coefficient (B = null)" in md
    assert "nan" not in row[7]


def test_family_labels_come_from_what_the_runs_recorded():
    from symscale.report.render import family_info

    chiral = {"symmetry": {"group": "SE(3)", "nu": 4, "l": 0, "rotation_equivariant": True}}
    assert family_info("gemnet_oc", [chiral, chiral]).group == "SE(3)"
    assert family_info("gemnet_oc", []).group == "E(3)"  # nothing recorded: the paper's staircase
    mixed = [chiral, {"symmetry": {"group": "E(3)", "nu": 4, "l": 0}}]
    assert family_info("gemnet_oc", mixed).group == "E(3)"


def test_report_imports_no_model_and_does_no_fit_mathematics():
    import subprocess
    import sys

    code = (
        "import sys, symscale.report.render, symscale.cli.report; "
        "print(sorted(m for m in sys.modules if m.startswith(('symscale.models', 'symscale.train', 'torch'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out
    sources = (Path(__file__).parents[1] / "src" / "symscale" / "report").glob("*.py")
    for path in sources:
        text = path.read_text()
        for call in ("polyfit", "np.interp", "minimize(", "fit_table(", "fit_laws_table("):
            assert call not in text, (path.name, call)


def _ablation_study(root: Path) -> Path:
    """A study whose eSEN runs come at lmax 2 and 4 (laws.csv options l2, l4) with the loss terms recorded,
    fitted by the study's call."""
    from symscale.fit.menu import fit_laws_table
    from symscale.fit.table import read_table

    make_study(root, archs=("esen",), widths=(8, 16, 32, 64, 128, 256))
    shutil.rmtree(root / "runs")  # a laws.csv-only study: its rows' run ids are the ablation runs below
    with (root / "laws.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    out = []
    for options, scale in (("l2", 1.3), ("l4", 1.0)):
        for r in rows:
            loss = float(r["loss"]) * scale
            out.append({**r, "run": f"{r['run']}-{options}", "options": options, "loss": loss,
                        "loss_force": 0.8 * loss ** 1.2, "loss_energy": loss - 0.8 * loss ** 1.2})  # fmt: skip
    with (root / "laws.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(out[0]))
        writer.writeheader()
        writer.writerows(out)
    fits = fit_laws_table(read_table(root / "laws.csv"), bootstrap=20, seed=0, workers=1)
    (root / "fits.json").write_text(json.dumps({"fits": [f.to_dict() for f in fits]}))
    return root


@pytest.fixture(scope="module")
def ablation_study(tmp_path_factory) -> Path:
    return _ablation_study(tmp_path_factory.mktemp("ablation") / "study")


def test_ablations_are_report_rows_with_the_lmax_figure_and_the_sensitivity_table(ablation_study):
    report = write_report(ablation_study)
    md = (report.parent / "report.md").read_text()
    families = [row[0] for row in _table(md, "Scaling exponents per family")]
    assert families == ["eSEN (l2)", "eSEN (l4)"]
    assert (report.parent / "lmax.png").stat().st_size > 5000 and "γ against lmax" in md
    sensitivity = _table(md, "L∞ sensitivity")
    assert [(r[0], r[1].split()[0]) for r in sensitivity] == [
        ("eSEN (l2)", "zero"), ("eSEN (l2)", "free"), ("eSEN (l4)", "zero"), ("eSEN (l4)", "free"),
    ]  # fmt: skip
    assert "E and L∞ fixed at 0 in every law" in md and "L is the total validation loss" in md
    assert "the first 5% of each run dropped" in md


def test_report_loss_force_refits_without_retraining(ablation_study, capsys):
    assert main(["report", str(ablation_study), "--loss", "force"]) == 0
    fits = json.loads((ablation_study / "fits-force.json").read_text())
    assert fits["loss"] == "force" and {f["settings"]["loss"] for f in fits["fits"]} == {"force"}
    md = (ablation_study / "report-force" / "report.md").read_text()
    assert "L is the force term" in md
    total = {
        (f["group"], f["law"], f["variant"]): f for f in json.loads((ablation_study / "fits.json").read_text())["fits"]
    }
    force = {(f["group"], f["law"], f["variant"]): f for f in fits["fits"]}
    key = ("esen-l4", "frontier_C", "")
    # loss_force = 0.8 L^1.2: its frontier exponent is 1.2 times the total's
    assert force[key]["params"]["gamma"] == pytest.approx(1.2 * total[key]["params"]["gamma"], rel=0.05)
