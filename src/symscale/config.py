"""The configuration of one training run: typed, validated once, frozen, saved in every run directory.

`RunConfig` has a few top-level keys (arch, width, seed, forces, model_overrides) and four sections:

    data        where the structures come from and how they are split (nested prefixes, fixed validation set)
    training    optimiser, loss weights, epochs and the symmetry modes (augmentation, symmetry loss)
    evaluation  the log-spaced evaluation schedule and checkpoint frequency
    runtime     device, dtype, threads, compute accounting, progress and optional loggers

Every leaf name is unique across sections, so a flat mapping works too: `{"lr": 1e-3}` is read as
`{"training": {"lr": 1e-3}}`, and `with_overrides(["lr=1e-3", "training.lr=1e-3"])` accepts both spellings.
A `data` value that is a string or a list of strings is read as `data.source`. Unknown keys are errors that
list the allowed keys. Units are given in each field's comment.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

import yaml

from symscale.errors import SymscaleError

AUGMENT_MODES = ("none", "so3", "o3")
COMPILE_MODES = ("off", "on")
DEVICES = ("cpu", "cuda", "auto")
DTYPES = ("float32", "float64")
PRECISIONS = ("fp32", "bf16")
FORCE_MODES = ("direct", "conservative")
PROGRESS_MODES = ("auto", "bar", "log", "off")
FRACTION = "a fraction in (0, 1]"
# keys that may change between a run and its resumption without changing its results (not hashed)
RESUMABLE_KEYS = (
    "runtime.threads",
    "runtime.progress",
    "runtime.tensorboard",
    "runtime.wandb",
    "runtime.device",
    "runtime.loader_workers",
    "runtime.compile",
)
# optional keys added after runs were recorded: left out of the identity while unset, so run ids stay the same
IDENTITY_OMITTED_WHEN_NONE = ("data.val_source",)
# keys added after run ids were published: hashed only when set away from their default, so that the id of
# every run made before them stays the same
HASHED_WHEN_SET = {
    "evaluation.divergence_factor": 1e3,
    "evaluation.divergence_patience": 6,
    "data.energy_key": "energy",
    "data.forces_key": "forces",
}
# families whose model changed after runs of them were made (arch: revision; absent = 1). A revision above 1
# enters the run's identity as model_revision, so a study does not reuse a finished run of the old model, and a
# checkpoint records it, so an old checkpoint rebuilds the old model (`ForceField.legacy_options`).
#   mpnn 2: the relative vector enters the messages as r_ij / r^2, not r_ij / r_cut (fa_mpnn and canonical_mpnn
#   are the same MPNN averaged over frames)
MODEL_REVISIONS: Mapping[str, int] = MappingProxyType({"mpnn": 2, "fa_mpnn": 2, "canonical_mpnn": 2})


# ---------------------------------------------------------------- the validation engine (run configs and study specs)


@dataclass(frozen=True)
class Bound:
    """The rule a field's value obeys beyond its type, written beside the field (`bounded(...)`).

    `minimum`/`maximum` are inclusive ends, `above`/`below` exclusive ones; `choices` lists the allowed
    strings; `nonempty` refuses an empty (or blank) string. A tuple value is checked element by element (the
    error names `key[]`) and None (an optional field left unset) always passes. `expected` replaces the
    generated "expected ..." text.
    """

    minimum: float | None = None
    maximum: float | None = None
    above: float | None = None
    below: float | None = None
    choices: tuple[str, ...] = ()
    nonempty: bool = False
    expected: str = ""

    def _holds(self, value: Any) -> bool:
        if self.choices:
            return value in self.choices
        if self.nonempty:
            return isinstance(value, str) and bool(value.strip())
        return not (
            (self.minimum is not None and value < self.minimum)
            or (self.maximum is not None and value > self.maximum)
            or (self.above is not None and not value > self.above)
            or (self.below is not None and not value < self.below)
        )

    def describe(self, value: Any) -> str:
        """The "expected ..." text of an error for `value`."""
        if self.expected:
            return self.expected
        if self.choices:
            return f"one of {', '.join(self.choices)}"
        if self.nonempty:
            return "a non-empty string"
        ends = [
            f"{sign} {end:g}"
            for sign, end in ((">=", self.minimum), (">", self.above), ("<=", self.maximum), ("<", self.below))
            if end is not None
        ]
        return f"{'an integer' if isinstance(value, int) else 'a number'} {' and '.join(ends)}"

    def check(self, key: str, value: Any) -> None:
        """Raise a `SymscaleError` naming `key` when `value` (or an element of a tuple value) breaks the rule."""
        items, where = (value, f"{key}[]") if isinstance(value, tuple) else ((value,), key)
        for item in items:
            if item is not None and not self._holds(item):
                raise SymscaleError.invalid(where, item, self.describe(item))


def bounded(default: Any = MISSING, *, factory: Callable[[], Any] | None = None, **rule: Any) -> Any:
    """A dataclass field with its `Bound` beside it: `n_val: int = bounded(200, minimum=1)`."""
    metadata = {"bound": Bound(**rule)}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def validate(obj: Any, where: str = "") -> None:
    """Check every field of dataclass instance `obj` against the `Bound` beside it; errors name `where` + field."""
    for f in fields(obj):
        bound = f.metadata.get("bound")
        if bound is not None:
            bound.check(where + f.name, getattr(obj, f.name))


T = TypeVar("T")


def build(
    cls: type[T],
    where: str,
    raw: Any,
    *,
    unknown: Callable[[str], SymscaleError] | None = None,
    check: bool = True,
    **given: Any,
) -> T:
    """The one way a mapping becomes a validated dataclass, for run configs and study specs alike.

    Every key of `raw` must be a field of `cls` (otherwise `unknown(key)`, or an error listing the fields);
    each value is coerced by its field's type (`coerce`), the dataclass is built and each field is checked by
    its `Bound` (`validate`). `given` holds fields the caller parsed itself (nested sections, resolved paths):
    they are passed on as they are, and still checked by their bounds. `check=False` leaves the bounds to
    the caller (RunConfig checks its sections with the whole config, so a section is checked once).
    """
    if not isinstance(raw, Mapping):
        raise SymscaleError.invalid(where, raw, "a mapping")
    hints = {f.name: str(f.type) for f in fields(cls)}  # type: ignore[arg-type]
    kwargs = dict(given)
    for key, value in raw.items():
        if key not in hints:
            if unknown is not None:
                raise unknown(key)
            raise SymscaleError(f"unknown key {key!r} in {where}; allowed: {', '.join(sorted(hints))}")
        if key not in given:
            kwargs[key] = coerce(f"{where}.{key}", value, hints[key])
    obj = cls(**kwargs)
    if check:
        validate(obj, f"{where}.")
    return obj


@dataclass(frozen=True)
class DataConfig:
    source: str | tuple[str, ...] = "builtin"  # "builtin", or a path (file or folder) or several paths
    val_source: str | tuple[str, ...] | None = None  # separate validation data (a path or paths; None: carve n_val)
    builtin_structures: int = bounded(2000, minimum=2)  # size of the built-in GFN2-xTB set when source == "builtin"
    builtin_seed: int = 0  # generation seed of the built-in set
    neutral_only: bool = False  # keep only charge 0, spin multiplicity 1 structures
    # structures in the nested training prefix (None: prefix or all)
    n_train: int | None = bounded(None, minimum=1)
    # alternative to n_train: fraction in (0, 1] of the training pool
    prefix: float | None = bounded(None, above=0, maximum=1, expected=FRACTION)
    # structures in the fixed validation set (with val_source: sampled from it, all if fewer)
    n_val: int = bounded(200, minimum=1)
    split_seed: int = 0  # seed of the permutation that defines the validation set and the prefixes
    # Angstrom, radius of the neighbour graph
    cutoff: float = bounded(6.0, minimum=1e-6, expected="a positive distance (Angstrom)")
    max_neighbors: int = bounded(30, minimum=1)  # incoming edges kept per atom
    pack_max_structures: int = 500_000  # pack prefix + validation into RAM when they are at most this many
    stats_max_samples: int = 5000  # structures sampled for the dataset statistics
    prefetch: int = bounded(0, minimum=0)  # batches collated ahead in a background thread (0: none)
    energy_key: str = "energy"  # label key of the energy in the files (MACE-style files: "REF_energy")
    forces_key: str = "forces"  # label key of the forces in the files (MACE-style files: "REF_forces")


@dataclass(frozen=True)
class TrainingConfig:
    batch_size: int = bounded(64, minimum=1)  # structures per step
    epochs: int = bounded(1, minimum=1)  # passes over the training prefix (the study: 1)
    # schedule-free AdamW learning rate at the family's base width (muP scales it)
    lr: float = bounded(1e-3, minimum=1e-12, expected="a positive learning rate")
    betas: tuple[float, float] = bounded((0.9, 0.999), minimum=0, below=1, expected="two numbers in [0, 1)")
    warmup_steps: int = bounded(100, minimum=0)  # linear warmup, capped at 10% of the run's steps
    # decoupled, per step lr * weight_decay (muP keeps the product width-independent)
    weight_decay: float = bounded(0.0, minimum=0)
    # maximum global gradient norm (None or 0: no clipping)
    grad_clip: float | None = bounded(10.0, minimum=0, expected="a number >= 0 (0 or None: off)")
    energy_weight: float = bounded(1.0, minimum=0)  # weight of the per-atom energy term of the loss
    force_weight: float = bounded(1.0, minimum=0)  # weight of the force term of the loss
    # "none" | "so3" (random rotation per structure per step) | "o3" (and inversions)
    augment: str = bounded("none", choices=AUGMENT_MODES)
    # M: rotated copies per input for the symmetry loss (0: off; study: 5)
    symmetry_loss_rotations: int = bounded(0, minimum=0)
    symmetry_loss_weight: float = bounded(1.0, minimum=0)  # lambda: weight of the mean loss over the M rotated copies


@dataclass(frozen=True)
class EvaluationConfig:
    eval_points: int = bounded(24, minimum=1)  # log-spaced evaluations from eval_first_fraction to 1 (plus the end)
    # fraction of the run at the first evaluation
    eval_first_fraction: float = bounded(0.01, above=0, maximum=1, expected=FRACTION)
    eval_batch_size: int = bounded(64, minimum=1)  # structures per validation batch
    equivariance_structures: int = bounded(32, minimum=0)  # validation structures used for the equivariance error
    equivariance_rotations: int = bounded(2, minimum=1)  # random rotations per structure for the equivariance error
    # write checkpoints/last.pt at every k-th evaluation (0: only at the end)
    checkpoint_every: int = bounded(1, minimum=0)
    # a run has diverged (status failed, kept out of the fits) when its validation loss exceeds
    # divergence_factor x its first evaluation's, or rises at divergence_patience evaluations in a row (0: off)
    divergence_factor: float = bounded(1e3, minimum=1)
    divergence_patience: int = bounded(6, minimum=0, expected="an integer >= 0 (0: off)")


@dataclass(frozen=True)
class RuntimeConfig:
    device: str = bounded("cpu", choices=DEVICES)  # "cpu" | "cuda" | "auto" (cuda when available)
    dtype: str = bounded("float32", choices=DTYPES)  # "float32" | "float64"
    threads: int | None = bounded(None, minimum=1)  # torch CPU threads (None: torch's default)
    # processes that read and collate batches ahead (0: in the training process)
    loader_workers: int = bounded(0, minimum=0)
    tf32: bool = False  # allow TF32 matmuls on CUDA
    # "fp32" | "bf16": bf16 autocast of the forward (and so of its backward) on CPU or CUDA; weights, optimiser
    # state, losses, sums over atoms and neighbours and evaluations stay float32 (`symscale.train.precision`)
    precision: str = bounded("fp32", choices=PRECISIONS)
    # "off" | "on": torch.compile (inductor, dynamic shapes) of the model's forward, eager if compilation fails
    compile: str = bounded("off", choices=COMPILE_MODES)
    compute_accounting: bool = True  # measure FLOPs (C) per batch; off only for benchmarks
    # batches measured with FlopCounterMode to fit FLOPs per atom and per edge
    flop_samples: int = bounded(1, minimum=1)
    # "auto" (bar on a terminal), "bar", "log" (train.log only), "off"
    progress: str = bounded("auto", choices=PROGRESS_MODES)
    log_every_s: float = 30.0  # seconds between progress lines in train.log
    tensorboard: bool = False  # also log metrics to TensorBoard (when installed)
    wandb: bool = False  # also log metrics to Weights & Biases (when installed)


SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "training": TrainingConfig,
    "evaluation": EvaluationConfig,
    "runtime": RuntimeConfig,
}
_TOP_LEVEL = ("arch", "width", "seed", "forces", "model_overrides")


def _leaf_sections() -> dict[str, str]:
    out = {}
    for section, cls in SECTIONS.items():
        for f in fields(cls):
            assert f.name not in out and f.name not in _TOP_LEVEL, f"config leaf {f.name} is not unique"
            out[f.name] = section
    return out


_LEAF_SECTION = _leaf_sections()
# deprecated leaf names, still read (configs, plans and run directories written before 0.x): old -> new
ALIASES = {"train_fraction": "prefix", "autocast_bf16": "precision"}
# how an old name's value reads under the new name (where the type changed): old name -> function of the value
_ALIAS_VALUES: dict[str, Callable[[str, Any], Any]] = {
    "autocast_bf16": lambda key, value: "bf16" if check_bool(key, value) else "fp32",
}
# the names the run id hashes: the old name where a leaf was renamed, so that every run id stays the same, and
# the old form of its value where that changed too (None: the same value)
_HASHED_NAMES: dict[str, tuple[str, Callable[[Any], Any] | None]] = {
    "data.prefix": ("train_fraction", None),
    "runtime.precision": ("autocast_bf16", lambda precision: precision == "bf16"),
}


def allowed_keys() -> list[str]:
    """Every key RunConfig accepts, dotted (`training.lr`)."""
    keys = list(_TOP_LEVEL)
    for section, cls in SECTIONS.items():
        keys += [f"{section}.{f.name}" for f in fields(cls)]
    return keys


def _unknown(key: str) -> SymscaleError:
    return SymscaleError(f"unknown config key {key!r}; allowed keys: {', '.join(allowed_keys())}")


# ---------------------------------------------------------------- value coercion


def _number(key: str, value: Any, kind: type) -> int | float:
    """The one number rule of run configs and study specs: a YAML/JSON number; for floats also a string in
    exponent form, which YAML 1.1 reads as a string (`1e-3`). Strings are never integers ("5" is refused)
    and booleans are never numbers."""
    if isinstance(value, str) and kind is float:
        try:
            value = float(value)
        except ValueError:
            raise SymscaleError.invalid(key, value, "a number (float)") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SymscaleError.invalid(key, value, f"a number ({kind.__name__})")
    if not math.isfinite(value):
        raise SymscaleError.invalid(key, value, f"a finite number ({kind.__name__})")
    if kind is int:
        if float(value) != int(value):
            raise SymscaleError.invalid(key, value, "an integer")
        return int(value)
    return float(value)


def check_bool(key: str, value: Any) -> bool:
    """A YAML boolean: true or false. Strings ("false", "yes") are refused: YAML quotes make them text,
    and reading a non-empty string as True once filtered a study's data silently."""
    if isinstance(value, bool):
        return value
    raise SymscaleError.invalid(key, value, "true or false (unquoted)")


