"""Run a study: expand the spec, prepare the data, execute the runs that are not done, index them, export
the laws table, fit and report.

    result = run_study(load_spec("quickstart"), "studies/quickstart", out=print)

Idempotent: finished runs are skipped, interrupted ones resume from their checkpoints, failed ones stay
failed unless `retry_failed`. On a finished study only the fits and the report are refreshed. A write the
file system refuses (disk full, quota, read-only) stops the study at once with one line (SymscaleError):
the run it hit is recorded as stopped (`rundir.STOPPED_BY_FILESYSTEM`), not failed, and rerunning the same
command resumes it from its last checkpoint.

Study directory: spec.yaml, runs/<run_id>/ (the run directory, written by the training loop),
runs/<run_id>.plan.json (the run's coordinates), runs/<run_id>.lock (its owner while it runs; the layout
belongs to `symscale.rundir`), tune/<family>.json and tune/<family>/<run_id>/ (the learning-rate stage, when
the spec has one: `symscale.study.tuning`), catalogue.sqlite, laws.csv, fits.json, depth.json and depth-fits.json
(a spec with a `depth:` sweep: `symscale.fit.depth`), report/, study.json (the last
invocation's summary), slurm/ (the SLURM engine's job files and jobs.json, the job id of each submitted
run). The engines are `study/local.py`, `study/slurm.py` and `study/ray.py`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from symscale import rundir
from symscale.errors import SymscaleError
from symscale.quantities import device_hours
from symscale.study.catalogue import Catalogue, export_laws
from symscale.study.estimate import RunEstimate, estimate_runs
from symscale.study.executors import RunFn, RunOutcome, RunTask, reset_for_retry, train_config
from symscale.study.local import LocalExecutor
from symscale.study.progress import StudyBar
from symscale.study.ray import RayExecutor
from symscale.study.slurm import SLURM_NO_WORKERS, SlurmExecutor
from symscale.study.spec import RunPlan, StudySpec, depth_only_ids, expand_runs, fitted_plans, spec_to_yaml
from symscale.study.tuning import run_tuning

log = logging.getLogger(__name__)

Reporter = Callable[[Path], Any]  # writes a study's report, returns its path (symscale.report.render.write_report)

Printer = Callable[[str], None]


@dataclass(frozen=True)
class StudyResult:
    """What one invocation of a study achieved."""

    study_dir: str
    n_runs: int
    finished: int
    failed: int
    pending: int
    laws_rows: int
    fits_path: str | None = None
    fits_reason: str | None = None  # why there are no fits (None when fitted)
    report_path: str | None = None
    report_reason: str | None = None
    failures: tuple[tuple[str, str], ...] = field(default_factory=tuple)  # (run_id, reason)
    wall_s: float = 0.0


# ---------------------------------------------------------------- data


def prepare_dataset(spec: StudySpec) -> None:
    """Make sure the study's data is there before any run starts: the built-in set is generated now (once,
    cached; the runs then find it in the cache), a path must exist. Raises SymscaleError otherwise."""
    ds = spec.dataset
    if ds.builtin is not None:
        from symscale.data.builtin import builtin_dataset

        builtin_dataset(ds.builtin, seed=ds.seed)
        return
    if not Path(ds.path).exists():
        raise SymscaleError(f"dataset not found: {ds.path} (the spec's dataset.path); no run was started")


def validate_study(spec: StudySpec, plans: list[RunPlan]) -> None:
    """Everything that can be checked before the first run, so that a study never starts what it cannot
    finish (SymscaleError, one line, nothing written): every family with its options builds at its
    smallest and largest width (meta device: no memory), and the data opens, has the labels and is large
    enough for the validation set and the largest prefix (`data.prefix.check_run_data`)."""
    from symscale.data.prefix import check_run_data
    from symscale.train.loop import check_model_config

    if not plans:
        raise SymscaleError(f"study {spec.name} has no runs (check its families, prefixes, seeds and modes)")
    families: dict[str, list[RunPlan]] = {}
    for plan in plans:
        key = json.dumps([plan.config.arch, dict(plan.config.model_overrides)], sort_keys=True, default=str)
        families.setdefault(key, []).append(plan)
    for group in families.values():
        by_width = sorted(group, key=lambda p: p.config.width)
        for plan in {by_width[0].run_id: by_width[0], by_width[-1].run_id: by_width[-1]}.values():
            try:
                check_model_config(plan.config)
            except (SymscaleError, TypeError, ValueError) as err:  # a family's own check of an option's type
                raise SymscaleError(f"run {plan.run_id} of study {spec.name}: {err}") from None
    prepare_dataset(spec)
    largest = max(plans, key=lambda p: (p.config.data.prefix or 1.0, p.config.data.n_train or 0))
    check_run_data(largest.config)


# ---------------------------------------------------------------- progress


class Progress:
    """One line per run start and finish with the study's elapsed time and ETA. The ETA weighs runs by
    their estimated FLOPs: remaining = elapsed x (cost not yet finished) / (cost finished)."""

    def __init__(self, tasks: list[RunTask], out: Printer):
        self.out = out
        self.total = len(tasks)
        self.cost = {t.run_id: max(t.estimated_flops, 1.0) for t in tasks}
        self.done_cost = 0.0
        self.done = 0
        self.t0 = time.monotonic()
        self.started: dict[str, float] = {}

    def _clock(self) -> str:
        elapsed = time.monotonic() - self.t0
        if self.done_cost <= 0:
            return f"elapsed {_hms(elapsed)}, ETA ?"
        remaining = sum(self.cost.values()) - self.done_cost
        return f"elapsed {_hms(elapsed)}, ETA {_hms(elapsed * remaining / self.done_cost)}"

    def start(self, task: RunTask) -> None:
        self.started.setdefault(task.run_id, time.monotonic())
        self.out(f"[{self.done:>3}/{self.total}] start  {task.run_id} ({self._clock()})")

    def finish(self, task: RunTask, outcome: RunOutcome) -> None:
        self.done += 1
        self.done_cost += self.cost.get(task.run_id, 0.0)
        took = time.monotonic() - self.started.get(task.run_id, self.t0)
        why = f": {outcome.reason}" if outcome.status != "finished" and outcome.reason else ""
        self.out(
            f"[{self.done:>3}/{self.total}] {outcome.status:<8} {task.run_id} in {_hms(took)}{why} ({self._clock()})"
        )


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


# ---------------------------------------------------------------- the study


def init_study_dir(spec: StudySpec, study_dir: str | Path) -> Path:
    """Create the study directory and write spec.yaml (a changed spec replaces the old one, with a warning:
    runs whose configuration changed get new ids; the old run directories stay)."""
    study_dir = Path(study_dir)
    (study_dir / "runs").mkdir(parents=True, exist_ok=True)
    text = spec_to_yaml(spec)
    path = study_dir / "spec.yaml"
    if path.exists() and path.read_text() != text:
        log.warning("spec of %s changed; runs with a changed configuration get new ids", study_dir)
    rundir.write_text(path, text)  # atomic: a crash or a full disk leaves the old spec whole
    return study_dir


def write_plan(plan: RunPlan, run_dir: Path) -> None:
    """runs/<id>.plan.json: the run's grid coordinates and configuration, so that the catalogue knows a run
    before it starts (beside the run directory, which belongs to the training loop)."""
    rundir.write_plan(run_dir, plan.to_dict())


def make_executor(settings: Any, study_dir: str | Path, *, kind: str | None = None, workers: int | None = None):
    """The engine the spec's `executor` section asks for (`kind` and `workers` override it)."""
    kind = kind or settings.kind
    if kind == "slurm":
        if workers is not None:  # the spec's executor.workers (for local and ray) is left alone
            raise SymscaleError.invalid("--workers", workers, SLURM_NO_WORKERS)
        return SlurmExecutor(Path(study_dir) / "slurm", settings.slurm, settings.threads_per_worker)
    workers = workers or settings.workers
    if kind == "local":
        return LocalExecutor(workers or 1, settings.threads_per_worker, settings.max_restarts)
    if kind == "ray":
        return RayExecutor(settings.ray, settings.threads_per_worker, workers=workers)
    raise SymscaleError.invalid("executor", kind, "local, slurm or ray")


