"""Read a study directory and write its report: report.html (one self-contained file), report.md and PNGs.

    write_report("studies/quickstart")          # -> studies/quickstart/report/report.html

Inputs, read as plain files: `laws.csv` (columns arch, run, width, N, D, C, H, loss, step, seed, mode, fraction,
prefix; N parameters, D atoms seen, C training FLOPs, H device-hours, fraction the share of the run's training
done at that evaluation, prefix the run's training-set fraction), `fits.json` ({"fits": [FitResult dicts]}),
the runs as the catalogue reads them (`symscale.study.catalogue.Catalogue.runs`: status, prefix, options and last
evaluation of every run, planned ones included, through `symscale.rundir`), each run's `metrics.jsonl` and
`run.json`, `spec.yaml`, and tune/<family>.json (the learning-rate stage's records, shown by
`symscale.report.tuning`). Missing pieces are reported, not fatal: without laws.csv the table is rebuilt from the
runs' metrics.jsonl; without fits.json no fits are shown and the report says how to make them (the report never
fits: the study and `symscale fit` do, with the one fit menu of `symscale.fit.menu`). Fits are read as typed
`FitResult`s, which carry their family, options and symmetry mode; family labels (symmetry group, nu, l) come from
what each run's run.json recorded. The HTML embeds every figure as a base64 PNG and links only the same figure as
SVG and PDF, written beside it (relative links: the folder moves as a whole). Tables put text left and numbers
right, and scroll inside their box when wider than the page; every number is rounded to its precision.

A report row is a family with its model options (`esen-l2`, `esen-l4`: the `options` column of laws.csv, the
`options` field of a fit and of a run's `symscale.rundir.RunRecord`), never one family pooling its ablations.
`write_report(..., loss="force")` presents the study on another L (laws.csv's `loss_force` column and
fits-force.json, made by `symscale.fit.menu.refit_study` when missing or older than laws.csv: the report calls the
fit menu, it does not fit), into report-force/ by default.
"""

from __future__ import annotations

import base64
import csv
import datetime
import hashlib
import html
import importlib.metadata
import json
import logging
import math
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

import symscale
from symscale import rundir
from symscale.errors import SymscaleError
from symscale.fit.depth import read_depth_fits
from symscale.fit.menu import LOSS_COLUMNS, FitSettings, fits_name, refit_study
from symscale.fit.results import FitResult, family_key, option_values
from symscale.quantities import device_hours, implied_kappa
from symscale.report import depth, figures, narrative, reference, seeds, tables, tuning, verdicts
from symscale.report.blocks import Block, Code, Heading, Paragraph
from symscale.rundir import RunRecord
from symscale.study.catalogue import Catalogue

log = logging.getLogger(__name__)

NUMERIC_COLUMNS = ("width", "N", "D", "C", "H", "loss", "step", "seed", "run_fraction", "prefix", "loss_energy")
NUMERIC_COLUMNS += ("loss_force", "energy_mae_mev_per_atom", "force_mae_mev_per_A")
TEXT_COLUMNS = ("arch", "run", "mode", "options", "family")  # family: arch and options, `esen-l4`


# ---------------------------------------------------------------- the study, read


@dataclass(frozen=True)
class StudyData:
    """Everything the report needs, read once from a study directory."""

    directory: Path
    name: str
    laws: dict[str, np.ndarray]  # column -> array, one entry per evaluation point
    fits: list[FitResult]
    fits_meta: dict  # fits.json's other top-level entries (symscale_version, ...)
    runs: list[RunRecord]  # from the catalogue (symscale.rundir), plus runs found only in laws.csv
    infos: dict[str, dict]  # run id -> its plan merged over its run.json, as read
    spec: dict
    spec_text: str
    metrics: dict[str, list[dict]]  # run id -> metrics.jsonl rows
    families: dict[str, reference.FamilyInfo]
    archs: list[str]  # report rows: families with their model options (`esen-l4`), in staircase order
    modes: list[str]
    notes: list[str]  # what was missing or rebuilt while reading
    loss: str = "total"  # which L is presented: total, force or energy