_bool = check_bool


def coerce(key: str, value: Any, hint: str) -> Any:
    """`value` read as a field of type `hint` (the field's annotation as text), by the one rule of
    `_number` and `check_bool`; `X | None` also takes None, "none" and "null"."""
    optional = hint.endswith("| None")
    if optional and (value is None or (isinstance(value, str) and value.lower() in ("none", "null"))):
        return None
    base = hint.removesuffix(" | None")
    if base == "int":
        return _number(key, value, int)
    if base == "float":
        return _number(key, value, float)
    if base == "bool":
        return _bool(key, value)
    if base == "str":
        if not isinstance(value, str):
            raise SymscaleError.invalid(key, value, "a string")
        return value
    if base in ("tuple[int, ...]", "tuple[float, ...]", "tuple[str, ...]"):
        if not isinstance(value, list | tuple) or not value:
            raise SymscaleError.invalid(key, value, "a non-empty list")
        item = base.removeprefix("tuple[").removesuffix(", ...]")
        return tuple(coerce(f"{key}[]", v, item) for v in value)
    if base == "str | tuple[str, ...]":
        if isinstance(value, str | os.PathLike):
            return str(value)
        if isinstance(value, list | tuple) and value and all(isinstance(v, str | os.PathLike) for v in value):
            return str(value[0]) if len(value) == 1 else tuple(str(v) for v in value)
        raise SymscaleError.invalid(key, value, '"builtin", a path or a list of paths')
    if base == "tuple[float, float]":
        if not isinstance(value, list | tuple) or len(value) != 2:
            raise SymscaleError.invalid(key, value, "two numbers")
        return tuple(_number(key, v, float) for v in value)
    if base == "Mapping[str, Any]":
        if value is None:
            return MappingProxyType({})
        if not isinstance(value, Mapping):
            raise SymscaleError.invalid(key, value, "a mapping of family options")
        return MappingProxyType(dict(value))
    raise AssertionError(f"no coercion for {hint}")


