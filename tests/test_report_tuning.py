"""The report's learning-rate tuning section (issue 13 item 1): a study whose spec tunes shows each family's
sweep (width, N, every rate with its final validation loss and terms, the chosen one marked, a figure); a
study whose spec ships its rates says so and shows them. Studies run with fake runs (tests/fake_runs.py)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from fake_runs import fake_lr_run
from symscale.report import write_report
from symscale.study.runner import run_study
from symscale.study.spec import load_spec

LRS = [1e-3, 3e-2, 1.0, 1e3]  # fake_lr_run: the optimum at 3e-2, NaN (failed) above 100


def _study(tmp_path: Path, tune: bool) -> Path:
    data = tmp_path / "data.xyz"
    data.write_text("")  # the fake run function never reads it
    raw = {
        "name": "tuned" if tune else "shipped",
        "dataset": {"path": str(data), "val": 5, "size_hint": {"structures": 200, "atoms_per_structure": 10}},
        "families": [{"arch": "mpnn", "widths": [3, 5]}, {"arch": "egnn", "widths": [2, 4], "training": {"lr": 2e-3}}],
        "evaluation": {"eval_points": 3},
        "training": {"lr": 1e-3},
        "executor": {"kind": "local", "workers": 1, "threads_per_worker": 1},
        "fits": {"bootstrap": 0, "sensitivity": False},
        "report": False,
        **({"tune": {"lrs": LRS, "width": {"mpnn": 4}, "prefix": 0.5}} if tune else {}),
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    study = tmp_path / "study"
    run_study(load_spec(path), study, run_fn=fake_lr_run, out=lambda _: None)
    return study


def _section(text: str) -> str:
    """The markdown of the "Learning-rate tuning" section (up to the next level-2 heading)."""
    start = text.index("## Learning-rate tuning")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


def test_a_tuned_study_shows_every_sweep_with_the_chosen_rate(tmp_path):
    html_path = write_report(_study(tmp_path, tune=True))
    section = _section((html_path.parent / "report.md").read_text())
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 8 and cells[0] in ("mpnn", "egnn"):
            rows[(cells[0], cells[3])] = cells
    assert set(rows) == {(arch, f"{lr:g}") for arch in ("mpnn", "egnn") for lr in LRS}
    # width and N at the tuning width (fake_run: N = 10 width); egnn tunes at its smallest width
    assert rows[("mpnn", "0.03")][1:3] == ["4", "40"] and rows[("egnn", "0.03")][1:3] == ["2", "20"]
    # the final validation loss of each rate (fake_lr_run: 1 + |log10(lr / 3e-2)| + 1/3) and its terms
    loss = 1.0 + 1.0 / 3
    assert abs(float(rows[("mpnn", "0.03")][4]) - loss) < 1e-3
    assert abs(float(rows[("mpnn", "0.03")][5]) - 0.3 * loss) < 1e-3
    assert abs(float(rows[("mpnn", "0.03")][6]) - 0.7 * loss) < 1e-3
    assert abs(float(rows[("mpnn", "1")][4]) - (loss + 1.5229)) < 1e-3
    assert rows[("mpnn", "1000")][4].startswith("failed")  # NaN: the run failed, no number
    assert sorted(k for k, c in rows.items() if c[7] == "chosen") == [("egnn", "0.03"), ("mpnn", "0.03")]
    assert "chosen: " in section and "mpnn 0.03" in section
    assert (html_path.parent / "lr_tuning.png").stat().st_size > 5000  # the loss-vs-lr figure, drawn
    html = html_path.read_text()
    assert "Learning-rate tuning" in html and "Learning-rate sweeps" in html
    assert re.search(r"<td[^>]*>0\.03</td>.*?<td[^>]*>chosen</td>", html)


def test_a_study_without_tuning_says_its_spec_shipped_the_rates(tmp_path):
    html_path = write_report(_study(tmp_path, tune=False))
    section = _section((html_path.parent / "report.md").read_text())
    assert "No learning-rate stage ran" in section and "shipped" in section
    assert "| mpnn | 0.001 |" in section and "| egnn | 0.002 |" in section
    assert "Learning-rate sweeps" not in section and not (html_path.parent / "lr_tuning.png").exists()
