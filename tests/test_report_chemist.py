"""The report as a chemist reads it: errors per run in meV, figures for a paper (SVG, PDF), tick labels that
never repeat, reasons on panels, laws over their fitted range, aligned tables, rounded numbers, and the page in
a real browser (headless Chromium, slow).

The study is the synthetic one of test_report.py (fake runs: run directories with metrics.jsonl, run.json and
status.json, a laws.csv and hand-written fits), with a second symmetry mode so that every section is drawn, and
run.json recording the model's symmetry and a float atoms-per-structure as real runs do.
"""

from __future__ import annotations

import html.parser
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure as MplFigure

from symscale.report import figures, write_report
from symscale.report.render import is_number_cell, load_study
from test_report_render import hand_written_fits, make_study

EQUIVARIANT = {"mpnn": False, "egnn": True, "esen": True}


def _chemist_study(root: Path) -> Path:
    make_study(root, modes=("architecture", "augmentation"), failed=("egnn-w128-f1.0-architecture",))
    for run_json in (root / "runs").glob("*/run.json"):
        info = json.loads(run_json.read_text())
        info["symmetry"] = {"rotation_equivariant": EQUIVARIANT[info["arch"]]}
        info["atoms_per_structure"] = 19.864406779661017  # what a real run records
        run_json.write_text(json.dumps(info))
    (root / "fits.json").write_text(json.dumps(hand_written_fits(root)))
    return root


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    return write_report(_chemist_study(tmp_path_factory.mktemp("chemist") / "study"))


class _Cells(html.parser.HTMLParser):
    """(table caption, tag, class, text) of every table cell of a page."""

    def __init__(self):
        super().__init__()
        self.cells, self.caption, self._open, self._text = [], "", None, ""

    def handle_starttag(self, tag, attrs):
        if tag in ("td", "th", "caption"):
            self._open, self._text = (tag, dict(attrs).get("class") or ""), ""

    def handle_data(self, data):
        if self._open:
            self._text += data

    def handle_endtag(self, tag):
        if self._open and tag == self._open[0]:
            if tag == "caption":
                self.caption = self._text
            else:
                self.cells.append((self.caption, tag, self._open[1], self._text))
            self._open = None


def _cells(report: Path) -> list[tuple[str, str, str, str]]:
    parser = _Cells()
    parser.feed(report.read_text())
    return parser.cells


def _table_rows(report: Path, caption: str) -> list[list[str]]:
    cells = [c for c in _cells(report) if c[0] == caption]
    columns = [c[3] for c in cells if c[1] == "th"]
    body = [c[3] for c in cells if c[1] == "td"]
    return [body[i : i + len(columns)] for i in range(0, len(body), len(columns))]


def test_errors_per_run_in_mev_with_equivariance_where_the_model_is_not_equivariant(report):
    rows = _table_rows(report, "Energy and force errors per run")
    assert len(rows) == 2 * 3 * 5 * 2  # modes x families x widths x prefixes: every run recorded errors
    by_run = {r[0]: r for r in rows}
    mpnn, egnn = by_run["mpnn-w8-f1.0-architecture"], by_run["egnn-w8-f1.0-architecture"]
    assert mpnn[4:7] == ["1", "10", "0.9"]  # the synthetic metrics: 1 meV/atom, 10 meV/Å, cosine 0.9
    last = json.loads((report.parents[1] / "runs" / mpnn[0] / "metrics.jsonl").read_text().splitlines()[-1])
    assert float(mpnn[7]) == pytest.approx(last["equivariance_error_forces"], rel=5e-3)
    assert egnn[7] == "equivariant by construction"
    md = (report.parent / "report.md").read_text()
    assert "energy MAE [meV/atom]" in md and "force MAE [meV/Å]" in md


def test_every_figure_is_also_svg_and_pdf(report):
    pngs = sorted(report.parent.glob("*.png"))
    assert {"frontier", "isoflop", "symmetry_modes", "compute_optimal"} <= {p.stem for p in pngs}
    for png in pngs:
        svg, pdf = png.with_suffix(".svg"), png.with_suffix(".pdf")
        assert svg.read_text()[:200].lstrip().startswith(("<?xml", "<svg")) and svg.stat().st_size > 5000
        assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 5000
        assert f'href="{svg.name}"' in report.read_text() and f'href="{pdf.name}"' in report.read_text()


def test_numbers_are_rounded_to_their_precision(report):
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", report.read_text())
    text = re.sub(r"<pre>.*?</pre>", "", text, flags=re.S)  # the study spec as the user wrote it
    long = re.findall(r"\d+\.\d{6,}", text)
    assert not long, long[:5]
    provenance = dict(r[:2] for r in _table_rows(report, "Provenance"))
    assert provenance["atoms per structure"] == "19.9"


def test_text_is_left_aligned_and_numbers_right_aligned(report):
    cells = [c for c in _cells(report) if c[1] == "td"]
    assert cells
    for caption, _, cls, text in cells:
        assert ("num" in cls.split()) == is_number_cell(text), (caption, text, cls)
    runs = _table_rows(report, "Runs")
    assert not is_number_cell(runs[0][0]) and is_number_cell(runs[0][4])  # run id left, N right
    assert is_number_cell("0.142 [0.121, 0.163]") and is_number_cell("2.60e+05") and is_number_cell("—")
    assert not is_number_cell("not possible [1]") and not is_number_cell("esen-l4")
    css = report.read_text().split("<style>")[1].split("</style>")[0]
    assert "text-align:left" in css and "td.num,th.num{text-align:right" in css and "overflow-x:auto" in css