def load_study(study_dir: str | Path, loss: str = "total") -> StudyData:
    """Read a study directory, presenting L = `loss` (total, force or energy: laws.csv's loss, loss_force or
    loss_energy column and fits.json, fits-force.json or fits-energy.json). Raises SymscaleError only when
    there is nothing to report on."""
    directory = Path(study_dir)
    if not directory.is_dir():
        raise SymscaleError.invalid("study directory", str(study_dir), "an existing directory")
    if loss not in LOSS_COLUMNS:
        raise SymscaleError.invalid("loss", loss, " | ".join(LOSS_COLUMNS))
    notes: list[str] = []
    spec_text, spec = _read_spec(directory, notes)
    records, metrics, infos = _read_runs(directory, notes)
    options = {r.run_id: r.options for r in records}
    laws = _with_loss(_read_laws(directory, metrics, infos, notes, options), loss, notes)
    if not any(metrics.values()) and len(laws["loss"]) == 0:
        raise SymscaleError(f"invalid study directory {directory}: no laws.csv and no runs/<id>/ with metrics")
    fits, fits_meta = _read_fits(directory, notes, spec, loss)
    runs = _run_records(laws, records)
    arch_of = {key: arch for key, arch in zip(laws["family"].tolist(), laws["arch"].tolist())}
    options_of = {key: opt for key, opt in zip(laws["family"].tolist(), laws["options"].tolist())}
    for r in runs:
        if r.arch:
            arch_of.setdefault(run_family(r), r.arch)
            options_of.setdefault(run_family(r), r.options)
    archs = _order_families(arch_of, options_of)
    seen = [*laws["mode"].tolist(), *(r.mode for r in runs)]
    modes = list(dict.fromkeys(sorted(seen, key=lambda m: m != tables.ARCHITECTURE)))  # architecture first
    name = str(spec.get("name") or directory.resolve().name)
    families = {
        key: family_info(arch_of[key], [infos.get(r.run_id, {}) for r in runs if run_family(r) == key], options_of[key])
        for key in archs
    }
    return StudyData(
        directory,
        name,
        laws,
        fits,
        fits_meta,
        runs,
        infos,
        spec,
        spec_text,
        metrics,
        families,
        archs,
        modes,
        notes,
        loss,
    )


def _with_loss(laws: dict[str, np.ndarray], loss: str, notes: list[str]) -> dict[str, np.ndarray]:
    """The laws columns with L = `loss`: its column becomes `loss`, rows without a finite positive value go."""
    column = LOSS_COLUMNS[loss]
    if column == "loss":
        return laws
    values = laws[column]
    keep = np.isfinite(values) & (values > 0)
    if not keep.any():
        raise SymscaleError(
            f"loss {loss!r}: laws.csv has no {column} values (a laws.csv written before the loss terms were "
            "recorded: re-export it from the study)"
        )
    if not keep.all():
        notes.append(f"{int((~keep).sum())} evaluation(s) without a {column} value are left out.")
    out = {k: v[keep] for k, v in laws.items()}
    out["loss"] = out[column]
    return out


def _read_spec(directory: Path, notes: list[str]) -> tuple[str, dict]:
    path = directory / "spec.yaml"
    if not path.is_file():
        notes.append("spec.yaml is missing: the study spec is not shown.")
        return "", {}
    text = path.read_text()
    try:
        spec = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        notes.append(f"spec.yaml is not valid YAML ({err}); shown as text only.")
        return text, {}
    return text, spec if isinstance(spec, dict) else {}


def _read_json(path: Path, notes: list[str]) -> dict:
    if not path.is_file():
        return {}
    try:
        value = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        notes.append(f"{path.parent.name}/{path.name} is not valid JSON ({err}).")
        return {}
    return value if isinstance(value, dict) else {}


def _read_runs(directory: Path, notes: list[str]) -> tuple[list[RunRecord], dict, dict]:
    """The runs as the catalogue sees them (planned ones included; nothing is written), their metrics lines
    and their plan over their run.json (the grid's coordinates, as the catalogue reads them; the plan's config
    carries the family options, e.g. lmax)."""
    records = Catalogue(directory).runs()
    metrics, infos = {}, {}
    for r in records:
        run_dir = directory / "runs" / r.run_id
        metrics[r.run_id] = rundir.read_metrics(run_dir)
        infos[r.run_id] = {**_read_json(run_dir / rundir.RUN_INFO, notes), **rundir.read_plan(run_dir)}
        if r.status != "running" and rundir.torn_bytes(run_dir):  # a running run may be mid-write
            notes.append(f"{r.run_id}/metrics.jsonl: a torn last line was skipped.")
    return records, metrics, infos


