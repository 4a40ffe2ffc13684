"""The study spec: one YAML file describing a grid of runs, validated once and frozen.

A spec names a dataset, the families with their widths (a ladder or an explicit list), the training prefixes
(fractions of the training set: the D axis for the sum-law fit), seeds, symmetry modes, the evaluation
schedule and the training settings shared by every run (passed through to `symscale.config.RunConfig`), and
the executor settings. `expand_runs` turns it into `RunPlan`s with deterministic ids. An optional `depth:`
section adds a depth sweep at a fixed parameter budget per family (`depth_points`; fitted by
`symscale.fit.depth`).

    spec = load_spec("quickstart")          # a preset name, or a path to a YAML file
    plans = expand_runs(spec)               # one RunPlan per (family, width, prefix, seed, mode)
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import logging
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from symscale.config import RunConfig, bounded, build, check_bool, coerce, validate
from symscale.errors import SymscaleError

log = logging.getLogger(__name__)

PRESETS = ("quickstart", "quickstart-smoke", "embedded", "paper", "extended", "depth")
EXECUTORS = ("local", "slurm", "ray")

# Symmetry modes: what each adds to the shared training settings (RunConfig keys). "architecture" is the
# plain run (the symmetry is whatever the family builds in); the others are the paper's ablations.
# multi_epoch trains on prefix/100 of the data for 100 epochs with rotation augmentation: the same D as a
# single epoch on the prefix (the paper's "1% of the data for 100 epochs").
MODES: dict[str, dict[str, Any]] = {
    "architecture": {},
    "augmentation": {"augment": "so3"},
    "symmetry_loss": {"symmetry_loss_rotations": 5, "symmetry_loss_weight": 1.0},
    "multi_epoch": {"epochs": 100, "augment": "so3"},
}
MULTI_EPOCH_REPEATS = 100

_TOP_KEYS = {
    "name": "a short study name",
    "description": "free text",
    "dataset": "where the structures come from",
    "families": "list of {arch, ladder | widths, overrides, training, modes}",
    "prefixes": "training-set fractions in (0, 1]",
    "seeds": "list of integer seeds",
    "modes": f"list of symmetry modes ({', '.join(MODES)})",
    "evaluation": "evaluation schedule (RunConfig keys)",
    "training": "settings shared by every run (RunConfig keys)",
    "executor": "how runs are executed",
    "estimate": "dry-run estimates: {flops_per_second}",
    "fits": "{bootstrap, seed, group_by, l_inf: zero|free, loss: total|force|energy, drop_fraction, ema, "
    "sensitivity, include_diverged} for the fits after the study",
    "report": "true to write the report after the fits",
    "tune": "learning-rate sweep per family before the grid: {lrs, width, prefix}",
    "seed_repeats": "the smallest widths of each family again over extra seeds: {smallest, seeds}",
    "depth": "a depth sweep at a fixed parameter budget: {depths, budget, families, bootstrap, seed}",
}
_FAMILY_KEYS = ("arch", "ladder", "widths", "overrides", "training", "modes")
_FIT_KEYS = (
    "bootstrap",
    "seed",
    "group_by",
    "l_inf",
    "loss",
    "drop_fraction",
    "ema",
    "sensitivity",
    "include_diverged",
)
PREFIX = "a training-set fraction in (0, 1]"


@dataclass(frozen=True)
class DatasetSpec:
    """Where the structures come from: the built-in xTB set (`builtin` = number of structures) or files."""

    builtin: int | None = bounded(None, minimum=10)
    seed: int = bounded(0, minimum=0)  # generation seed of the built-in set
    path: str | None = None  # a file or folder (.aselmdb, ASE .db, extxyz); relative to the spec file
    val_path: str | None = None  # separate validation data (e.g. OMol25's validation split); None: carve out `val`
    neutral_only: bool = False
    val: int = bounded(
        200, minimum=1
    )  # structures held out for validation (with val_path: sampled from it, all if fewer)
    split_seed: int = bounded(0, minimum=0)
    elements: tuple[int, ...] | None = bounded(None, minimum=1)  # atomic numbers, for dry runs without the data
    size_hint: dict[str, float] = field(default_factory=dict)  # {structures, atoms_per_structure}
    # label keys in the files (MACE-style: REF_energy, REF_forces)
    energy_key: str = bounded("energy", nonempty=True, expected="a label key such as REF_energy")
    forces_key: str = bounded("forces", nonempty=True, expected="a label key such as REF_forces")

    def run_keys(self) -> dict[str, Any]:
        """RunConfig data keys: the built-in set by name (not where its cache lives), or the path."""
        if self.builtin is not None:
            data = {"source": "builtin", "builtin_structures": self.builtin, "builtin_seed": self.seed}
        else:
            data = {"source": self.path}
        if self.val_path is not None:
            data["val_source"] = self.val_path
        data.update(energy_key=self.energy_key, forces_key=self.forces_key)
        return {**data, "neutral_only": self.neutral_only, "n_val": self.val, "split_seed": self.split_seed}


@dataclass(frozen=True)
class FamilySpec:
    arch: str
    widths: tuple[int, ...]
    ladder: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)  # model options (num_layers, lmax, ...)
    training: dict[str, Any] = field(default_factory=dict)  # RunConfig keys for this family (e.g. its lr)
    modes: tuple[str, ...] | None = bounded(None, choices=tuple(MODES))  # this family's modes (None: the spec's)

    def modes_in(self, spec: StudySpec) -> tuple[str, ...]:
        """The symmetry modes this family runs in: its own `modes`, else the spec's (the paper's ablations
        are on the unconstrained model only: a symmetry loss on an equivariant model costs (M+1)x for nothing)."""
        return self.modes if self.modes is not None else spec.modes


@dataclass(frozen=True)
class SlurmSpec:
    """`executor.slurm`: the sbatch options of every run's job (one job per run, named by its run id)."""

    partition: str | None = bounded(None, nonempty=True)  # --partition
    qos: str | None = bounded(None, nonempty=True)  # --qos
    account: str | None = bounded(None, nonempty=True)  # --account
    time_min: int = bounded(240, minimum=1)  # --time, minutes per job before it is requeued (and resumes)
    mem_gb: float | None = bounded(None, above=0)  # --mem, GB per job
    cpus_per_task: int | None = bounded(None, minimum=1)  # --cpus-per-task (None: executor.threads_per_worker, else 1)
    gpus_per_task: int | None = bounded(
        None, minimum=0
    )  # --gpus-per-node (None: 1 for a training.device cuda run, else none)
    constraint: str | None = bounded(None, nonempty=True)  # --constraint
    setup: tuple[str, ...] = ()  # shell lines run before the run in the job (module load, source venv)
    extra: dict[str, Any] = field(default_factory=dict)  # more sbatch options: {mail-type: END, exclusive: true}
    max_running: int = bounded(64, minimum=1)  # jobs of this study in the queue at once while the study waits
    max_requeues: int = bounded(5, minimum=0)  # requeues after preemption or timeout
    poll_s: float = bounded(5.0, above=0)  # seconds between two looks at squeue
    local: bool = False  # submitit's local executor: the same code path minus sbatch (tests)
    wait: bool = True  # keep the study process polling until the jobs end