# ---------------------------------------------------------------- rules across fields


def _check_rules(cfg: RunConfig) -> None:
    """What no single field's bound can say: the rules that join two fields."""
    if cfg.data.n_train is not None and cfg.data.prefix is not None:
        raise SymscaleError("invalid data: give n_train or prefix, not both")
    if cfg.training.energy_weight + cfg.training.force_weight <= 0:
        raise SymscaleError("invalid loss weights: energy_weight and force_weight are both 0")
    if cfg.runtime.precision == "bf16" and cfg.runtime.dtype != "float32":
        raise SymscaleError(
            f"invalid runtime: precision bf16 with dtype {cfg.runtime.dtype}; expected dtype float32 "
            "(bf16 autocast runs on float32 weights) or precision fp32"
        )


# ---------------------------------------------------------------- RunConfig


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def _nest(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Flat leaf keys and dotted keys moved into their sections; `data: PATH` read as `data.source`;
    deprecated leaf names (`ALIASES`) read under their new names."""
    out: dict[str, Any] = {s: {} for s in SECTIONS}
    for key, value in raw.items():
        if isinstance(value, Mapping) and key in SECTIONS:
            _one_name_each(value, key)
        if "." in key:
            section, leaf = key.split(".", 1)
            if section not in SECTIONS:
                raise _unknown(key)
            _put(out[section], section, leaf, value)
        elif key in SECTIONS:
            if key == "data" and not isinstance(value, Mapping):
                value = {"source": value}
            if not isinstance(value, Mapping):
                raise SymscaleError.invalid(key, value, f"a mapping of {key} settings")
            for leaf, item in value.items():
                _put(out[key], key, leaf, item)
        elif key in _TOP_LEVEL:
            out[key] = value
        elif ALIASES.get(key, key) in _LEAF_SECTION:
            section = _LEAF_SECTION[ALIASES.get(key, key)]
            _put(out[section], section, key, value)
        else:
            raise _unknown(key)
    return out


def _put(section: dict[str, Any], name: str, leaf: str, value: Any) -> None:
    """`section[leaf] = value`, a deprecated leaf under its new name (both names at once is an error)."""
    new = ALIASES.get(leaf, leaf) if isinstance(leaf, str) else leaf
    if new != leaf and new in section:
        raise SymscaleError(f"invalid {name}: give {new} (or its old name {leaf}), not both")
    if leaf in _ALIAS_VALUES:
        value = _ALIAS_VALUES[leaf](f"{name}.{leaf}", value)
    section[new] = value


def _one_name_each(mapping: Mapping[str, Any], name: str) -> None:
    """A mapping may not hold a deprecated leaf name beside its new one."""
    for old, new in ALIASES.items():
        if old in mapping and new in mapping:
            raise SymscaleError(f"invalid {name}: give {new} (or its old name {old}), not both")


@dataclass(frozen=True)
class RunConfig:
    """One run: a family at a width on a training prefix, with a seed (see the module docstring)."""

    arch: str = bounded(nonempty=True, expected="a family name (see `symscale models`)")
    width: int = bounded(minimum=1)  # the one check of a width on its way from a spec or the CLI to the model
    seed: int = 0  # model initialisation, data order within the prefix, augmentation rotations
    forces: str = bounded("direct", choices=FORCE_MODES)  # "direct" (force head, the study) | "conservative" (-dE/dx)
    model_overrides: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))  # e.g. num_layers
    data: DataConfig = field(default_factory=DataConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def __post_init__(self) -> None:
        validate(self)
        for section in SECTIONS:
            validate(getattr(self, section), f"{section}.")
        _check_rules(self)

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (to a worker process, submitit, Ray) as its fields, the overrides as a plain dict."""
        return {**self.__dict__, "model_overrides": dict(self.model_overrides)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Unpickled as validated: the fields are set back as they were, without a second validation."""
        for key, value in state.items():
            object.__setattr__(self, key, MappingProxyType(value) if key == "model_overrides" else value)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> RunConfig:
        """Validate a (nested, dotted or flat) mapping; unknown keys are a `SymscaleError`."""
        if not isinstance(raw, Mapping):
            raise SymscaleError.invalid("run configuration", type(raw).__name__, "a mapping")
        nested = _nest(raw)
        for key in ("arch", "width"):
            if key not in nested:
                raise SymscaleError(f"missing config key {key!r} (required: arch, width)")
        kwargs = {
            "arch": coerce("arch", nested["arch"], "str"),
            "width": coerce("width", nested["width"], "int"),
            "seed": coerce("seed", nested.get("seed", 0), "int"),
            "forces": coerce("forces", nested.get("forces", "direct"), "str"),
            "model_overrides": coerce("model_overrides", nested.get("model_overrides"), "Mapping[str, Any]"),
        }
        for section in SECTIONS:
            # the sections are checked by their bounds once, with the whole config (__post_init__)
            unknown = lambda key, section=section: _unknown(f"{section}.{key}")  # noqa: E731
            kwargs[section] = build(SECTIONS[section], section, nested[section], unknown=unknown, check=False)
        return cls(**kwargs)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> RunConfig:
        """Read a YAML file (yaml.safe_load) holding a run configuration mapping."""
        return cls.from_dict(read_yaml_mapping(path))

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (lists, no tuples): `RunConfig.from_dict(c.to_dict()) == c`."""
        out: dict[str, Any] = {k: _plain(getattr(self, k)) for k in _TOP_LEVEL}
        for section in SECTIONS:
            out[section] = {k: _plain(v) for k, v in dataclasses.asdict(getattr(self, section)).items()}
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def with_overrides(self, assignments: Iterable[str]) -> RunConfig:
        """A new config with `key=value` assignments applied (values parsed as YAML: `lr=3e-4`,
        `model_overrides={num_layers: 4}`, `source=[a.xyz, b.xyz]`); keys flat or dotted."""
        updates: dict[str, Any] = {}
        for text in assignments:
            key, sep, value = text.partition("=")
            if not sep or not key.strip():
                raise SymscaleError.invalid("--set", text, "key=value (e.g. training.lr=1e-3)")
            updates[key.strip()] = parse_value(value.strip())
        return self.updated(updates)

    def updated(self, updates: Mapping[str, Any]) -> RunConfig:
        """A new config with a (flat, dotted or nested) mapping of changes applied."""
        merged = self.to_dict()
        for section, values in _nest(updates).items():
            if section in SECTIONS:
                merged[section].update(values)
            else:
                merged[section] = values
        return RunConfig.from_dict(merged)

    def identity(self) -> dict[str, Any]:
        """The dict that decides a run's results: `to_dict()` without RESUMABLE_KEYS."""
        out = self.to_dict()
        for key in RESUMABLE_KEYS:
            section, leaf = key.split(".")
            out[section].pop(leaf, None)
        for key in IDENTITY_OMITTED_WHEN_NONE:
            section, leaf = key.split(".")
            if out[section].get(leaf, 0) is None:
                del out[section][leaf]
        for key, default in HASHED_WHEN_SET.items():
            section, leaf = key.split(".")
            if out[section].get(leaf) == default:
                out[section].pop(leaf)
        for key, (old, old_value) in _HASHED_NAMES.items():
            section, leaf = key.split(".")
            value = out[section].pop(leaf)
            out[section][old] = value if old_value is None else old_value(value)
        revision = MODEL_REVISIONS.get(self.arch, 1)
        if revision > 1:
            out["model_revision"] = revision
        return out

    def config_hash(self) -> str:
        """Stable 16-hex-digit SHA-256 of the canonical JSON of `identity()`."""
        canonical = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def differences(self, other: RunConfig) -> list[str]:
        """Dotted keys whose values differ in `identity()` (for resume conflicts)."""
        a, b = _flatten(self.identity()), _flatten(other.identity())
        return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, Mapping) and k in SECTIONS and not prefix:
            out.update(_flatten(v, f"{k}."))
        else:
            out[prefix + k] = v
    return out


def parse_value(text: str) -> Any:
    """A --set value: int, then float (`1e-3` too, which YAML 1.1 reads as a string), then YAML."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    try:
        value = yaml.safe_load(text) if text else ""
    except yaml.YAMLError as err:
        raise SymscaleError.invalid("--set value", text, f"a YAML value ({err.problem})") from None
    if isinstance(value, bool) and text.lower() not in ("true", "false"):
        return text  # YAML 1.1 reads on/off/yes/no as booleans; keep the word (bool keys refuse it)
    return value


def read_yaml_mapping(path: str | os.PathLike) -> dict[str, Any]:
    """A YAML file's top-level mapping; a missing file or a non-mapping is a `SymscaleError`."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise SymscaleError(f"config file not found: {path}") from None
    except yaml.YAMLError as err:
        raise SymscaleError(f"cannot parse {path}: {err}") from None
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise SymscaleError.invalid(f"config file {path}", type(raw).__name__, "a mapping of config keys")
    return dict(raw)