def _read_laws(
    directory: Path, metrics: dict, infos: dict, notes: list[str], options: dict[str, str] | None = None
) -> dict[str, np.ndarray]:
    path = directory / "laws.csv"
    if path.is_file():
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
    else:
        notes.append("laws.csv is missing: the laws table was rebuilt from the runs' metrics.jsonl.")
        rows = [
            row
            for run_id, lines in metrics.items()
            for row in _laws_rows(run_id, infos[run_id], lines, (options or {}).get(run_id, ""))
        ]
    return _columns(rows)


def _laws_rows(run_id: str, info: dict, lines: list[dict], options: str = "") -> list[dict]:
    """laws.csv rows of one run from its metrics lines (D = atoms_seen, C = flops, H = device_seconds/3600)."""
    out = []
    for line in lines:
        seconds = line.get("device_seconds")
        out.append(
            {
                "arch": info.get("arch", ""),
                "run": run_id,
                "width": info.get("width"),
                "N": info.get("N"),
                "D": line.get("atoms_seen"),
                "C": line.get("flops"),
                "H": device_hours(seconds),
                "loss": line.get("val_loss"),
                "step": line.get("step"),
                "seed": info.get("seed"),
                "mode": info.get("mode", tables.ARCHITECTURE),
                "run_fraction": line.get("run_fraction"),
                "prefix": info.get("prefix"),
                "options": options,
                "loss_energy": line.get("val_energy_loss"),
                "loss_force": line.get("val_force_loss"),
                "energy_mae_mev_per_atom": line.get("energy_mae_mev_per_atom"),
                "force_mae_mev_per_A": line.get("force_mae_mev_per_A"),
            }
        )
    return out


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _columns(rows: list[dict]) -> dict[str, np.ndarray]:
    """Column arrays; rows without a finite positive loss are dropped (a diverged evaluation)."""
    rows = [r for r in rows if _number(r.get("loss")) > 0 and math.isfinite(_number(r.get("loss")))]
    laws = {c: np.array([_number(r.get(c)) for r in rows], dtype=float) for c in NUMERIC_COLUMNS}
    for c in TEXT_COLUMNS[:-1]:
        default = tables.ARCHITECTURE if c == "mode" else ""
        laws[c] = np.array([_text(r.get(c), default) for r in rows], dtype=object)
    laws["family"] = np.array([family_key(a, o) for a, o in zip(laws["arch"], laws["options"])], dtype=object)
    return laws


def _text(value: Any, default: str) -> str:
    """A text cell: the default for an empty or missing one."""
    return default if value is None or str(value) in ("", "nan") else str(value)


def fit_command(directory: Path, spec: dict, loss: str = "total") -> str:
    """The `symscale fit` command that writes the study's fits.json with the study's fit settings."""
    defaults = FitSettings()
    settings = spec.get("fits") if isinstance(spec.get("fits"), dict) else {}
    group_by = settings.get("group_by", defaults.group_by)
    return (
        f"symscale fit {directory / 'laws.csv'} --law all"
        + (f" --group-by {group_by}" if group_by else "")
        + f" --bootstrap {settings.get('bootstrap', defaults.bootstrap)} --seed {settings.get('seed', defaults.seed)}"
        + f" --l-inf {settings.get('l_inf', defaults.l_inf)} --sensitivity"
        + "".join(f" --{key.replace('_', '-')} {settings[key]}" for key in ("drop_fraction", "ema") if key in settings)
        + (f" --loss {loss}" if loss != "total" else "")
        + f" --json {directory / fits_name(loss)}"
    )


def _read_fits(directory: Path, notes: list[str], spec: dict, loss: str = "total") -> tuple[list[FitResult], dict]:
    """fits.json (fits-<loss>.json) as typed results (entries that are not fit results are skipped with a
    note), and its other top-level entries. Without it, no fits: the report says how to make them."""
    path = directory / fits_name(loss)
    if not path.is_file():
        command = fit_command(directory, spec, loss)
        notes.append(f"{path.name} is missing: no fits are shown. Make them with the study's settings: {command}")
        return [], {}
    payload = _read_json(path, notes)
    fits, bad = [], 0
    for entry in payload.pop("fits", []) or []:
        try:
            fits.append(FitResult.from_dict(entry))
        except (TypeError, ValueError, AttributeError):
            bad += 1
    if bad:
        notes.append(f"fits.json: {bad} entr{'y is' if bad == 1 else 'ies are'} not a fit result and were skipped.")
    return fits, payload


