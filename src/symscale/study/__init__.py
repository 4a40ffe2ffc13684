"""Studies: a grid of runs (family x width x prefix x seed x symmetry mode) from one spec, executed on local
worker processes, SLURM (submitit) or Ray, resumable and idempotent, indexed by a catalogue, exported as the
laws table, then fitted and reported.

Modules: spec (the study YAML, checked by `symscale.config`'s validation engine, expanded once into typed
`RunPlan`s, each holding a validated `RunConfig`), runner (`run_study`: plan, execute, index, export, fit,
report; `make_executor`), executors (what the engines share: `RunTask`, `RunOutcome`, `execute_run` under the
run's lock), one file per engine: local (a pool of worker processes), slurm (one submitit job per run), ray
(Ray tasks); progress (the study's bar); catalogue (the SQLite index of the run directories and the laws
table), estimate (N, D, C and time of each run before it starts, measured on the study's data), tuning (the
learning-rate stage: one sweep per family before the grid). The run directory itself (layout, status, metrics,
plan, lock, `RunRecord`) belongs to `symscale.rundir`.

    from symscale.study import load_spec, run_study
    run_study(load_spec("quickstart"), "studies/quickstart", out=print)
"""

import importlib
from typing import Any

# exported lazily, so that importing one light module (the catalogue, for the report) does not import the
# training loop and torch through this package
_EXPORTS = {
    "Catalogue": "symscale.study.catalogue",
    "export_laws": "symscale.study.catalogue",
    "RunRecord": "symscale.rundir",
    "RunOutcome": "symscale.study.executors",
    "RunTask": "symscale.study.executors",
    "execute_run": "symscale.study.executors",
    "LocalExecutor": "symscale.study.local",
    "RayExecutor": "symscale.study.ray",
    "SlurmExecutor": "symscale.study.slurm",
    "StudyResult": "symscale.study.runner",
    "dry_run": "symscale.study.runner",
    "format_estimates": "symscale.study.runner",
    "run_study": "symscale.study.runner",
    "RunPlan": "symscale.study.spec",
    "StudySpec": "symscale.study.spec",
    "expand_runs": "symscale.study.spec",
    "load_spec": "symscale.study.spec",
    "parse_spec": "symscale.study.spec",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'symscale.study' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


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
