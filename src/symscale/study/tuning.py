"""The learning-rate stage of a study: one sweep per family before the grid, its best rate handed to the
family's runs (the reference study tuned once per family at about 1M parameters and transferred with muP).

A spec with a `tune: {lrs, width, prefix}` section gets, per family, one short run per rate at the
family's tuning width on the `prefix` of the training set (seed: the spec's first; mode: architecture). The rate with
the lowest final validation loss (`symscale.train.tune.best_learning_rate`) replaces the family's `lr`, so
the grid's run ids depend on it as on any rate. The sweep's runs live in STUDY/tune/<label>/<run_id>/ and
run on the study's executor; STUDY/tune/<label>.json records the sweep. Rerun-safe: a sweep whose record
matches its runs is not repeated, an interrupted one resumes (finished runs are skipped).

    spec = run_tuning(spec, study_dir, executor, out=print)   # spec with each family's chosen lr
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from symscale import rundir
from symscale.errors import SymscaleError
from symscale.study.executors import RunFn, RunTask, train_config
from symscale.study.spec import FamilySpec, RunPlan, StudySpec, run_config, run_id
from symscale.train.tune import best_learning_rate

log = logging.getLogger(__name__)

TUNE_DIR = "tune"
TERMS = ("val_energy_loss", "val_force_loss")  # the final evaluation's loss terms, kept in the record


@dataclass(frozen=True)
class Sweep:
    """One family's learning-rate sweep: its label (the file name under STUDY/tune), width and runs."""

    index: int  # the family's position in the spec
    label: str
    arch: str
    width: int
    plans: tuple[RunPlan, ...]  # one per rate, in the order of `tune.lrs`

    @property
    def lrs(self) -> tuple[float, ...]:
        return tuple(p.config.training.lr for p in self.plans)


def family_label(spec: StudySpec, index: int) -> str:
    """The family's arch, with its model options when another family of the spec has the same arch."""
    fam = spec.families[index]
    if sum(f.arch == fam.arch for f in spec.families) == 1:
        return fam.arch
    options = "-".join(f"{k}{v}" for k, v in sorted(fam.overrides.items()) if isinstance(v, int | float | str))
    return f"{fam.arch}-{options or index}"


def sweeps(spec: StudySpec) -> list[Sweep]:
    """The sweep of every family of a spec with a `tune` section (none without one)."""
    if spec.tune is None:
        return []
    out = []
    for i, fam in enumerate(spec.families):
        width = spec.tune.width_of(fam)
        base = run_config(spec, fam, width, spec.tune.prefix, spec.seeds[0], "architecture")
        plans = []
        for lr in spec.tune.lrs:
            cfg = base.updated({"lr": lr})
            plans.append(RunPlan(run_id(cfg), fam.arch, width, spec.seeds[0], "architecture", spec.tune.prefix, cfg))
        out.append(Sweep(i, family_label(spec, i), fam.arch, width, tuple(plans)))
    return out


def sweep_dir(study_dir: str | Path, sweep: Sweep) -> Path:
    return Path(study_dir) / TUNE_DIR / sweep.label


def read_sweep(study_dir: str | Path, sweep: Sweep) -> dict[str, Any]:
    """The sweep's record from its runs: each rate's status and final validation loss (with its energy and
    force terms where the run recorded them), the family's N at the tuning width, and the best rate."""
    runs, n_params = [], None
    for plan in sweep.plans:
        run_dir = sweep_dir(study_dir, sweep) / plan.run_id
        status = rundir.read_status(run_dir)
        metrics = rundir.read_metrics(run_dir) if status["status"] == "finished" else []
        last = metrics[-1] if metrics else {}
        n_params = n_params or rundir.read_json(run_dir / rundir.RUN_INFO).get("N")
        runs.append({"lr": plan.config.training.lr, "run_id": plan.run_id, "status": status["status"],
                     "val_loss": last.get("val_loss"), "reason": status.get("reason"),
                     **{key: last[key] for key in TERMS if key in last}})  # fmt: skip
    return {"arch": sweep.arch, "label": sweep.label, "width": sweep.width, "N": n_params, "lrs": list(sweep.lrs),
            "prefix": sweep.plans[0].prefix, "best_lr": best_learning_rate(runs), "runs": runs}  # fmt: skip


def _recorded(study_dir: Path, sweep: Sweep) -> dict[str, Any] | None:
    """The sweep's record when it is complete and about these very runs (same ids), else None."""
    path = Path(study_dir) / TUNE_DIR / f"{sweep.label}.json"
    if not path.exists():
        return None
    record = rundir.read_json(path)
    ids = [r.get("run_id") for r in record.get("runs", [])]
    if ids != [p.run_id for p in sweep.plans] or record.get("best_lr") is None:
        return None
    return record


