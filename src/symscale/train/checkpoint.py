"""Checkpoints: data, not code. Written atomically, read with `torch.load(weights_only=True)`.

A checkpoint is a dict of tensors, numbers, strings, lists and dicts only:

    format_version   int (FORMAT_VERSION); a newer one is refused with a clear error
    config           RunConfig.to_dict()
    config_hash      RunConfig.config_hash()
    model            model config {"arch", "width", "elements", "cutoff", "max_neighbors", "forces", "overrides"}
    model_state      state dict of the model, holding schedule-free's averaged weights x
    optimizer_state  state dict of the optimizer (saved in eval mode: call optimizer.train() after loading)
    stats            DatasetStats.to_dict() of the training prefix
    position         {"step", "epoch", "batch_in_epoch", "total_steps", "finished"}
    counters         {"structures_seen", "atoms_seen", "flops", "flops_raw", "device_seconds"}
    rng              {"torch": CPU RNG state, "generator": the run's generator state, "cuda": [states]}
    flop_model       FlopModel.to_dict() (None when accounting is off)
    provenance       {"symscale_version", "git_sha", "torch_version", "device", "created_utc", "precision"}

`load_model(run_dir_or_file)` rebuilds the model from "model" + "stats" and loads its weights.
"""

from __future__ import annotations

import datetime
import functools
import os
import pickle
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import torch

from symscale import __version__
from symscale.errors import SymscaleError
from symscale.rundir import atomic_file

FORMAT_VERSION = 1
# torch.load on a file that is not a checkpoint: junk bytes are read as a legacy pickle (KeyError, IndexError,
# ValueError on its magic number or protocol), a torn zip raises RuntimeError or BadZipFile
_UNREADABLE = (
    pickle.UnpicklingError,
    RuntimeError,
    EOFError,
    OSError,
    zipfile.BadZipFile,
    KeyError,
    IndexError,
    ValueError,
    TypeError,
    AttributeError,
    UnicodeDecodeError,
)


@functools.cache
def git_sha() -> str | None:
    """The commit of the symscale source tree, if it is a git checkout (else None)."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def provenance(device: str | torch.device, precision: str | None = None) -> dict[str, Any]:
    """Versions, device and (for a run) its precision as `train.precision.describe` states it."""
    out = {
        "symscale_version": __version__,
        "git_sha": git_sha(),
        "torch_version": str(torch.__version__),
        "device": str(device),
        "created_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    if precision is not None:
        out["precision"] = precision
    return out


def save_checkpoint(path: str | os.PathLike, checkpoint: dict[str, Any]) -> Path:
    """Write `checkpoint` to `path` atomically (`symscale.rundir.atomic_file`: a unique temporary file in the
    same folder, fsync, rename; removed on any failure, so a full disk leaves the previous checkpoint)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path, "wb") as fh:
        torch.save({"format_version": FORMAT_VERSION, **checkpoint}, fh)
    return path


def resolve_checkpoint(path_or_run_dir: str | os.PathLike) -> Path:
    """A checkpoint file, or the best one of a run directory (final.pt, else last.pt)."""
    path = Path(path_or_run_dir)
    if path.is_dir():
        for name in ("final.pt", "last.pt"):
            if (path / "checkpoints" / name).is_file():
                return path / "checkpoints" / name
        raise SymscaleError(f"no checkpoint in run directory {path} (expected checkpoints/final.pt or last.pt)")
    if not path.is_file():
        raise SymscaleError(f"checkpoint not found: {path}")
    return path


def load_checkpoint(path_or_run_dir: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint dict (never runs code: weights_only=True); a newer format is a `SymscaleError`."""
    path = resolve_checkpoint(path_or_run_dir)
    if path.stat().st_size == 0:
        raise SymscaleError(f"cannot read checkpoint {path}: empty file (0 bytes), expected a symscale .pt file")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except _UNREADABLE as err:  # what torch.load raises on junk bytes, a torn zip or a truncated legacy pickle
        raise SymscaleError(
            f"cannot read checkpoint {path}: not a readable torch file ({_first_sentence(err)}); "
            "expected a symscale .pt file"
        ) from None
    if not isinstance(ckpt, dict) or "format_version" not in ckpt:
        raise SymscaleError(f"cannot read checkpoint {path}: not a symscale checkpoint (no format_version)")
    version = ckpt["format_version"]
    if version > FORMAT_VERSION:
        raise SymscaleError(
            f"checkpoint {path} has format version {version}, newer than this symscale {__version__} reads "
            f"({FORMAT_VERSION}); upgrade symscale"
        )
    return ckpt


def _first_sentence(err: BaseException) -> str:
    """An exception as a short clause for a one-line error: its type and the first sentence of its text."""
    text = (str(err).strip().splitlines() or [""])[0].split(". ")[0]
    return f"{type(err).__name__}: {text[:160]}" if text else type(err).__name__


def build_model_from(ckpt: dict[str, Any]):
    """The model described by a checkpoint's "model" and "stats" entries (weights not loaded)."""
    from symscale.models.registry import build

    spec = dict(ckpt["model"])
    stats = ckpt.get("stats") or {}
    energies = {int(k): float(v) for k, v in (stats.get("element_energies") or {}).items()}
    overrides = dict(spec.pop("overrides", {}) or {})
    spec.setdefault("revision", 1)  # absent: a checkpoint from before its family's revisions (MODEL_REVISIONS)
    return build(
        spec.pop("arch"),
        int(spec.pop("width")),
        **spec,
        element_energies=energies,
        force_scale=float(stats.get("force_rms", 1.0)),
        **overrides,
    )


def load_model(
    path_or_run_dir: str | os.PathLike, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
):
    """(model in eval mode with the checkpoint's averaged weights, checkpoint dict)."""
    ckpt = load_checkpoint(path_or_run_dir)
    missing = [k for k in ("model", "model_state") if not isinstance(ckpt.get(k), dict)]
    if missing:
        raise SymscaleError(f"cannot load a model from checkpoint {path_or_run_dir}: no {', '.join(missing)} entry")
    model = build_model_from(ckpt)
    try:
        model.load_state_dict(ckpt["model_state"])
    except RuntimeError as err:  # missing, unexpected or mis-shaped tensors
        raise SymscaleError(
            f"cannot load checkpoint {path_or_run_dir}: its weights do not fit its model ({_first_sentence(err)})"
        ) from None
    model = model.to(device=device) if dtype is None else model.to(device=device, dtype=dtype)
    return model.eval(), ckpt