@dataclass(frozen=True)
class RaySpec:
    address: str | None = bounded(
        None, nonempty=True
    )  # an existing cluster ("auto", "ray://host:10001"); None starts a local one
    cpus_per_run: float = bounded(1.0, minimum=0)
    gpus_per_run: float = bounded(0.0, minimum=0)
    max_retries: int = bounded(
        2, minimum=0
    )  # re-executions of a run whose worker died (each resumes from its checkpoint)
    num_cpus: int | None = bounded(None, minimum=1)  # CPUs of a local cluster (None: all)


@dataclass(frozen=True)
class ExecutorSpec:
    kind: str = bounded("local", choices=EXECUTORS)
    workers: int | None = bounded(
        None, minimum=1
    )  # local: worker processes (None: 1); ray: concurrent runs (None: as resources allow)
    threads_per_worker: int | None = bounded(None, minimum=1)  # None: cores // workers
    max_restarts: int = bounded(
        1, minimum=0
    )  # local: restarts of a run whose worker died (resuming from its checkpoint)
    slurm: SlurmSpec = field(default_factory=SlurmSpec)
    ray: RaySpec = field(default_factory=RaySpec)


@dataclass(frozen=True)
class TuneSpec:
    """The learning-rate stage (`symscale.study.tuning`): each family trains once per rate in `lrs` at its
    tuning width on the `prefix` of the training set; the rate with the lowest final validation loss goes to
    its runs."""

    lrs: tuple[float, ...] = bounded(above=0)
    width: int | dict[str, int] | None = None  # one width, or per arch; None: the family's smallest width
    prefix: float = bounded(0.1, above=0, maximum=1, expected=PREFIX)  # training-set prefix of each sweep run

    def width_of(self, fam: FamilySpec) -> int:
        """The tuning width of a family."""
        if isinstance(self.width, dict):
            return self.width.get(fam.arch, min(fam.widths))
        return self.width if self.width is not None else min(fam.widths)