def _last_point(laws: dict[str, np.ndarray], run_id: str, lines: list[dict]) -> dict[str, Any]:
    """The run's last evaluation: from laws.csv, else (a run left out of it, e.g. failed) from its metrics."""
    idx = np.flatnonzero(laws["run"] == run_id)
    if len(idx) == 0:
        last = next((m for m in reversed(lines) if _number(m.get("val_loss")) > 0), {})
        hours = device_hours(last.get("device_seconds"))
        return {"D": last.get("atoms_seen"), "C": last.get("flops"), "H": hours, "loss": last.get("val_loss")}
    order = np.lexsort((laws["D"][idx], np.nan_to_num(laws["step"][idx], nan=-1)))
    last = idx[order[-1]]
    return {c: float(laws[c][last]) for c in NUMERIC_COLUMNS} | {c: laws[c][last] for c in TEXT_COLUMNS}


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))), None)


def _laws_only_record(laws: dict[str, np.ndarray], run_id: str) -> RunRecord:
    """A run found in laws.csv but not under runs/ (a laws table copied without its runs)."""
    last = _last_point(laws, run_id, [])
    value = lambda key: _first(last.get(key))  # noqa: E731
    n = value("N")
    return RunRecord(
        run_id=run_id, arch=str(last.get("arch") or ""), width=value("width"), seed=value("seed"),
        mode=str(last.get("mode") or tables.ARCHITECTURE), prefix=value("prefix"), status="in laws.csv only",
        reason=None, N=None if n is None else int(n), D=value("D"), C=value("C"), H=value("H"), loss=value("loss"),
        step=value("step"), n_evals=int((laws["run"] == run_id).sum()),
        kappa=implied_kappa(value("C"), n, value("D")), updated_utc=None, options=_text(last.get("options"), ""),
    )  # fmt: skip


def _run_records(laws: dict[str, np.ndarray], records: list[RunRecord]) -> list[RunRecord]:
    """The catalogue's records (arch and mode filled in for display), and records of runs only in laws.csv,
    in staircase order."""
    known = {r.run_id for r in records}
    out = [replace(r, arch=r.arch or "", mode=r.mode or tables.ARCHITECTURE) for r in records]
    out += [_laws_only_record(laws, i) for i in dict.fromkeys(laws["run"].tolist()) if i not in known]
    rank = {arch: i for i, arch in enumerate(_order_archs({r.arch for r in out}))}
    return sorted(
        out, key=lambda r: (rank[r.arch], r.options, r.mode, r.width or 0, r.prefix or 0, r.seed or 0, r.run_id)
    )


def run_family(record: RunRecord) -> str:
    """The report row a run belongs to: its family with its model options (`esen-l4`, `mpnn`)."""
    return family_key(record.arch or "", record.options)


def _order_archs(archs: set[str]) -> list[str]:
    known = [a for a in reference.PAPER_ORDER if a in archs]
    return known + sorted(archs - set(known))


def _order_families(arch_of: dict[str, str], options_of: dict[str, str]) -> list[str]:
    """Report rows (family keys) in staircase order of their family, then by options ("" first)."""
    rank = {arch: i for i, arch in enumerate(_order_archs(set(arch_of.values()) - {""}))}
    keys = [key for key in arch_of if arch_of[key]]
    return sorted(keys, key=lambda key: (rank[arch_of[key]], options_of.get(key, ""), key))


def _find_key(info: Any, key: str, found: set) -> None:
    if isinstance(info, dict):
        for k, v in info.items():
            if k == key and isinstance(v, int | float | str):
                found.add(v)
            _find_key(v, key, found)


