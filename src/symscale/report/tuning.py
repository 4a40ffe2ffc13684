"""The report's "Learning-rate tuning" section: what the study's learning-rate stage recorded, or, when the
spec shipped its rates instead of tuning, the rates its runs trained at.

Inputs, read as plain files: STUDY/tune/<label>.json, one per family, written by the study's learning-rate
stage (`symscale.study.tuning`): {"arch", "label", "width", "N", "prefix", "best_lr", "runs": [{"lr",
"run_id", "status", "val_loss", "val_energy_loss", "val_force_loss", "reason"}]} (N, prefix and the two
terms are absent from records written before they were kept; N is then read from the sweep runs' run.json),
and, without any, each run's plan (its `config.training.lr`). Nothing is fitted or re-chosen here: the
chosen rate is the record's `best_lr`, the rate the study handed to the family's runs.

Symbols: N parameters; lr the learning rate of schedule-free AdamW at the family's tuning width (muP
transfers it to the other widths); L the final validation loss of a sweep run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure as MplFigure

from symscale import rundir
from symscale.fit.results import family_key
from symscale.report import figures, tables
from symscale.report.blocks import Heading, Paragraph

TUNE_DIR = "tune"  # STUDY/tune: the learning-rate stage's records (symscale.study.tuning.TUNE_DIR)


@dataclass(frozen=True)
class SweepPoint:
    """One rate of a sweep: its final validation loss (None when the run did not finish) and terms."""

    lr: float
    status: str
    loss: float | None
    energy: float | None = None
    force: float | None = None
    reason: str | None = None


@dataclass(frozen=True)
class Sweep:
    """One family's recorded sweep."""

    label: str
    arch: str
    width: int | None
    n_params: float | None
    prefix: float | None
    best_lr: float | None
    points: tuple[SweepPoint, ...]


def _number(value: Any) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _sweep(directory: Path, record: dict[str, Any]) -> Sweep:
    runs = [r for r in record.get("runs") or [] if isinstance(r, dict)]
    points = tuple(
        SweepPoint(
            float(r["lr"]),
            str(r.get("status") or "?"),
            _number(r.get("val_loss")),
            _number(r.get("val_energy_loss")),
            _number(r.get("val_force_loss")),
            r.get("reason"),
        )  # fmt: skip
        for r in runs
        if _number(r.get("lr")) is not None
    )
    label = str(record.get("label") or record.get("arch") or "?")
    n_params = _number(record.get("N"))
    for r in runs if n_params is None else ():  # a record written before N was kept: the runs' run.json
        info = rundir.read_json(directory / TUNE_DIR / label / str(r.get("run_id")) / rundir.RUN_INFO)
        n_params = n_params or _number(info.get("N"))
    width = _number(record.get("width"))
    return Sweep(
        label, str(record.get("arch") or label), None if width is None else int(width), n_params,
        _number(record.get("prefix", record.get("fraction"))), _number(record.get("best_lr")), points,
    )  # fmt: skip


def read_sweeps(directory: str | Path) -> list[Sweep]:
    """The sweeps recorded under STUDY/tune (records that are not JSON objects are skipped), by label."""
    directory = Path(directory)
    out = []
    for path in sorted((directory / TUNE_DIR).glob("*.json")):
        record = rundir.read_json(path)
        if record.get("runs"):
            out.append(_sweep(directory, record))
    return out


def _loss_cell(point: SweepPoint) -> str:
    if point.loss is None:
        return point.status + (f": {point.reason}" if point.reason else "")
    return tables.fmt(point.loss, 4)