@dataclass(frozen=True)
class SeedRepeats:
    """`seed_repeats`: each family's `smallest` widths run again, at every prefix and mode, once per seed in
    `seeds` (seeds the grid does not use). The repeats measure the seed-to-seed spread of the validation loss
    that the report shows beside the bootstrap intervals; they stay out of laws.csv and the fits, so that each
    grid point is fitted once (a repeat that entered the frontier would pick the luckiest seed)."""

    smallest: int = bounded(1, minimum=1)  # how many of each family's narrowest widths are repeated
    seeds: tuple[int, ...] = bounded((), minimum=0)  # the extra seeds (none of the grid's `seeds`)

    def widths_of(self, fam: FamilySpec) -> tuple[int, ...]:
        """The widths of a family that are repeated: its `smallest` narrowest."""
        return tuple(sorted(fam.widths)[: self.smallest])


@dataclass(frozen=True)
class StudySpec:
    name: str
    dataset: DatasetSpec
    families: tuple[FamilySpec, ...]
    prefixes: tuple[float, ...] = bounded((1.0,), above=0, maximum=1, expected=PREFIX)
    seeds: tuple[int, ...] = bounded((0,), minimum=0)
    modes: tuple[str, ...] = bounded(("architecture",), choices=tuple(MODES))
    evaluation: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    executor: ExecutorSpec = field(default_factory=ExecutorSpec)
    flops_per_second: float | None = bounded(None, above=0)
    fits: dict[str, Any] = field(default_factory=dict)
    report: bool = True
    description: str = ""
    source: str = ""  # where the spec was read from
    raw: dict[str, Any] = field(default_factory=dict, repr=False)  # the validated YAML mapping
    tune: TuneSpec | None = None  # the learning-rate stage before the grid (None: the spec's rates as given)
    seed_repeats: SeedRepeats | None = None  # extra seeds of each family's smallest runs (None: none)
    depth: DepthSpec | None = None  # the depth sweep beside the grid (None: no depth runs)


@dataclass(frozen=True)
class RunPlan:
    """One run of a study: its id, its grid coordinates and its validated run configuration (built once by
    `expand_runs` and handed on as is to the engine and the training loop)."""

    run_id: str
    arch: str
    width: int
    seed: int
    mode: str
    prefix: float  # the grid's data prefix (a multi_epoch run trains on prefix / MULTI_EPOCH_REPEATS of it)
    config: RunConfig

    def to_dict(self) -> dict[str, Any]:
        """The plan file's content (`symscale.rundir.write_plan`): coordinates and the nested config."""
        coords = {k: getattr(self, k) for k in ("run_id", "arch", "width", "seed", "mode", "prefix")}
        return {**coords, "config": self.config.to_dict()}


# ---------------------------------------------------------------- loading and validation


def preset_path(name: str) -> Path:
    """Path of a built-in study spec (`quickstart`, `quickstart-smoke`, `embedded`, `paper`, `extended`)."""
    if name not in PRESETS:
        raise SymscaleError(f"unknown study preset {name!r}; choices: {', '.join(PRESETS)}")
    return Path(str(resources.files("symscale") / "configs" / "studies" / f"{name}.yaml"))


