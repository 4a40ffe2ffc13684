"""Studies: a grid of runs (family x width x prefix x seed x symmetry mode) from one spec, executed on local
worker processes, SLURM (submitit) or Ray, resumable and idempotent, indexed by a catalogue, exported as the
laws table, then fitted and reported.

    from symscale.study import load_spec, run_study
    run_study(load_spec("quickstart"), "studies/quickstart", out=print)
"""

from symscale.study.catalogue import Catalogue, RunRecord, export_laws
from symscale.study.executors import LocalExecutor, RayExecutor, RunOutcome, RunTask, SlurmExecutor, execute_run
from symscale.study.runner import StudyResult, dry_run, format_estimates, run_study
from symscale.study.spec import RunPlan, StudySpec, expand_runs, load_spec, parse_spec

__all__ = [
    "Catalogue",
    "LocalExecutor",
    "RayExecutor",
    "RunOutcome",
    "RunPlan",
    "RunRecord",
    "RunTask",
    "SlurmExecutor",
    "StudyResult",
    "StudySpec",
    "dry_run",
    "execute_run",
    "expand_runs",
    "export_laws",
    "format_estimates",
    "load_spec",
    "parse_spec",
    "run_study",
]