def plan_tasks(
    study_dir: Path,
    plans: list[RunPlan],
    estimates: dict[str, float],
    *,
    retry_failed: bool,
    run_fn: RunFn,
) -> list[RunTask]:
    """Tasks for the runs that are not finished (and not failed unless `retry_failed`)."""
    tasks = []
    for plan in plans:
        run_dir = study_dir / "runs" / plan.run_id
        write_plan(plan, run_dir)
        status = rundir.read_status(run_dir)
        stopped = rundir.stopped_by_filesystem(status)  # a full disk stopped it: resumed, not left failed
        if status["status"] == "finished" or (status["status"] == "failed" and not (retry_failed or stopped)):
            continue
        if status["status"] == "failed":
            reset_for_retry(run_dir)
        tasks.append(RunTask(plan.run_id, str(run_dir), plan.config, run_fn, None, estimates.get(plan.run_id, 0.0)))
    return tasks


def run_study(
    spec: StudySpec,
    study_dir: str | Path,
    *,
    kind: str | None = None,
    workers: int | None = None,
    retry_failed: bool = False,
    run_fn: RunFn = train_config,
    finalize: bool = True,
    out: Printer = log.info,
    progress: bool | None = False,
    reporter: Reporter | None = None,
) -> StudyResult:
    """Execute every run of `spec` not yet done, then index, export laws.csv, fit and report. With runs to do
    and the real run function, `validate_study` runs first, before spec.yaml or anything else is written
    (a stand-in `run_fn` of the tests trains nothing and has nothing to validate). `progress`: a study-level
    bar on stderr (`symscale.study.progress.StudyBar`; None: when stderr is a terminal)."""
    t0 = time.monotonic()
    tuned = spec.tune is not None
    if tuned:  # the learning-rate stage: each family's sweep, its best rate to its runs
        if run_fn is train_config:
            validate_study(spec, expand_runs(spec))  # before anything is written (the rates only change ids)
        study_dir = init_study_dir(spec, study_dir)  # spec.yaml keeps the spec as given, with its tune section
        prepare_dataset(spec)
        executor = make_executor(spec.executor, study_dir, kind=kind, workers=workers)
        spec = run_tuning(spec, study_dir, executor, run_fn=run_fn, out=out)
    plans = expand_runs(spec)
    todo = [p for p in plans if rundir.read_status(Path(study_dir) / "runs" / p.run_id)["status"] != "finished"]
    if not tuned:
        if todo and run_fn is train_config:  # the real runs (tests' stand-ins train nothing): before any write
            validate_study(spec, plans)
        study_dir = init_study_dir(spec, study_dir)
    if todo:
        _execute(
            spec, study_dir, plans, kind=kind, workers=workers, retry_failed=retry_failed, run_fn=run_fn, out=out,
            progress=progress,
        )  # fmt: skip
    else:
        out(f"all {len(plans)} runs of {spec.name} are finished: refreshing the fits and the report")
    return summarize(
        spec, study_dir, plans, finalize=finalize, out=out, wall_s=time.monotonic() - t0, reporter=reporter
    )