def family_info(arch: str, run_infos: Sequence[dict] = (), options: str = "") -> reference.FamilyInfo:
    """Label, group, nu and l of a family with model `options`: group, nu and l from the `symmetry` its runs
    recorded in run.json when they all agree (a chiral variant records its own), else the paper's staircase
    (reference.FAMILIES). A family with an `lmax` override (eSEN) takes l from its runs when they all agree,
    else from its options. The label names the options: `eSEN (l2)`."""
    base = reference.FAMILIES.get(arch, reference.FamilyInfo(arch, "?", 0, None))
    lmax_option = option_values(options).get("lmax")
    fallback = reference.FamilyInfo(
        f"{base.label} ({options})" if options else base.label,
        base.group,
        base.nu,
        lmax_option if lmax_option is not None and base.l is not None else base.l,
        arch,
        options,
    )
    recorded = {
        (str(sym.get("group")), sym.get("nu"), sym.get("l"))
        for info in run_infos
        if isinstance(sym := info.get("symmetry"), dict) and sym.get("group") is not None
    }
    info = fallback
    if len(recorded) == 1:
        group, nu, ell = recorded.pop()
        nu = nu if isinstance(nu, int) else fallback.nu
        info = reference.FamilyInfo(fallback.label, group, nu, ell, arch, options)
    lmax: set = set()
    for run_info in run_infos:
        _find_key(run_info, "lmax", lmax)
    if len(lmax) == 1 and info.l is not None:
        return reference.FamilyInfo(info.label, info.group, info.nu, lmax.pop(), arch, options)
    return info


# ---------------------------------------------------------------- the document


# the blocks (Heading, Paragraph, Code, tables and figures) live in `symscale.report.blocks`


def build_document(data: StudyData, out_dir: Path) -> list[Block]:
    """The report as a list of blocks; draws the figures into `out_dir` on the way."""
    blocks: list[Block] = [Heading(f"symscale report: {data.name}", 1), Paragraph(_preamble(data))]
    blocks += [Paragraph(n) for n in data.notes]
    blocks += [Heading("What this shows"), *(Paragraph(p) for p in narrative.what_this_shows(data))]
    blocks += verdict_blocks(data)
    blocks += _section("Compute frontier", [figures.frontier_figure(data, out_dir)])
    blocks += [
        Heading("Scaling exponents"),
        tables.exponent_table(data.fits, data.archs, data.families),
        tables.consistency_table(data.fits, data.archs, data.families),
    ]
    sensitivity = tables.sensitivity_table(data.fits, data.archs, data.families)
    blocks += [sensitivity] if sensitivity is not None else []
    lmax = figures.lmax_figure(data, out_dir)
    blocks += [Heading("The lmax ablation"), lmax] if lmax is not None else []
    blocks += _section("Learning curves", [figures.learning_curves_figure(data, out_dir)])
    blocks += _section(
        "Parameter and data scaling",
        [figures.parameter_scaling_figure(data, out_dir), figures.data_scaling_figure(data, out_dir)],
    )
    blocks += _section(
        "Compute-optimal allocation",
        [figures.isoflop_figure(data, out_dir), figures.compute_optimal_figure(data, out_dir)],
    )
    if any(m != tables.ARCHITECTURE for m in data.modes):
        blocks += _section("Symmetry modes", [figures.modes_figure(data, out_dir)])
        blocks.append(tables.modes_table(data.fits, data.archs, data.modes, data.families))
    blocks += _depth_section(data, out_dir)
    kappas = {key: [r.kappa for r in data.runs if run_family(r) == key and r.kappa is not None] for key in data.archs}
    blocks += [
        Heading("κ: forward FLOPs per atom per parameter"),
        tables.kappa_table(kappas, data.archs, data.families),
    ]
    blocks += tuning.tuning_section(data, out_dir)
    spread = seeds.seed_table(data)
    blocks += [Heading("Seeds"), spread] if spread is not None else []
    blocks += [Heading("Runs"), tables.runs_table(data.runs)]
    blocks += _errors_blocks(data)
    failed = tables.failed_runs_table(data.runs)
    blocks += [failed] if failed else []
    blocks += [Heading("Fits"), tables.fit_status_table(data.fits)] if data.fits else []
    blocks += [Heading("Provenance"), tables.provenance_table(provenance(data))]
    blocks += [Heading("Study spec", 3), Code(data.spec_text or "(spec.yaml missing)")]
    return blocks