def load_spec(name_or_path: str | Path, *, overrides: dict[str, Any] | None = None) -> StudySpec:
    """Read and validate a study spec from a preset name or a YAML path. `overrides` is merged into the YAML
    mapping first (nested dicts merged key by key), e.g. {"executor": {"workers": 2}}."""
    path = Path(name_or_path)
    if str(name_or_path) in PRESETS and not path.exists():
        path = preset_path(str(name_or_path))
    if not path.is_file():
        raise SymscaleError.invalid("study spec", str(name_or_path), f"a YAML file or one of {', '.join(PRESETS)}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise SymscaleError(f"invalid study spec {path}: not YAML ({err})") from None
    raw = merge(raw or {}, overrides or {})
    return parse_spec(raw, source=str(path))


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """A new mapping: `base` updated by `extra`, nested mappings merged key by key."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _check_keys(section: str, mapping: Any, allowed: Any) -> dict[str, Any]:
    """Sections that are not dataclasses of their own (families, fits, estimate) checked for unknown keys."""
    if not isinstance(mapping, dict):
        raise SymscaleError.invalid(section, mapping, "a mapping")
    for key in mapping:
        if key not in allowed:
            raise SymscaleError(f"unknown key {key!r} in {section}; allowed: {', '.join(sorted(allowed))}")
    return mapping


def parse_spec(raw: dict[str, Any], *, source: str = "") -> StudySpec:
    """Validate a study spec mapping (as read from YAML). Every error names the key and what is allowed;
    each value is checked by the bound beside its field (`symscale.config.build`, the run config's engine)."""
    _check_keys("study spec", raw, _TOP_KEYS)
    for required in ("dataset", "families"):
        if required not in raw:
            raise SymscaleError(f"missing key {required!r} in study spec {source}")
    name = raw.get("name") or Path(source).stem or "study"
    if not isinstance(name, str) or not name.replace("-", "").replace("_", "").isalnum():
        raise SymscaleError.invalid("name", name, "letters, digits, '-' and '_'")
    base_dir = Path(source).parent if source else Path.cwd()
    estimate = _check_keys("estimate", raw.get("estimate") or {}, ("flops_per_second",))
    fps = estimate.get("flops_per_second")
    spec = StudySpec(
        name=name,
        dataset=_parse_dataset(raw["dataset"], base_dir),
        families=_parse_families(raw["families"]),
        prefixes=tuple(sorted(set(coerce("prefixes", raw.get("prefixes", [1.0]), "tuple[float, ...]")))),
        seeds=coerce("seeds", raw.get("seeds", [0]), "tuple[int, ...]"),
        modes=_parse_modes("modes", raw.get("modes", ["architecture"])),
        evaluation=dict(_check_keys("evaluation", raw.get("evaluation") or {}, _AnyKey())),
        training=dict(_check_keys("training", raw.get("training") or {}, _AnyKey())),
        executor=_parse_executor(raw.get("executor") or {}),
        flops_per_second=coerce("estimate.flops_per_second", fps, "float | None"),
        fits=_parse_fits(raw.get("fits") or {}),
        report=check_bool("report", raw.get("report", True)),
        description=str(raw.get("description", "")),
        source=source,
        raw=copy.deepcopy(raw),
        tune=_parse_tune(raw.get("tune")),
        seed_repeats=_parse_seed_repeats(raw.get("seed_repeats"), raw.get("seeds", [0])),
        depth=_parse_depth(raw.get("depth")),
    )
    validate(spec)
    return spec


def _parse_fits(raw: Any) -> dict[str, Any]:
    """The `fits:` section, checked by the fit menu's own rules (`symscale.fit.menu.study_settings`);
    `include_diverged` (default false, laws.csv's setting, not the fits') puts diverged runs' points into laws.csv."""
    from symscale.fit.menu import study_settings

    fits = dict(_check_keys("fits", raw, _FIT_KEYS))
    if "include_diverged" in fits:
        fits["include_diverged"] = check_bool("fits.include_diverged", fits["include_diverged"])
    try:
        study_settings({k: v for k, v in fits.items() if k != "include_diverged"})
    except (SymscaleError, TypeError) as err:
        raise SymscaleError(f"invalid study spec, fits: {err}") from None
    return fits


def _parse_tune(raw: Any) -> TuneSpec | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise SymscaleError.invalid("tune", raw, "a mapping")
    lrs = tuple(sorted(set(coerce("tune.lrs", raw.get("lrs"), "tuple[float, ...]"))))
    width = raw.get("width")  # one width or one per arch: checked as a run's width when its RunConfig is built
    if isinstance(width, dict):
        width = {str(a): coerce(f"tune.width.{a}", w, "int") for a, w in width.items()}
    elif width is not None:
        width = coerce("tune.width", width, "int")
    if "fraction" in raw:  # the deprecated name of `prefix`
        if "prefix" in raw:
            raise SymscaleError("invalid tune: give prefix (or its old name fraction), not both")
        raw = {("prefix" if k == "fraction" else k): v for k, v in raw.items()}
    return build(TuneSpec, "tune", raw, lrs=lrs, width=width)


def _parse_seed_repeats(raw: Any, grid_seeds: Any) -> SeedRepeats | None:
    if raw is None:
        return None
    repeats = build(SeedRepeats, "seed_repeats", raw)
    shared = set(repeats.seeds) & set(grid_seeds if isinstance(grid_seeds, list) else [])
    if shared or len(set(repeats.seeds)) != len(repeats.seeds):
        raise SymscaleError.invalid(
            "seed_repeats.seeds", list(repeats.seeds), "distinct seeds that `seeds` does not list"
        )
    return repeats


class _AnyKey:
    """Pass-through sections (training, evaluation) are checked by RunConfig, which knows its keys."""

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str)

    def __iter__(self):
        return iter(["any RunConfig key"])


def _parse_dataset(raw: Any, base_dir: Path) -> DatasetSpec:
    if not isinstance(raw, dict):
        raise SymscaleError.invalid("dataset", raw, "a mapping")
    raw = {k: v for k, v in raw.items() if v is not None}
    if ("builtin" in raw) == ("path" in raw):
        raise SymscaleError.invalid("dataset", raw, "exactly one of 'builtin' (number of structures) or 'path'")
    given: dict[str, Any] = {k: _data_path(f"dataset.{k}", raw[k], base_dir) for k in ("path", "val_path") if k in raw}
    if "elements" in raw:
        given["elements"] = tuple(sorted(set(coerce("dataset.elements", raw["elements"], "tuple[int, ...]"))))
    if "size_hint" in raw:
        hint = _check_keys("dataset.size_hint", raw["size_hint"], ("structures", "atoms_per_structure"))
        given["size_hint"] = {k: _positive(f"dataset.size_hint.{k}", v) for k, v in hint.items()}
    return build(DatasetSpec, "dataset", raw, **given)


def _positive(key: str, value: Any) -> float:
    out = coerce(key, value, "float")  # 2.0e9, which YAML 1.1 reads as a string, is a number
    if not out > 0:
        raise SymscaleError.invalid(key, value, "a number > 0")
    return out


def _data_path(key: str, path: Any, base_dir: Path) -> str | None:
    """A dataset path resolved against the spec's folder; a `${...}` placeholder is kept as it is."""
    if path is None:
        return None
    if not isinstance(path, str) or not path:
        raise SymscaleError.invalid(key, path, "a file or folder path")
    return str((base_dir / Path(path).expanduser()).resolve()) if "${" not in path else path


def _parse_families(raw: Any) -> tuple[FamilySpec, ...]:
    """The families with their widths; a width is checked once, as the run's width, when `expand_runs` builds
    its RunConfig (here only that the widths are a non-empty list of integers)."""
    if not isinstance(raw, list) or not raw:
        raise SymscaleError.invalid("families", raw, "a non-empty list")
    families = []
    for i, fam in enumerate(raw):
        where = f"families[{i}]"
        _check_keys(where, fam, _FAMILY_KEYS)
        arch = fam.get("arch")
        if not isinstance(arch, str):
            raise SymscaleError.invalid(f"{where}.arch", arch, "a family name (mpnn, egnn, gemnet_oc, esen)")
        if ("ladder" in fam) == ("widths" in fam):
            raise SymscaleError.invalid(where, fam, "exactly one of 'ladder' (cpu | paper) or 'widths'")
        ladder = fam.get("ladder")
        widths = _ladder_widths(arch, ladder) if ladder is not None else fam["widths"]
        widths = coerce(f"{where}.widths", widths, "tuple[int, ...]")
        overrides = _check_keys(f"{where}.overrides", fam.get("overrides") or {}, _AnyKey())
        if ladder is not None:  # the ladder's own model options (e.g. eSEN paper: lmax 4), then the spec's
            from symscale.models.ladders import ladder_overrides

            overrides = {**ladder_overrides(arch, ladder), **overrides}
        training = _check_keys(f"{where}.training", fam.get("training") or {}, _AnyKey())
        modes = _parse_modes(f"{where}.modes", fam["modes"]) if "modes" in fam else None
        families.append(FamilySpec(arch, widths, ladder, dict(overrides), dict(training), modes))
        validate(families[-1], f"{where}.")
    return tuple(families)


def _parse_modes(key: str, raw: Any) -> tuple[str, ...]:
    """Symmetry modes as a tuple without repeats (each checked against MODES by the field's bound)."""
    return tuple(dict.fromkeys(coerce(key, raw, "tuple[str, ...]")))


def _ladder_widths(arch: str, ladder: Any) -> list[int]:
    if not isinstance(ladder, str):
        raise SymscaleError.invalid(f"ladder of {arch}", ladder, "a ladder name (cpu | paper)")
    from symscale.models.ladders import load_ladder

    return list(load_ladder(arch, ladder))


def _parse_executor(raw: Any) -> ExecutorSpec:
    if not isinstance(raw, dict):
        raise SymscaleError.invalid("executor", raw, "a mapping")
    nested = {
        "slurm": _parse_slurm(raw.get("slurm") or {}),
        "ray": build(RaySpec, "executor.ray", raw.get("ray") or {}),
    }
    return build(ExecutorSpec, "executor", raw, **nested)


def _parse_slurm(raw: Any) -> SlurmSpec:
    if isinstance(raw, dict) and "array_parallelism" in raw:
        raise SymscaleError(
            "executor.slurm.array_parallelism is now max_running: each run is its own job, named by its run id"
        )
    if not isinstance(raw, dict):
        raise SymscaleError.invalid("executor.slurm", raw, "a mapping")
    setup = raw.get("setup") or []
    if isinstance(setup, str):
        setup = [setup]
    if not isinstance(setup, list) or not all(isinstance(line, str) for line in setup):
        raise SymscaleError.invalid("executor.slurm.setup", setup, "a list of shell lines")
    extra = raw.get("extra") or {}
    if not isinstance(extra, dict) or not all(isinstance(k, str) and k for k in extra):
        raise SymscaleError.invalid("executor.slurm.extra", extra, "a mapping of sbatch option: value")
    for key, value in extra.items():
        if not isinstance(value, str | int | float | bool) or value is False:
            raise SymscaleError.invalid(f"executor.slurm.extra.{key}", value, "a string, a number or true")
    extra = {k.lstrip("-"): v for k, v in extra.items()}
    return build(SlurmSpec, "executor.slurm", raw, setup=tuple(setup), extra=extra)


# ---------------------------------------------------------------- expansion to runs


def run_id(config: RunConfig) -> str:
    """Deterministic id: a readable prefix and the first 10 hex digits of `RunConfig.config_hash()`, the
    SHA-256 of the canonical JSON of the resolved configuration (defaults filled in; keys that do not change
    results, such as threads and device, left out). Equal configs give equal ids on every machine."""
    return f"{config.arch}-w{config.width}-{config.config_hash()[:10]}"


def run_config(spec: StudySpec, fam: FamilySpec, width: int, prefix: float, seed: int, mode: str) -> RunConfig:
    """The validated RunConfig of one grid point (a spec error names the spec's sections)."""
    cfg = merge(merge(spec.training, spec.evaluation), fam.training)
    cfg = merge(cfg, MODES[mode])
    if mode == "multi_epoch":
        prefix = prefix / MULTI_EPOCH_REPEATS
    cfg.update(arch=fam.arch, width=width, seed=seed, prefix=prefix, **spec.dataset.run_keys())
    if fam.overrides:
        cfg["model_overrides"] = merge(cfg.get("model_overrides") or {}, fam.overrides)
    try:
        return RunConfig.from_dict(cfg)
    except SymscaleError as err:
        where = f"family {fam.arch!r} at width {width!r} (its widths, training or overrides, or the shared settings)"
        raise SymscaleError(f"invalid study spec, {where}: {err}") from None


def expand_runs(spec: StudySpec) -> list[RunPlan]:
    """Every run of the study, in a stable order (family, width, prefix, seed, mode); each configuration is
    validated once, here, by RunConfig (an unknown training key is an error naming the allowed keys)."""
    plans = []
    for fam in spec.families:
        for width in fam.widths:
            for prefix in spec.prefixes:
                for seed in spec.seeds:
                    for mode in fam.modes_in(spec):
                        cfg = run_config(spec, fam, width, prefix, seed, mode)
                        plans.append(RunPlan(run_id(cfg), fam.arch, width, seed, mode, prefix, cfg))
    plans += seed_repeat_plans(spec)
    ids = [p.run_id for p in plans]
    if len(set(ids)) != len(ids):
        raise SymscaleError("invalid study spec: two grid points have the same configuration (duplicate widths?)")
    known = set(ids)
    for point in depth_points(spec):  # a depth run equal to a grid run (the family's own depth) is that run
        plans += [p for p in point.plans if p.run_id not in known]
        known.update(p.run_id for p in point.plans)
    return plans


def seed_repeat_plans(spec: StudySpec) -> list[RunPlan]:
    """The runs `seed_repeats` adds: each family's smallest widths at every prefix and mode, per extra seed."""
    repeats, plans = spec.seed_repeats, []
    if repeats is None:
        return plans
    for fam in spec.families:
        for width in repeats.widths_of(fam):
            for prefix in spec.prefixes:
                for seed in repeats.seeds:
                    for mode in fam.modes_in(spec):
                        cfg = run_config(spec, fam, width, prefix, seed, mode)
                        plans.append(RunPlan(run_id(cfg), fam.arch, width, seed, mode, prefix, cfg))
    return plans


def fitted_plans(spec: StudySpec, plans: list[RunPlan]) -> list[RunPlan]:
    """The plans whose evaluations go into laws.csv and the fits: the grid's seeds (not the seed repeats)."""
    return [p for p in plans if p.seed in spec.seeds]


def depth_only_ids(spec: StudySpec) -> set[str]:
    """Run ids of the depth sweep's runs that are not grid runs: fitted by `symscale.fit.depth`, kept out of the
    scaling-law fits (each would be a one-run group of its own depth option)."""
    if spec.depth is None:
        return set()
    grid = {p.run_id for p in expand_runs(dataclasses.replace(spec, depth=None))}
    return {p.run_id for point in depth_points(spec) for p in point.plans} - grid


def spec_to_yaml(spec: StudySpec) -> str:
    """The validated spec mapping as YAML (written to the study directory as spec.yaml)."""
    return yaml.safe_dump(spec.raw, sort_keys=False)


# ---------------------------------------------------------------- the depth sweep
#
# `depth: {depths: [1, 2, 3, 4, 6], budget: 2.0e4 | {arch: N}, families: [arch, ...], bootstrap, seed}`.
# For each family of the spec (or those named) and each depth, the width whose N (the models' own count,
# `symscale.models.ladders.count_parameters`, for the dataset's elements) is closest to the budget; the default
# budget is the family's N at its muP base width and its own depth. The runs are at the largest prefix, every
# seed, the plain symmetry mode, and are otherwise the family's runs (its overrides and training settings); at
# the family's own depth no depth option is added, so the run is the grid's run when the grid has that width.
# The default budget is N of the family's smallest width in the spec (at its own depth): the sweep passes
# through that run. N is counted for `dataset.elements` when given, else the built-in set's elements.
# `symscale.fit.depth` fits loss against depth (the runner writes depth.json, the points with their run ids).

MAX_DEPTH_WIDTH = 1 << 16  # the width search stops here: a budget no width reaches is a spec error


@dataclass(frozen=True)
class DepthSpec:
    """`depth:`: the depths to sweep, the parameter budget (one N, per arch, or None: each family's N at its
    smallest width and own depth), the archs swept (None: every family of the spec) and the fit's bootstrap."""

    depths: tuple[int, ...] = bounded(minimum=1)  # layers (blocks), at least 3 different ones
    budget: float | dict[str, float] | None = None  # parameters: one N, or one per arch (checked > 0 below)
    families: tuple[str, ...] | None = None
    bootstrap: int = bounded(1000, minimum=1)
    seed: int = bounded(0, minimum=0)


@dataclass(frozen=True)
class DepthPoint:
    """One depth of one family: the width chosen for the budget, its N and its runs (one per seed)."""

    arch: str
    options: str  # the family's model options without the depth (`symscale.fit.results.options_label`)
    depth: int
    width: int
    num_parameters: int
    budget: float
    plans: tuple[RunPlan, ...]

    def to_dict(self) -> dict[str, Any]:
        """depth.json's row: coordinates, N, budget and run ids."""
        keys = ("arch", "options", "depth", "width", "num_parameters", "budget")
        return {**{k: getattr(self, k) for k in keys}, "run_ids": [p.run_id for p in self.plans]}


def _parse_depth(raw: Any) -> DepthSpec | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise SymscaleError.invalid("depth", raw, "a mapping")
    depths = tuple(sorted(set(coerce("depth.depths", raw.get("depths"), "tuple[int, ...]"))))
    if len(depths) < 3:
        raise SymscaleError.invalid("depth.depths", raw.get("depths"), "at least 3 different depths (a parabola)")
    budget = raw.get("budget")
    if isinstance(budget, dict):
        budget = {str(a): _positive_number(f"depth.budget.{a}", n) for a, n in budget.items()}
    elif budget is not None:
        budget = _positive_number("depth.budget", budget)
    return build(DepthSpec, "depth", raw, depths=depths, budget=budget)


def _positive_number(key: str, value: Any) -> float:
    number = coerce(key, value, "float")
    if not number > 0:
        raise SymscaleError.invalid(key, value, "a number > 0 (parameters)")
    return number


def _own_depth(arch: str, option: str, options: dict[str, Any]) -> int:
    """The depth family `arch` has with `options`: the option if set, else its constructor default."""
    import inspect

    from symscale.models.registry import get_family

    if option in options:
        return int(options[option])
    for cls in get_family(arch).__mro__:
        param = inspect.signature(cls.__init__).parameters.get(option) if "__init__" in vars(cls) else None
        if param is not None and param.default is not inspect.Parameter.empty:
            return int(param.default)
    raise SymscaleError(f"arch {arch!r}: no default for its depth option {option!r}; set it in the overrides")


def _counter(spec: StudySpec, fam: FamilySpec):
    """N(width, options) of the family as its runs build it (spec training's model_overrides and forces too)."""
    from symscale.models.ladders import BUILTIN_ELEMENTS, count_parameters

    elements = spec.dataset.elements or BUILTIN_ELEMENTS  # the built-in set; a file's elements when given
    shared = dict(spec.training.get("model_overrides") or {})
    forces = {"forces": spec.training["forces"]} if "forces" in spec.training else {}

    def count(width: int, options: dict[str, Any]) -> int:
        merged = {**forces, **shared, **options}
        try:
            return _cached_count(fam.arch, width, tuple(elements), tuple(sorted(merged.items())))
        except TypeError:  # an unhashable option value (a list): counted without the cache
            return count_parameters(fam.arch, width, elements, **merged)

    return count


@functools.lru_cache(maxsize=4096)
def _cached_count(arch: str, width: int, elements: tuple[int, ...], options: tuple[tuple[str, Any], ...]) -> int:
    """`count_parameters`, cached: the width search and every expansion of a spec ask for the same counts."""
    from symscale.models.ladders import count_parameters

    return count_parameters(arch, width, elements, **dict(options))


def closest_width(count, budget: float, options: dict[str, Any], start: int = 1) -> tuple[int, int]:
    """(width, N) with N = count(width, options) closest to `budget` in ratio (N grows with width). Widths
    below `start`, or that do not build, are refused by the family (SymscaleError) and skipped at the bottom."""
    lo = start
    while True:  # the smallest width the family builds (eSEN refuses 1 sphere channel)
        try:
            n_lo = count(lo, options)
            break
        except SymscaleError:
            lo += 1
            if lo > start + 8:
                raise
    if n_lo >= budget:
        return lo, n_lo
    hi = max(2 * lo, lo + 1)
    while count(hi, options) < budget:  # doubling to a width past the budget
        lo, hi = hi, 2 * hi
        if hi > MAX_DEPTH_WIDTH:
            raise SymscaleError.invalid("depth.budget", budget, f"a parameter count below N at width {lo}")
    while hi - lo > 1:  # N(lo) < budget <= N(hi)
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if count(mid, options) < budget else (lo, mid)
    n_lo, n_hi = count(lo, options), count(hi, options)
    return (lo, n_lo) if abs(math.log(n_lo / budget)) < abs(math.log(n_hi / budget)) else (hi, n_hi)


def _depth_budget(spec: DepthSpec, fam: FamilySpec, count) -> float:
    """The family's budget: the spec's (one N or per arch), else N of its smallest width at its own depth."""
    budget = spec.budget.get(fam.arch) if isinstance(spec.budget, dict) else spec.budget
    return float(budget) if budget is not None else float(count(min(fam.widths), dict(fam.overrides)))


def depth_points(spec: StudySpec) -> list[DepthPoint]:
    """Every point of the spec's depth sweep (empty without a `depth:` section), family by family, depth by
    depth; each point's runs are validated RunConfigs like the grid's (same ids for the same configuration)."""
    if spec.depth is None:
        return []
    from symscale.fit.results import options_label
    from symscale.models.registry import depth_option

    archs = {f.arch for f in spec.families}
    for arch in spec.depth.families or ():
        if arch not in archs:
            raise SymscaleError.invalid("depth.families[]", arch, f"a family of the spec ({', '.join(sorted(archs))})")
    points = []
    for fam in spec.families:
        if spec.depth.families is not None and fam.arch not in spec.depth.families:
            continue
        option = depth_option(fam.arch)
        own = _own_depth(fam.arch, option, {**(spec.training.get("model_overrides") or {}), **fam.overrides})
        count = _counter(spec, fam)
        budget = _depth_budget(spec.depth, fam, count)
        label = options_label({k: v for k, v in fam.overrides.items() if k != option})
        for depth in spec.depth.depths:
            options = dict(fam.overrides)
            if depth != own or option in options:  # the family's own depth unset stays unset: the grid's run
                options[option] = depth
            width, n = closest_width(count, budget, options)
            points.append(DepthPoint(fam.arch, label, depth, width, n, budget, _depth_plans(spec, fam, width, options)))
    return points


def _depth_plans(spec: StudySpec, fam: FamilySpec, width: int, options: dict[str, Any]) -> tuple[RunPlan, ...]:
    """The runs of one depth point: the family at `width` with `options` as its overrides, at the largest prefix
    and every seed, in the plain symmetry mode."""
    swept = FamilySpec(fam.arch, (width,), fam.ladder, options, fam.training)
    prefix = max(spec.prefixes)
    plans = []
    for seed in spec.seeds:
        cfg = run_config(spec, swept, width, prefix, seed, "architecture")
        plans.append(RunPlan(run_id(cfg), fam.arch, width, seed, "architecture", prefix, cfg))
    return tuple(plans)