def _execute(
    spec: StudySpec, study_dir: Path, plans: list[RunPlan], *, kind, workers, retry_failed, run_fn, out, progress
):
    out(f"study {spec.name}: {len(plans)} runs in {study_dir}")
    prepare_dataset(spec)  # done by validate_study already for real runs (cached: the second call is cheap)
    paths = None if spec.dataset.path is None else [spec.dataset.path]
    try:
        estimates = {e.run_id: e.flops for e in estimate_runs(spec, plans, paths, measure_kappa=False)}
    except (SymscaleError, ImportError, RuntimeError) as err:
        log.warning("no FLOP estimates for the ETA: %s", err)
        estimates = {}
    tasks = plan_tasks(study_dir, plans, estimates, retry_failed=retry_failed, run_fn=run_fn)
    tasks.sort(key=lambda t: -t.estimated_flops)  # longest first: the shortest makespan on a pool
    skipped = len(plans) - len(tasks)
    if skipped:
        out(f"{skipped} runs already finished or failed (use --retry-failed to rerun failed ones)")
    executor = make_executor(spec.executor, study_dir, kind=kind, workers=workers)
    bar = StudyBar(tasks, enabled=progress)
    lines = Progress(tasks, bar.printer(out))

    def on_start(task: RunTask) -> None:
        lines.start(task)
        bar.start(task)

    def on_finish(task: RunTask, outcome: RunOutcome) -> None:
        lines.finish(task, outcome)
        bar.finish(task, outcome)
        if outcome.status == "stopped":  # disk full: every later write fails too; stop, resume on the rerun
            raise SymscaleError(
                f"{outcome.reason}; the study stopped (run {task.run_id} and the runs after it resume from "
                "their last checkpoints when the same command is rerun after the fault is fixed)"
            )

    try:
        executor.run(tasks, on_start=on_start, on_finish=on_finish)
    finally:
        bar.close()