def _labels(ax, axis) -> list[str]:
    lo, hi = sorted(axis.get_view_interval())
    index = 1 if axis is ax.yaxis else 0
    ticks = axis.get_majorticklabels() + axis.get_minorticklabels()
    return [t.get_text() for t in ticks if t.get_text() and lo <= t.get_position()[index] <= hi]


@pytest.mark.parametrize(
    ("x", "y"),
    [((1e3, 1e6), (1.47, 1.48)), ((5e4, 9e4), (0.3, 5.0)), ((1.0, 1e9), (1e-3, 1e2)), ((2e4, 2.1e4), (95, 96))],
)
def test_log_tick_labels_never_repeat(x, y):
    fig = MplFigure(figsize=(5.4, 4.3))
    ax = fig.subplots()
    ax.plot(x, y)
    figures._log_axes(ax, "x")
    FigureCanvasAgg(fig).draw()
    for axis in (ax.xaxis, ax.yaxis):
        labels = _labels(ax, axis)
        assert len(labels) >= 2 and len(labels) == len(set(labels)), labels


def _drawn(monkeypatch, draw, data, tmp_path) -> MplFigure:
    """The matplotlib figure a report figure function draws (its saving bypassed)."""
    captured = {}
    monkeypatch.setattr(figures, "save_figure", lambda fig, *args: captured.setdefault("fig", fig))
    draw(data, tmp_path)
    return captured["fig"]


def test_isoflop_panel_says_why_a_parabola_or_minimum_is_missing(tmp_path, monkeypatch):
    root = make_study(tmp_path / "two", archs=("egnn",), widths=(8, 16), fractions=(1.0,))
    (root / "fits.json").write_text(json.dumps(hand_written_fits(root, archs=("egnn",))))
    fig = _drawn(monkeypatch, figures.isoflop_figure, load_study(root), tmp_path)
    (ax,) = [a for a in fig.axes if a.get_visible() and a.get_title()]
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert texts and all(re.fullmatch(r"C = \S+ FLOPs: no parabola \(\d sizes, need 3\)", t) for t in texts), texts
    assert "★" not in ax.get_title()  # no star is promised where none is drawn


def test_laws_are_drawn_over_their_fitted_range_only(tmp_path, monkeypatch):
    root = make_study(tmp_path / "range", archs=("egnn",))
    fits = hand_written_fits(root, archs=("egnn",))
    sum_fit = next(f for f in fits["fits"] if f["law"] == "sum")
    sum_fit["extra"] = {"N_range": [4e3, 1e5], "D_range": [1e5, 1e7]}  # narrower than the data
    (root / "fits.json").write_text(json.dumps(fits))
    data = load_study(root)
    fig = _drawn(monkeypatch, figures.data_scaling_figure, data, tmp_path)
    lines = [line for ax in fig.axes for line in ax.get_lines() if len(line.get_xdata()) > 2]
    assert lines  # the law is drawn, at the sizes inside the fitted N range only
    for line in lines:
        assert min(line.get_xdata()) >= 1e5 * (1 - 1e-9) and max(line.get_xdata()) <= 1e7 * (1 + 1e-9)
    assert len(lines) == int(np.sum((np.unique(data.laws["N"]) >= 4e3) & (np.unique(data.laws["N"]) <= 1e5)))
    fig = _drawn(monkeypatch, figures.frontier_figure, data, tmp_path)
    faint = [c for c in fig.axes[0].collections if c.get_alpha() is not None and c.get_alpha() < 1]
    assert faint and all(c.get_alpha() >= 0.4 for c in faint)  # every evaluation visible under the frontier


# ---------------------------------------------------------------- the page in a real browser

WIDTH = 1400
_PROBE = """<script>
window.addEventListener('load', () => {
  const broken = [...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).length;
  const out = document.createElement('pre');
  out.id = 'probe';
  out.textContent = JSON.stringify({scrollWidth: document.documentElement.scrollWidth,
    clientWidth: document.documentElement.clientWidth, images: document.images.length, broken: broken});
  document.body.appendChild(out);
});
</script>"""


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    if os.environ.get("SYMSCALE_NO_BROWSER") == "1":
        pytest.skip("SYMSCALE_NO_BROWSER=1: the browser check of the report was switched off")
    pytest.fail("no chromium on PATH: apt-get install chromium (or set SYMSCALE_NO_BROWSER=1 to skip this check)")


def _headless(browser: str, *args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--window-size={WIDTH},2000"]
    return subprocess.run([browser, *flags, *args], capture_output=True, text=True, timeout=240)


@pytest.mark.slow
def test_report_in_headless_chromium_has_no_overflow_and_no_broken_image(report):
    browser = _chromium()
    probe = report.with_name("report-probe.html")
    probe.write_text(report.read_text().replace("</body>", _PROBE + "</body>"))
    dom = _headless(browser, "--virtual-time-budget=20000", "--dump-dom", probe.as_uri())
    found = re.search(r'<pre id="probe">(\{.*?\})</pre>', dom.stdout)
    assert found, dom.stderr[-2000:]
    page = json.loads(found.group(1))
    assert page["images"] == len(list(report.parent.glob("*.png"))) >= 7 and page["broken"] == 0, page
    assert page["scrollWidth"] <= WIDTH, page  # no horizontal overflow at 1,400 px: wide tables scroll in their box
    png = report.with_name("report-1400px.png")
    shot = _headless(browser, f"--screenshot={png}", report.as_uri())
    assert png.is_file() and png.stat().st_size > 10_000, shot.stderr[-2000:]
    if target := os.environ.get("SYMSCALE_REPORT_SCREENSHOT"):  # to look at it
        shutil.copy(png, target)