def sweep_table(sweeps: Sequence[Sweep]) -> tables.Table:
    """One row per (family, rate): width, N, rate, final validation loss and its terms; the chosen rate marked."""
    rows = []
    for sw in sweeps:
        for p in sw.points:
            chosen = sw.best_lr is not None and math.isclose(p.lr, sw.best_lr, rel_tol=1e-9)
            rows.append(
                (
                    sw.label, tables.fmt_count(sw.width), tables.fmt_count(sw.n_params), f"{p.lr:g}",
                    _loss_cell(p), tables.fmt(p.energy, 4), tables.fmt(p.force, 4), "chosen" if chosen else "",
                )
            )  # fmt: skip
    prefixes = sorted({sw.prefix for sw in sweeps if sw.prefix is not None})
    on = f" on the {', '.join(f'{f:g}' for f in prefixes)} prefix of the training data" if prefixes else ""
    note = (
        f"Each family's learning-rate sweep, run by the study before its grid at the family's tuning width{on}: "
        "one short run per rate, the rate with the lowest final validation loss chosen and used by every run of "
        "the family (muP transfers it across widths; the paper tuned once per family at about 1M parameters). "
        "Energy and force: the two terms of the final validation loss, where the run recorded them."
    )
    columns = ("family", "width", "N", "lr", "final val loss", "energy term", "force term", "")
    return tables.Table("lr_tuning", "Learning-rate sweeps", columns, tuple(rows), (note,))


def sweep_figure(sweeps: Sequence[Sweep], archs: Sequence[str], out_dir: Path) -> figures.Figure | None:
    """Final validation loss against the learning rate (log x), one line per family, the chosen rate ringed."""
    drawn = [sw for sw in sweeps if any(p.loss is not None and p.loss > 0 for p in sw.points)]
    if not drawn:
        return None
    fig = MplFigure(figsize=(6.0, 4.3), layout="constrained")
    ax = fig.subplots()
    for sw in drawn:
        pts = sorted((p.lr, p.loss) for p in sw.points if p.loss is not None and p.loss > 0)
        color = figures.family_color(sw.arch, archs)
        ax.plot(*zip(*pts, strict=True), "o-", color=color, ms=5, lw=1.5, label=f"{sw.label} (width {sw.width})")
        best = [y for x, y in pts if sw.best_lr is not None and math.isclose(x, sw.best_lr, rel_tol=1e-9)]
        if best:
            ax.plot([sw.best_lr], best, "o", mfc="none", mec="black", ms=12, mew=1.5)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("learning rate lr")
    ax.set_ylabel("final validation loss L")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8.5, frameon=False)
    caption = "Learning-rate sweeps: the final validation loss of each rate; the chosen rate is ringed."
    return figures.save_figure(fig, Path(out_dir), "lr_tuning", "Learning-rate sweeps", caption)


def shipped_rates_table(runs: Sequence[Any], infos: dict[str, dict], family_of: Any) -> tables.Table:
    """Per family, the learning rates its runs trained at (from each run's plan), for a spec without tuning."""
    rates: dict[str, set[float]] = {}
    for r in runs:
        lr = _number(((infos.get(r.run_id, {}).get("config") or {}).get("training") or {}).get("lr"))
        rates.setdefault(family_of(r), set()).update({lr} if lr is not None else set())
    rows = tuple((key, ", ".join(f"{x:g}" for x in sorted(v)) or "not recorded") for key, v in rates.items())
    note = "The learning rates the spec gave (no learning-rate stage ran), as each run's plan recorded them."
    return tables.Table("lr_shipped", "Learning rates shipped by the spec", ("family", "lr"), rows, (note,))


def tuning_section(data: Any, out_dir: Path) -> list[Any]:
    """The report's blocks for the learning-rate stage of the study read as `data`
    (`symscale.report.render.StudyData`): a heading, then the sweeps' table and figure (drawn into `out_dir`),
    or the rates the spec shipped."""
    blocks: list[Any] = [Heading("Learning-rate tuning")]
    sweeps = read_sweeps(data.directory)
    if sweeps:
        chosen = "; ".join(f"{sw.label} {sw.best_lr:g}" for sw in sweeps if sw.best_lr is not None)
        blocks.append(Paragraph(f"The study tuned the learning rate per family before its grid; chosen: {chosen}."))
        blocks.append(sweep_table(sweeps))
        fig = sweep_figure(sweeps, [sw.arch for sw in sweeps], out_dir)
        return blocks + ([fig] if fig is not None else [])
    blocks.append(
        Paragraph(
            "No learning-rate stage ran (the spec has no `tune` section or its sweeps are not recorded): the "
            "spec shipped its rates, shown below as the runs recorded them."
        )
    )
    return blocks + [shipped_rates_table(data.runs, data.infos, lambda r: family_key(r.arch or "", r.options))]
