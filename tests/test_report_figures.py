"""symscale.report.figures: every figure file is written through the one atomic writer."""

from __future__ import annotations

import errno

import pytest
from matplotlib.figure import Figure as MplFigure

from symscale.report import figures


def _figure(label: str) -> MplFigure:
    fig = MplFigure(figsize=(2, 2))
    fig.add_subplot().set_title(label)
    return fig


def test_a_figure_cut_short_by_a_full_disk_leaves_the_previous_one_and_no_temporary_file(tmp_path, monkeypatch):
    saved = figures.save_figure(_figure("first"), tmp_path, "frontier", "Compute frontier", "caption")
    files = [saved.path, *saved.vectors]
    before = {p.name: p.read_bytes() for p in files}
    real = MplFigure.savefig

    def full_disk(self, fname, *args, **kwargs):  # half a file written, then the disk is full
        real(self, fname, *args, **kwargs)
        with open(fname, "r+b") as f:
            f.truncate(10)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(MplFigure, "savefig", full_disk)
    with pytest.raises(OSError):
        figures.save_figure(_figure("second"), tmp_path, "frontier", "Compute frontier", "caption")
    assert {p.name: p.read_bytes() for p in files} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(before)  # nothing left beside them
