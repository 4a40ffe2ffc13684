"""The built-in GFN2-xTB dataset, generated on first use and cached.

Cache folder: `cache_dir`, else `$SYMSCALE_CACHE`, else `~/.cache/symscale`. The file is named by recipe,
size and seed (`symscale-gfn2-v1-n3000-s0.aselmdb`); it is generated under a temporary name (resumable if
interrupted) and renamed when complete, under a file lock so that parallel callers generate it once.
"""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path

from symscale.data.generate import RECIPE, generate_dataset
from symscale.errors import SymscaleError

log = logging.getLogger(__name__)


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache folder: `cache_dir`, `$SYMSCALE_CACHE` or `~/.cache/symscale`."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("SYMSCALE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "symscale"


def builtin_path(n_structures: int, seed: int = 0, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the built-in dataset of this size and seed lives (whether or not it exists yet)."""
    return cache_root(cache_dir) / f"{RECIPE}-n{int(n_structures)}-s{int(seed)}.aselmdb"


def builtin_dataset(
    n_structures: int,
    *,
    seed: int = 0,
    workers: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> Path:
    """Path of the built-in dataset of `n_structures` GFN2-xTB-labelled structures, generating it if needed.

    `workers`: generation processes (default: one per core).
    """
    if n_structures < 1:
        raise SymscaleError.invalid("number of structures", n_structures, "an integer >= 1")
    path = builtin_path(n_structures, seed, cache_dir)
    if path.exists():
        return path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SymscaleError(f"cannot create the cache folder {path.parent}: {err.strerror}") from None
    with open(path.with_name(f".{path.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be generating the same file
        if not path.exists():
            _generate(path, n_structures, seed, workers, progress)
    return path


def _generate(path: Path, n_structures: int, seed: int, workers: int | None, progress: bool) -> None:
    tmp = path.with_name(f".{path.stem}.partial.aselmdb")
    workers = workers if workers is not None else max(1, len(os.sched_getaffinity(0)))
    log.warning("generating the built-in dataset (%d structures, seed %d) into %s", n_structures, seed, path)
    report = generate_dataset(tmp, n_structures, workers=workers, seed=seed, progress=progress)
    log.info("generated %d structures in %.1f s (%.1f/s)", report.n_new, report.seconds, report.structures_per_s)
    os.replace(tmp, path)
    Path(f"{tmp}-lock").unlink(missing_ok=True)