def run_tuning(
    spec: StudySpec,
    study_dir: str | Path,
    executor: Any,
    *,
    run_fn: RunFn = train_config,
    out: Callable[[str], None] = log.info,
) -> StudySpec:
    """Run the sweeps not yet recorded (all on `executor` at once), record them, and return `spec` with each
    family's `lr` set to its sweep's best. Raises SymscaleError when every rate of a sweep failed."""
    study_dir = Path(study_dir)
    todo = [s for s in sweeps(spec) if _recorded(study_dir, s) is None]
    tasks = []
    for sw in todo:
        for plan in sw.plans:
            run_dir = sweep_dir(study_dir, sw) / plan.run_id
            if rundir.read_status(run_dir)["status"] != "finished":
                tasks.append(RunTask(plan.run_id, str(run_dir), plan.config, run_fn))
    if tasks:
        out(f"learning-rate stage: {len(tasks)} sweep runs for {', '.join(s.label for s in todo)}")
        executor.run(tasks)
    chosen: dict[int, float] = {}
    for sw in sweeps(spec):
        record = _recorded(study_dir, sw) or read_sweep(study_dir, sw)
        rundir.write_json(study_dir / TUNE_DIR / f"{sw.label}.json", record)
        if record["best_lr"] is None:
            raise SymscaleError(
                f"learning-rate sweep of {sw.label} failed: no rate of {list(sw.lrs)} finished with a finite "
                f"validation loss (see {sweep_dir(study_dir, sw)}); expected at least one"
            )
        chosen[sw.index] = float(record["best_lr"])
        out(f"learning rate of {sw.label}: {_sweep_line(record)}")
    return with_learning_rates(spec, chosen)


def _sweep_line(record: dict[str, Any]) -> str:
    cells = []
    for r in record["runs"]:
        loss = r["val_loss"]
        ok = loss is not None and math.isfinite(loss)
        cells.append(f"{r['lr']:g} -> {loss:.4g}" if ok else f"{r['lr']:g} -> {r['status']}")
    return f"{record['best_lr']:g} (width {record['width']}; {', '.join(cells)})"


def with_learning_rates(spec: StudySpec, chosen: dict[int, float]) -> StudySpec:
    """`spec` with family i trained at rate chosen[i] (a new spec; the family's other settings kept)."""
    families: list[FamilySpec] = [
        replace(fam, training={**fam.training, "lr": chosen[i]}) if i in chosen else fam
        for i, fam in enumerate(spec.families)
    ]
    return replace(spec, families=tuple(families))


# ---------------------------------------------------------------- dry run


def estimate_sweeps(
    spec: StudySpec, paths: list[str] | None = None, *, measure_kappa: bool = True, calibrate: bool = False
) -> tuple[list[tuple[Sweep, list[Any]]], list[Any]]:
    """(each sweep with the estimates of its runs, the grid's estimates), from one estimate of both (so the
    sweeps share the grid's FLOP measurements and step timings); starts nothing."""
    from symscale.study.estimate import estimate_runs
    from symscale.study.spec import expand_runs

    grid, stages = expand_runs(spec), sweeps(spec)
    plans = grid + [p for sw in stages for p in sw.plans]
    estimates = estimate_runs(spec, plans, paths, measure_kappa=measure_kappa, calibrate=calibrate)
    by_plan = dict(zip((id(p) for p in plans), estimates, strict=True))
    return [(sw, [by_plan[id(p)] for p in sw.plans]) for sw in stages], [by_plan[id(p)] for p in grid]


def format_sweeps(estimated: list[tuple[Sweep, list[Any]]]) -> str:
    """The dry run's tuning-stage table: per family its width, N, rates and estimated cost."""
    if not estimated:
        return "no learning-rate stage (the spec has no `tune` section: each family trains at its given lr)"
    lines = ["learning-rate stage (before the grid; the grid's run ids change with the chosen rates):"]
    for sw, ests in estimated:
        flops, time_s = sum(e.flops for e in ests), sum(e.time_s for e in ests)
        lrs = ", ".join(f"{lr:g}" for lr in sw.lrs)
        lines.append(
            f"  tune {sw.label:<14} width {sw.width:>5}  N {ests[0].n_params:>9.3g}  lrs [{lrs}]  "
            f"{len(ests)} runs at prefix {sw.plans[0].prefix:g}: {flops:.3g} FLOPs, {time_s / 3600:.3g} device-hours"
        )
    return "\n".join(lines)