def _errors_blocks(data: StudyData) -> list[Block]:
    """The errors a chemist reads, per run: energy and force MAE, force cosine, equivariance error."""
    table = tables.run_errors_table(data.runs, data.metrics, data.infos)
    return [Heading("Errors per run", 3), table] if table is not None else []


def verdict_blocks(data: StudyData) -> list[Block]:
    """The paper's three claims, each supported / contradicted / not resolved, and every pair's gamma verdict."""
    lines = [Paragraph(v.line) for v in verdicts.claim_verdicts(data.fits, data.archs, data.families)]
    blocks: list[Block] = [Heading("Verdicts on the paper's claims"), *lines, Paragraph(verdicts.RULES)]
    return blocks + ([verdicts.pair_table(data.fits, data.archs, data.families)] if len(data.archs) > 1 else [])


def _depth_section(data: StudyData, out_dir: Path) -> list[Block]:
    """The depth sweep's table and figure (`symscale.report.depth`), when the study has depth-fits.json."""
    fits, left_out = read_depth_fits(data.directory)
    if not fits and not left_out:
        return []
    figure = depth.depth_figure(fits, out_dir)
    return [Heading("Depth at a fixed parameter budget"), depth.depth_table(fits, left_out), *filter(None, [figure])]


def _section(title: str, figs: Sequence[figures.Figure | None]) -> list[Block]:
    drawn = [f for f in figs if f is not None]
    return [Heading(title), *drawn] if drawn else [Heading(title), Paragraph("Not enough data for this figure.")]


def _preamble(data: StudyData) -> str:
    finished = sum(r.status == "finished" for r in data.runs)
    return (
        f"Study directory {data.directory}. {len(data.runs)} runs ({finished} finished), "
        f"{len(data.laws['loss'])} evaluation points, families: {', '.join(data.archs) or 'none'}. "
        f"L is {LOSS_NAMES[data.loss]}{_policy_text(data)}. "
        f"Reference values from {reference.CITATION}; they are approximate (from a digest of the paper)."
    )


LOSS_NAMES = {
    "total": "the total validation loss (energy term + force term)",
    "force": "the force term of the validation loss",
    "energy": "the energy term of the validation loss",
}


def _policy_text(data: StudyData) -> str:
    policy = tables.l_inf_policy(data.fits)
    if policy is None:
        return ""
    said = (
        "E and L∞ fixed at 0 in every law (the paper's choice)" if policy == "zero" else "E and L∞ fitted in every law"
    )
    own = next((f.settings for f in data.fits if not f.variant and "drop_fraction" in f.settings), {})
    drop, ema = own.get("drop_fraction"), own.get("ema") or 0
    dropped = f"; the first {100 * drop:.0f}% of each run dropped (the paper: 1-10%)" if drop is not None else ""
    smoothed = f"; curves EMA-smoothed (weight of the past {ema:g}) before the frontier" if ema else ""
    return f"; {said}{dropped}{smoothed}"


# ---------------------------------------------------------------- provenance

# run.json entries shown in the provenance table (dotted paths), with their labels
RUN_PROVENANCE = {
    "dataset": "dataset (runs)",
    "n_total": "dataset size [structures]",
    "n_train": "training structures",
    "n_val": "validation structures",
    "atoms_per_structure": "atoms per structure",
    "provenance.symscale_version": "symscale version (runs)",
    "provenance.git_sha": "git SHA (runs)",
    "provenance.torch_version": "torch version (runs)",
    "provenance.device": "devices (runs)",
    "provenance.precision": "precision (runs)",
}
FINGERPRINT_BYTES = 1 << 20  # bytes hashed at each end of each file