def summarize(
    spec: StudySpec,
    study_dir: Path,
    plans: list[RunPlan],
    *,
    finalize: bool = True,
    out: Printer = log.info,
    wall_s: float = 0.0,
    reporter: Reporter | None = None,
) -> StudyResult:
    """Index the runs, export laws.csv and, when no run is left to do, fit and (with a `reporter`, as
    `symscale study` passes `symscale.report.render.write_report`) report. The study never imports the report:
    the report sits above it."""
    records = {r.run_id: r for r in Catalogue(study_dir).refresh()}
    ids = [p.run_id for p in plans]
    status = {i: records[i].status if i in records else "pending" for i in ids}
    failures = tuple((i, records[i].reason or "unknown") for i in ids if status[i] == "failed")
    n_fin = sum(s == "finished" for s in status.values())
    n_pending = len(ids) - n_fin - len(failures)
    include = bool(spec.fits.get("include_diverged", False))  # diverged runs stay out of the fits unless asked
    fitted = [p.run_id for p in fitted_plans(spec, plans)]  # seed repeats are shown in the report, not fitted
    laws_rows = export_laws(Catalogue(study_dir), study_dir / "laws.csv", fitted, include_diverged=include)
    fits = report = (None, "runs are still pending")
    if spec.depth is not None:  # the depth sweep's points (depth.json), fitted when every run is done
        _depth(study_dir, spec, fit=finalize and n_pending == 0, out=out)
    if finalize and n_pending == 0:
        fits = _fit(study_dir, spec)
        report = _report(study_dir, reporter) if spec.report else (None, "the spec says report: false")
    result = StudyResult(
        str(study_dir),
        len(ids),
        n_fin,
        len(failures),
        n_pending,
        laws_rows,
        *fits,
        *report,
        failures=failures,
        wall_s=wall_s,
    )
    rundir.write_text(study_dir / "study.json", json.dumps(asdict(result), indent=1))
    _print_summary(result, out)
    return result


def _fit(study_dir: Path, spec: StudySpec) -> tuple[str | None, str | None]:
    """fits.json from laws.csv; (path, None), or (None, why not). Never stops the study."""
    try:
        import numpy as np

        from symscale import __version__
        from symscale.fit.study import fit_laws_table
        from symscale.fit.table import read_table
    except ImportError as err:
        return None, f"fits unavailable ({err})"
    try:
        table = read_table(study_dir / "laws.csv")
        sweep_only = depth_only_ids(spec)  # the depth sweep has its own fit (depth-fits.json)
        if sweep_only and len(table):
            table = table.select(~np.isin(table["run"], sorted(sweep_only)))
        options = {k: v for k, v in spec.fits.items() if k != "include_diverged"}  # laws.csv's, not the fits'
        results = fit_laws_table(table, **options)
        payload = {"fits": [r.to_dict() for r in results], "symscale_version": __version__}
        path = study_dir / "fits.json"
        rundir.write_text(path, json.dumps(payload, indent=1, default=float))
    except Exception as err:  # a fit failure is reported, the study still completes
        log.exception("fits failed")
        return None, f"fits failed: {type(err).__name__}: {err}"
    return str(path), None


