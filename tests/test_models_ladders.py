"""Width ladders: regenerated N comments, density and range of the mpnn and egnn ladders, depth and lmax."""

from __future__ import annotations

import math

import pytest
import yaml

from symscale.cli import main
from symscale.models import ladders
from symscale.models.ladders import DEPTH_OPTIONS, count_parameters, ladder_option, ladder_rungs

# the reference study's MC-EGNN and MPNN (hidden channels -> N; PAPER.md, from a re-run of the authors' code)
REFERENCE_EGNN = {96: 1.06e6, 160: 2.75e6, 320: 10.4e6, 512: 26.1e6, 896: 78.5e6}
REFERENCE_MPNN_RANGE = (4.6e6, 79e6)


@pytest.mark.parametrize("arch", ["mpnn", "egnn"])
def test_shipped_comments_are_regenerated(arch):
    """The N in the YAML comments are what the models count today (`python -m symscale.models.ladders --write`)."""
    text, changed = ladders.regenerate_ladder_comments(arch)
    assert not changed, f"{arch}.yaml comments are out of date; run python -m symscale.models.ladders --write"
    for rung in ladder_rungs(arch, "paper"):
        assert f"- {rung.width} " in text and f"# N = {rung.num_parameters:,}" in text


def test_regenerate_rewrites_comments_and_flow_lists_keeping_data(tmp_path, monkeypatch):
    path = tmp_path / "mpnn.yaml"
    path.write_text("# header kept\ncpu: [12, 8]\npaper:   # stale\n  - 32   # N = 1\n  - 48\n# trailer kept\n")
    monkeypatch.setattr(ladders, "_ladder_file", lambda arch: path)
    text, changed = ladders.regenerate_ladder_comments("mpnn", write=True)
    assert changed and path.read_text() == text
    assert yaml.safe_load(text) == {"cpu": [12, 8], "paper": [32, 48]}
    assert text.startswith("# header kept\n") and text.endswith("# trailer kept\n")
    assert f"  - 8           # N = {count_parameters('mpnn', 8):,}\n" in text
    assert f"  - 32          # N = {count_parameters('mpnn', 32):,}\n" in text and "N = 1\n" not in text
    assert "2 widths, depth 3" in text
    assert ladders.regenerate_ladder_comments("mpnn") == (text, False)  # idempotent


def test_module_checks_and_writes(tmp_path, monkeypatch, capsys):
    path = tmp_path / "egnn.yaml"
    path.write_text("cpu: [8, 16]\n")
    monkeypatch.setattr(ladders, "_ladder_file", lambda arch: path)
    assert ladders.main(["--arch", "egnn"]) == 1 and "out of date" in capsys.readouterr().out
    assert ladders.main(["--arch", "egnn", "--write"]) == 0
    assert ladders.main(["--arch", "egnn"]) == 0


@pytest.mark.parametrize("arch", ["mpnn", "egnn"])
@pytest.mark.parametrize("name", ["cpu", "paper"])
def test_ladders_dense_enough_to_fit(arch, name):
    n = [r.num_parameters for r in ladder_rungs(arch, name)]
    assert len(n) >= 6 and n == sorted(n), n
    assert math.log10(n[-1] / n[0]) >= 1.5, n


def test_egnn_paper_ladder_matches_the_reference_counts():
    """At the reference widths the paper ladder's N is within 5% of the reference study's MC-EGNN."""
    options = ladders.ladder_overrides("egnn", "paper")
    for width, reference in REFERENCE_EGNN.items():
        assert abs(count_parameters("egnn", width, **options) / reference - 1) < 0.05, width
    widths = ladders.load_ladder("egnn", "paper")
    assert widths[0] == min(REFERENCE_EGNN) and widths[-1] == max(REFERENCE_EGNN)


def test_mpnn_paper_ladder_covers_the_reference_range():
    n = [r.num_parameters for r in ladder_rungs("mpnn", "paper")]
    assert n[0] <= REFERENCE_MPNN_RANGE[0] and n[-1] >= REFERENCE_MPNN_RANGE[1], n


def test_depth_and_lmax_come_from_ladder_overrides_or_family_defaults():
    assert ladder_option("egnn", "paper", DEPTH_OPTIONS) == 13
    assert ladder_option("egnn", "cpu", DEPTH_OPTIONS) == 3
    assert ladder_option("egnn", None, DEPTH_OPTIONS) == 3
    assert ladder_option("mpnn", "paper", ("lmax",)) is None


def test_models_cli_prints_depth_and_lmax_beside_n(capsys):
    assert main(["models", "--ladder", "paper", "--arch", "egnn"]) == 0
    out = capsys.readouterr().out
    n = count_parameters("egnn", 896, **ladders.ladder_overrides("egnn", "paper"))
    line = next(row for row in out.splitlines() if f"N={n:,}" in row)
    assert line.split()[-2:] == ["13", "-"], line
    assert "depth" in out and "lmax" in out