def _git_sha() -> str:
    package_dir = Path(symscale.__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(package_dir), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown (not a git checkout)"


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _dotted(info: dict, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(info, dict):
            return None
        info = info.get(part)
    return info


def _shown(value: Any) -> str:
    """A recorded value as text, a float rounded to 3 significant digits (19.9, not 19.864406779661017)."""
    if isinstance(value, float) and not value.is_integer():
        return tables.fmt(value)
    return str(int(value)) if isinstance(value, float) else str(value)


def _joined(values: set[str], limit: int = 6) -> str:
    shown = sorted(values)[:limit]
    return ", ".join(shown) + (f" (+{len(values) - limit} more)" if len(values) > limit else "")


def dataset_fingerprint(path: str | Path) -> str:
    """Total size and a fingerprint of a dataset file or folder: SHA-256 over each file's name, size and its
    first and last MiB (a full hash of OMol25 would take hours). Not a content hash of every byte."""
    root = Path(path)
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    digest, total = hashlib.sha256(), 0
    for f in files:
        size = f.stat().st_size
        total += size
        digest.update(f"{f.relative_to(root) if root.is_dir() else f.name}:{size}".encode())
        with f.open("rb") as handle:
            digest.update(handle.read(FINGERPRINT_BYTES))
            if size > 2 * FINGERPRINT_BYTES:
                handle.seek(-FINGERPRINT_BYTES, 2)
                digest.update(handle.read())
    return f"{len(files)} file(s), {total / 1e6:.1f} MB, fingerprint sha256:{digest.hexdigest()[:16]}"


def provenance(data: StudyData) -> dict[str, str]:
    """Dataset, versions, git SHA, devices: from the runs' run.json where recorded, and from this process."""
    items = {"study": f"{data.name} ({data.directory.resolve()})"}
    dataset = data.spec.get("dataset")
    if isinstance(dataset, dict):
        items["dataset (spec)"] = json.dumps(dataset, sort_keys=True, default=str)
        path = dataset.get("path")
        if isinstance(path, str) and Path(path).exists():
            items["dataset files"] = dataset_fingerprint(path)
    for key, label in RUN_PROVENANCE.items():
        values = {_shown(v) for r in data.runs if (v := _dotted(data.infos.get(r.run_id, {}), key)) is not None}
        if values:
            items[label] = _joined(values)
    fits_version = data.fits_meta.get("symscale_version")
    items |= {
        "symscale version (report)": symscale.__version__,
        "symscale version (fits)": str(fits_version or "—"),
        "git SHA (report)": _git_sha(),
        "torch version (report)": _version("torch"),
        "numpy / matplotlib": f"{_version('numpy')} / {_version('matplotlib')}",
        "written": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
    return items


# ---------------------------------------------------------------- writers


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: Sequence[Block]) -> str:
    """The report as Markdown; figures reference PNG files beside report.md."""
    out = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"{'#' * b.level} {b.text}")
        elif isinstance(b, Paragraph):
            out.append(b.text)
        elif isinstance(b, Code):
            out.append(f"```yaml\n{b.text.rstrip()}\n```")
        elif isinstance(b, figures.Figure):
            links = " · ".join(f"[{v.suffix[1:].upper()}]({v.name})" for v in b.vectors)
            out.append(f"![{b.title}]({b.path.name})\n\n*{b.caption}*" + (f" ({links})" if links else ""))
        else:
            lines = [f"**{b.title}**", "", "| " + " | ".join(map(_md_cell, b.columns)) + " |"]
            lines.append("|" + "---|" * len(b.columns))
            lines += ["| " + " | ".join(map(_md_cell, row)) + " |" for row in b.rows]
            lines += ["", *(f"{n}  " for n in b.notes)] if b.notes else []
            out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1400px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{font-size:1.7em}h2{margin-top:1.8em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.6em 0;font-size:.85em}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:left;white-space:nowrap}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