def _depth(study_dir: Path, spec: StudySpec, *, fit: bool, out: Printer) -> None:
    """depth.json (the depth sweep's points and run ids) and, with `fit`, depth-fits.json
    (`symscale.fit.depth.fit_study_depth`). A fit failure is reported; the study still completes."""
    from symscale.fit.depth import DEPTH_POINTS, fit_study_depth
    from symscale.study.spec import depth_points

    points = [p.to_dict() for p in depth_points(spec)]
    rundir.write_text(study_dir / DEPTH_POINTS, json.dumps({"points": points}, indent=1))
    if not fit:
        return
    try:
        result = fit_study_depth(
            study_dir,
            write_text=rundir.write_text,
            bootstrap=spec.depth.bootstrap,
            seed=spec.depth.seed,
            loss=spec.fits.get("loss", "total"),
        )
    except Exception as err:  # as _fit: a fit failure is reported, the study still completes
        log.exception("depth fits failed")
        out(f"depth fits failed: {type(err).__name__}: {err}")
        return
    for f in result["fits"]:
        lo, hi = f["interval"]
        edge = " (at the edge of the measured depths)" if f["at_edge"] else ""
        out(f"optimal depth of {f['arch']}: {f['optimal_depth']:.2f} [{lo:.2f}, {hi:.2f}]{edge}")


def _report(study_dir: Path, reporter: Reporter | None) -> tuple[str | None, str | None]:
    """The report by `reporter(study_dir) -> path`; (path, None), or (None, why not)."""
    if reporter is None:
        return None, f"no report made here: symscale report {study_dir}"
    try:
        return str(reporter(study_dir)), None
    except Exception as err:  # a report failure is reported, the study still completes
        log.exception("report failed")
        return None, f"report failed: {type(err).__name__}: {err}"


def _print_summary(r: StudyResult, out: Printer) -> None:
    out(
        f"{r.finished}/{r.n_runs} runs finished, {r.failed} failed, {r.pending} pending; "
        f"laws table: {r.laws_rows} points in {Path(r.study_dir) / 'laws.csv'}"
    )
    for run_id, reason in r.failures:
        out(f"  failed: {run_id}: {reason}")
    out(f"fits: {r.fits_path}" if r.fits_path else f"no fits: {r.fits_reason}")
    out(f"report: {r.report_path}" if r.report_path else f"no report: {r.report_reason}")


# ---------------------------------------------------------------- dry run


def dry_run(spec: StudySpec, *, measure_kappa: bool = True) -> list[RunEstimate]:
    """Estimates for every run of the spec; reads the dataset's size when it is there, starts nothing."""
    paths = None
    if spec.dataset.path is not None and Path(spec.dataset.path).exists():
        paths = [spec.dataset.path]
    return estimate_runs(spec, expand_runs(spec), paths, measure_kappa=measure_kappa)


