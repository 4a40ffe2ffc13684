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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from symscale.errors import SymscaleError

AUGMENT_MODES = ("none", "so3", "o3")
DEVICES = ("cpu", "cuda", "auto")
DTYPES = ("float32", "float64")
FORCE_MODES = ("direct", "conservative")
PROGRESS_MODES = ("auto", "bar", "log", "off")
# keys that may change between a run and its resumption without changing its results (not hashed)
RESUMABLE_KEYS = (
    "runtime.threads",
    "runtime.progress",
    "runtime.tensorboard",
    "runtime.wandb",
    "runtime.device",
    "runtime.loader_workers",
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


@dataclass(frozen=True)
class DataConfig:
    source: str | tuple[str, ...] = "builtin"  # "builtin", or a path (file or folder) or several paths
    val_source: str | tuple[str, ...] | None = None  # separate validation data (a path or paths; None: carve n_val)
    builtin_structures: int = 2000  # size of the built-in GFN2-xTB set when source == "builtin"
    builtin_seed: int = 0  # generation seed of the built-in set
    neutral_only: bool = False  # keep only charge 0, spin multiplicity 1 structures
    n_train: int | None = None  # structures in the nested training prefix (None: train_fraction or all)
    train_fraction: float | None = None  # alternative to n_train: fraction in (0, 1] of the training pool
    n_val: int = 200  # structures in the fixed validation set (with val_source: sampled from it, all if fewer)
    split_seed: int = 0  # seed of the permutation that defines the validation set and the prefixes
    cutoff: float = 6.0  # Angstrom, radius of the neighbour graph
    max_neighbors: int = 30  # incoming edges kept per atom
    pack_max_structures: int = 500_000  # pack prefix + validation into RAM when they are at most this many
    stats_max_samples: int = 5000  # structures sampled for the dataset statistics
    prefetch: int = 0  # batches collated ahead in a background thread (0: none)
    energy_key: str = "energy"  # label key of the energy in the files (MACE-style files: "REF_energy")
    forces_key: str = "forces"  # label key of the forces in the files (MACE-style files: "REF_forces")


@dataclass(frozen=True)
class TrainingConfig:
    batch_size: int = 64  # structures per step
    epochs: int = 1  # passes over the training prefix (the study: 1)
    lr: float = 1e-3  # schedule-free AdamW learning rate at the family's base width (muP scales it)
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 100  # linear warmup, capped at 10% of the run's steps
    weight_decay: float = 0.0  # decoupled, per step lr * weight_decay (muP keeps the product width-independent)
    grad_clip: float | None = 10.0  # maximum global gradient norm (None or 0: no clipping)
    energy_weight: float = 1.0  # weight of the per-atom energy term of the loss
    force_weight: float = 1.0  # weight of the force term of the loss
    augment: str = "none"  # "none" | "so3" (random rotation per structure per step) | "o3" (and inversions)
    symmetry_loss_rotations: int = 0  # M: rotated copies per input for the symmetry loss (0: off; study: 5)
    symmetry_loss_weight: float = 1.0  # lambda: weight of the mean loss over the M rotated copies


@dataclass(frozen=True)
class EvaluationConfig:
    eval_points: int = 24  # log-spaced evaluations from eval_first_fraction to 1 (plus the end)
    eval_first_fraction: float = 0.01  # fraction of the run at the first evaluation
    eval_batch_size: int = 64  # structures per validation batch
    equivariance_structures: int = 32  # validation structures used for the equivariance error
    equivariance_rotations: int = 2  # random rotations per structure for the equivariance error
    checkpoint_every: int = 1  # write checkpoints/last.pt at every k-th evaluation (0: only at the end)
    # a run has diverged (status failed, kept out of the fits) when its validation loss exceeds
    # divergence_factor x its first evaluation's, or rises at divergence_patience evaluations in a row (0: off)
    divergence_factor: float = 1e3
    divergence_patience: int = 6


@dataclass(frozen=True)
class RuntimeConfig:
    device: str = "cpu"  # "cpu" | "cuda" | "auto" (cuda when available)
    dtype: str = "float32"  # "float32" | "float64"
    threads: int | None = None  # torch CPU threads (None: torch's default)
    loader_workers: int = 0  # processes that read and collate batches ahead (0: in the training process)
    tf32: bool = False  # allow TF32 matmuls on CUDA
    autocast_bf16: bool = False  # bf16 autocast of forward and backward on CUDA
    compute_accounting: bool = True  # measure FLOPs (C) per batch; off only for benchmarks
    flop_samples: int = 1  # batches measured with FlopCounterMode to fit FLOPs per atom and per edge
    progress: str = "auto"  # "auto" (bar on a terminal), "bar", "log" (train.log only), "off"
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


def check_int(key: str, value: Any, minimum: int | None = None) -> int:
    """An integer (strict, see `_number`), at least `minimum`; SymscaleError naming `key` otherwise."""
    out = _number(key, value, int)
    if minimum is not None and out < minimum:
        raise SymscaleError.invalid(key, value, f"an integer >= {minimum}")
    return out


def check_float(key: str, value: Any, *, positive: bool = False) -> float:
    """A finite number (strict, see `_number`), > 0 when `positive`."""
    out = _number(key, value, float)
    if positive and not out > 0:
        raise SymscaleError.invalid(key, value, "a number > 0")
    return out


def check_bool(key: str, value: Any) -> bool:
    """A YAML boolean: true or false. Strings ("false", "yes") are refused: YAML quotes make them text,
    and reading a non-empty string as True once filtered a study's data silently."""
    if isinstance(value, bool):
        return value
    raise SymscaleError.invalid(key, value, "true or false (unquoted)")


_bool = check_bool


def _coerce(key: str, value: Any, hint: str) -> Any:
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


def _build_section(section: str, raw: Mapping[str, Any]) -> Any:
    cls = SECTIONS[section]
    hints = {f.name: f.type for f in fields(cls)}
    kwargs = {}
    for key, value in raw.items():
        if key not in hints:
            raise _unknown(f"{section}.{key}")
        kwargs[key] = _coerce(f"{section}.{key}", value, hints[key])
    return cls(**kwargs)


# ---------------------------------------------------------------- checks


def _check_range(key: str, value: float | None, lo: float, hi: float = math.inf, expected: str = "") -> None:
    if value is not None and not lo <= value <= hi:
        raise SymscaleError.invalid(key, value, expected or f"a value in [{lo}, {hi}]")


def _check_choice(key: str, value: str, choices: Iterable[str]) -> None:
    if value not in choices:
        raise SymscaleError.invalid(key, value, f"one of {', '.join(choices)}")


def _validate(cfg: RunConfig) -> None:
    if not cfg.arch:
        raise SymscaleError.invalid("arch", cfg.arch, "a family name (see `symscale models`)")
    _check_range("width", cfg.width, 1, expected="an integer >= 1")
    _check_choice("forces", cfg.forces, FORCE_MODES)
    d, t, e, r = cfg.data, cfg.training, cfg.evaluation, cfg.runtime
    if d.n_train is not None and d.train_fraction is not None:
        raise SymscaleError("invalid data: give n_train or train_fraction, not both")
    _check_range("data.n_train", d.n_train, 1, expected="an integer >= 1")
    if d.train_fraction is not None and not 0 < d.train_fraction <= 1:
        raise SymscaleError.invalid("data.train_fraction", d.train_fraction, "a fraction in (0, 1]")
    _check_range("data.n_val", d.n_val, 1, expected="an integer >= 1")
    _check_range("data.builtin_structures", d.builtin_structures, 2, expected="an integer >= 2")
    _check_range("data.cutoff", d.cutoff, 1e-6, expected="a positive distance (Angstrom)")
    _check_range("data.max_neighbors", d.max_neighbors, 1, expected="an integer >= 1")
    _check_range("data.prefetch", d.prefetch, 0, expected="an integer >= 0")
    _check_range("training.batch_size", t.batch_size, 1, expected="an integer >= 1")
    _check_range("training.epochs", t.epochs, 1, expected="an integer >= 1")
    _check_range("training.lr", t.lr, 1e-12, expected="a positive learning rate")
    _check_range("training.warmup_steps", t.warmup_steps, 0, expected="an integer >= 0")
    _check_range("training.weight_decay", t.weight_decay, 0, expected="a number >= 0")
    _check_range("training.grad_clip", t.grad_clip, 0, expected="a number >= 0 (0 or None: off)")
    _check_range("training.energy_weight", t.energy_weight, 0, expected="a number >= 0")
    _check_range("training.force_weight", t.force_weight, 0, expected="a number >= 0")
    if t.energy_weight + t.force_weight <= 0:
        raise SymscaleError("invalid loss weights: energy_weight and force_weight are both 0")
    for b in t.betas:
        _check_range("training.betas", b, 0, 1 - 1e-12, "two numbers in [0, 1)")
    _check_choice("training.augment", t.augment, AUGMENT_MODES)
    _check_range("training.symmetry_loss_rotations", t.symmetry_loss_rotations, 0, expected="an integer >= 0")
    _check_range("training.symmetry_loss_weight", t.symmetry_loss_weight, 0, expected="a number >= 0")
    _check_range("evaluation.eval_points", e.eval_points, 1, expected="an integer >= 1")
    if not 0 < e.eval_first_fraction <= 1:
        raise SymscaleError.invalid("evaluation.eval_first_fraction", e.eval_first_fraction, "a fraction in (0, 1]")
    _check_range("evaluation.eval_batch_size", e.eval_batch_size, 1, expected="an integer >= 1")
    _check_range("evaluation.equivariance_structures", e.equivariance_structures, 0, expected="an integer >= 0")
    _check_range("evaluation.equivariance_rotations", e.equivariance_rotations, 1, expected="an integer >= 1")
    _check_range("evaluation.checkpoint_every", e.checkpoint_every, 0, expected="an integer >= 0")
    _check_range("evaluation.divergence_factor", e.divergence_factor, 1, expected="a number >= 1")
    _check_range("evaluation.divergence_patience", e.divergence_patience, 0, expected="an integer >= 0 (0: off)")
    _check_choice("runtime.device", r.device, DEVICES)
    _check_choice("runtime.dtype", r.dtype, DTYPES)
    _check_range("runtime.threads", r.threads, 1, expected="an integer >= 1")
    _check_range("runtime.loader_workers", r.loader_workers, 0, expected="an integer >= 0")
    _check_range("runtime.flop_samples", r.flop_samples, 1, expected="an integer >= 1")
    _check_choice("runtime.progress", r.progress, PROGRESS_MODES)


# ---------------------------------------------------------------- RunConfig


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def _nest(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Flat leaf keys and dotted keys moved into their sections; `data: PATH` read as `data.source`."""
    out: dict[str, Any] = {s: {} for s in SECTIONS}
    for key, value in raw.items():
        if "." in key:
            section, leaf = key.split(".", 1)
            if section not in SECTIONS:
                raise _unknown(key)
            out[section][leaf] = value
        elif key in SECTIONS:
            if key == "data" and not isinstance(value, Mapping):
                value = {"source": value}
            if not isinstance(value, Mapping):
                raise SymscaleError.invalid(key, value, f"a mapping of {key} settings")
            out[key].update(value)
        elif key in _TOP_LEVEL:
            out[key] = value
        elif key in _LEAF_SECTION:
            out[_LEAF_SECTION[key]][key] = value
        else:
            raise _unknown(key)
    return out


@dataclass(frozen=True)
class RunConfig:
    """One run: a family at a width on a training prefix, with a seed (see the module docstring)."""

    arch: str
    width: int
    seed: int = 0  # model initialisation, data order within the prefix, augmentation rotations
    forces: str = "direct"  # "direct" (force head, the study) | "conservative" (-dE/dx)
    model_overrides: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))  # e.g. num_layers
    data: DataConfig = field(default_factory=DataConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def __post_init__(self) -> None:
        _validate(self)

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
            "arch": _coerce("arch", nested["arch"], "str"),
            "width": _coerce("width", nested["width"], "int"),
            "seed": _coerce("seed", nested.get("seed", 0), "int"),
            "forces": _coerce("forces", nested.get("forces", "direct"), "str"),
            "model_overrides": _coerce("model_overrides", nested.get("model_overrides"), "Mapping[str, Any]"),
        }
        for section in SECTIONS:
            kwargs[section] = _build_section(section, nested[section])
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