th{background:#f2f2f2}.paper{background:#eef3fb;color:#335}
.scroll{overflow-x:auto;max-width:100%}
caption{text-align:left;font-weight:bold;padding:.3em 0}.formats{font-size:.85em}
.notes{font-size:.85em;color:#444}figure{margin:1em 0}img{max-width:100%;height:auto}
figcaption{font-size:.9em;color:#444}pre{background:#f6f6f6;padding:.8em;overflow-x:auto;font-size:.85em}
"""


def _html_block(b: Block) -> str:
    esc = html.escape
    if isinstance(b, Heading):
        return f"<h{b.level}>{esc(b.text)}</h{b.level}>"
    if isinstance(b, Paragraph):
        return f"<p>{esc(b.text)}</p>"
    if isinstance(b, Code):
        return f"<pre>{esc(b.text)}</pre>"
    if isinstance(b, figures.Figure):
        data = base64.b64encode(b.path.read_bytes()).decode("ascii")
        links = " · ".join(f'<a href="{esc(v.name)}">{esc(v.suffix[1:].upper())}</a>' for v in b.vectors)
        formats = f' <span class="formats">(also as {links})</span>' if links else ""
        return (
            f'<figure><img alt="{esc(b.title)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{esc(b.caption)}{formats}</figcaption></figure>"
        )
    return _html_table(b)


# a cell that reads as a number (with its interval or note): 0.142 [0.12, 0.16], 2.60e+05, -3, —
_NUMBER_CELL = re.compile(r"[-+−]?(\d|\.\d)[\d.,]*(e[-+]?\d+)?%?(\s.*)?|—")


def is_number_cell(text: str) -> bool:
    """Whether a table cell is a number (right-aligned) rather than text (left-aligned)."""
    return bool(_NUMBER_CELL.fullmatch(str(text).strip())) and not re.fullmatch(r"\d{4}-\d\d-\d\d.*", str(text))


def _html_table(b: tables.Table) -> str:
    esc = html.escape
    paper = ["paper" in c for c in b.columns]  # the reference study's columns, shaded
    numeric = [bool(b.rows) and all(is_number_cell(row[i]) for row in b.rows) for i in range(len(b.columns))]

    def cls(i: int, number: bool) -> str:
        names = " ".join(n for n, on in (("paper", paper[i]), ("num", number)) if on)
        return f' class="{names}"' if names else ""

    head = "".join(f"<th{cls(i, numeric[i])}>{esc(c)}</th>" for i, c in enumerate(b.columns))
    body = "".join(
        "<tr>" + "".join(f"<td{cls(i, is_number_cell(c))}>{esc(c)}</td>" for i, c in enumerate(row)) + "</tr>"
        for row in b.rows
    )
    notes = "".join(f"<div>{esc(n)}</div>" for n in b.notes)
    return (
        f'<div class="scroll"><table><caption>{esc(b.title)}</caption><thead><tr>{head}</tr></thead>'
        f'<tbody>{body}</tbody></table></div><div class="notes">{notes}</div>'
    )


def to_html(blocks: Sequence[Block], title: str) -> str:
    """One self-contained HTML page: inline CSS, figures as base64 data URIs; the only links are to each
    figure's SVG and PDF beside the page."""
    body = "\n".join(_html_block(b) for b in blocks)
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_CSS}</style></head><body>\n{body}\n</body></html>\n"
    )


def ensure_fits(study_dir: str | Path, loss: str) -> Path:
    """STUDY/fits-<loss>.json, refitted from laws.csv with the spec's fit settings by the fit menu
    (`symscale.fit.menu.refit_study`) when missing or older than laws.csv; no retraining."""
    directory = Path(study_dir)
    path, laws = directory / fits_name(loss), directory / "laws.csv"
    if not laws.is_file():
        raise SymscaleError(f"report --loss {loss}: {laws} does not exist (the refit reads it)")
    if path.is_file() and path.stat().st_mtime >= laws.stat().st_mtime:
        return path
    spec = _read_spec(directory, [])[1]
    fits = spec.get("fits") if isinstance(spec.get("fits"), dict) else {}
    log.info("refitting %s on L = %s", directory, loss)
    return refit_study(directory, loss, fits, write_text=rundir.write_text)


def write_report(study_dir: str | Path, out_dir: str | Path | None = None, loss: str = "total") -> Path:
    """Write report.html, report.md and the figures (PNG, SVG, PDF) into `out_dir` (default STUDY_DIR/report, or
    STUDY_DIR/report-<loss> for another L). For another L than the total, the study's fits on it
    (fits-<loss>.json) are made first by the fit menu when missing or older than laws.csv. Returns the path
    of report.html."""
    if loss != "total":
        ensure_fits(study_dir, loss)
    data = load_study(study_dir, loss)
    default = "report" if loss == "total" else f"report-{loss}"
    out = Path(out_dir) if out_dir is not None else Path(study_dir) / default
    out.mkdir(parents=True, exist_ok=True)
    blocks = build_document(data, out)
    rundir.write_text(out / "report.md", to_markdown(blocks))  # atomic: an old report stays whole
    html_path = out / "report.html"
    rundir.write_text(html_path, to_html(blocks, f"symscale report: {data.name}"))
    log.info("report written to %s", html_path)
    return html_path