def format_estimates(estimates: list[RunEstimate], *, reference_flops: float | None = None) -> str:
    """The dry-run table (one line per run) and its totals."""
    head = f"{'run':<28} {'arch':<10} {'width':>6} {'mode':<13} {'prefix':>6} {'N':>10} {'D':>10} "
    head += f"{'kappa':>7} {'C (FLOPs)':>10} {'time':>10}"
    lines = [head, "-" * len(head)]
    for e in estimates:
        lines.append(
            f"{e.run_id:<28} {e.arch:<10} {e.width:>6} {e.mode:<13} {e.prefix:>6.2f} {e.n_params:>10.3g} "
            f"{e.atoms:>10.3g} {e.kappa:>7.2f} {e.flops:>10.3g} {_hms(e.time_s):>10}"
        )
    total_c = sum(e.flops for e in estimates)
    total_t = sum(e.time_s for e in estimates)
    lines.append(
        f"total: {len(estimates)} runs, {total_c:.3g} FLOPs, {_hms(total_t)} of device time "
        f"({device_hours(total_t):.3g} device-hours); largest run {max(e.flops for e in estimates):.3g} FLOPs"
    )
    if reference_flops:
        lines.append(f"reference study: about {reference_flops:.0e} FLOPs for its largest runs")
    lines.append("kappa (forward FLOPs per atom per parameter) and r (training / forward FLOPs) per group:")
    for e in {(e.group, e.kappa_source): e for e in estimates}.values():
        extra = f", x{e.multiplier:g} (symmetry loss)" if e.multiplier != 1 else ""
        where = f"({e.kappa_source})"
        lines.append(f"  {e.group or e.arch}: kappa {e.kappa:.3g}, r {e.train_ratio:.3g}{extra} {where}")
    samples = {e.sample for e in estimates if e.sample}
    lines += [f"measured on {sample}" for sample in samples]
    lines.append("C = r kappa N D (the paper: r = 3)")
    timed = {(e.group or e.arch): e.time_source for e in estimates if e.time_source != "flops_per_second"}
    if timed:
        lines.append("time: wall seconds predicted from training steps timed on this machine, per group:")
        lines += [f"  {group}: {source}" for group, source in timed.items()]
    else:
        lines.append("time = C / the spec's estimate.flops_per_second (one rate for every family)")
    return "\n".join(lines)


GENERATION_PER_S = 117.0  # built-in structures labelled per second on 2 CPU cores (measured, issue 16)
# The fits and the report after the runs: a fixed part (export, figures) and a part per fitted group that grows
# with the bootstrap. Measured idle on 2 cores with bootstrap 200: 34 s for the quickstart's 4 groups, 20 s for
# a 2-group spec of its MPNN and MC-EGNN (a constant 90 s before: 2.6x too long for the quickstart).
FIT_REPORT_FIXED_S, FIT_REPORT_PER_GROUP_S = 6.0, 7.0  # the second per group at bootstrap 200


def fit_and_report_seconds(groups: int, bootstrap: int) -> float:
    """Predicted seconds of the fits and the report for `groups` fitted groups at `bootstrap` resamples."""
    return FIT_REPORT_FIXED_S + FIT_REPORT_PER_GROUP_S * max(1, groups) * max(bootstrap, 50) / 200


def format_wall_time(spec: StudySpec, stages: list, grid: list[RunEstimate]) -> str:
    """The study's predicted wall time on its local workers: data generation (when the built-in set is not
    cached), the learning-rate stage, the grid (each longest first on the workers), the fits and the report."""
    from symscale.study.calibration import makespan

    workers = spec.executor.workers or 1
    tune = makespan([e.time_s for _, ests in stages for e in ests], workers)
    runs = makespan([e.time_s for e in grid], workers)
    generate = 0.0
    if spec.dataset.builtin is not None:
        from symscale.data.builtin import builtin_path

        if not builtin_path(spec.dataset.builtin, spec.dataset.seed).exists():
            generate = spec.dataset.builtin / GENERATION_PER_S
    from symscale.fit.menu import FitSettings

    bootstrap = int(spec.fits.get("bootstrap", FitSettings.bootstrap))
    fits = fit_and_report_seconds(len({e.group or e.arch for e in grid}), bootstrap)
    total = generate + tune + runs + fits
    parts = [f"data generation {_hms(generate)}"] if generate else ["data cached"]
    parts += [f"learning-rate stage {_hms(tune)}"] if stages else []
    parts += [f"runs {_hms(runs)} on {workers} worker(s), longest first", f"fits and report ~{_hms(fits)}"]
    return f"predicted wall time: {_hms(total)} ({'; '.join(parts)})"
