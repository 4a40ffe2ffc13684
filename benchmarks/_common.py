"""What the benchmark scripts share: the commit they measured and the quickstart's configuration of one run.
Nothing of symscale is imported at module level, so a script that times its own imports still can."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any


def git_sha() -> str | None:
    """The checkout's HEAD commit, or None outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False)
        return out.stdout.strip() or None
    except OSError:
        return None


def write_json(path: Path, payload: Any) -> None:
    """Write `payload` as indented JSON through a temporary file and a rename, so that a benchmark stopped while
    writing leaves the previous whole file, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(path)


def cpu_model() -> str | None:
    """The CPU's model name from /proc/cpuinfo (Linux), or None where there is none: `platform.processor()` is
    empty on Linux, and results from an Intel Xeon and an AMD EPYC of this kind differ by up to 2x."""
    try:
        with open("/proc/cpuinfo") as fh:
            return next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), None)
    except OSError:
        return None


def quickstart_config(arch: str, width: int) -> Any:
    """The RunConfig the quickstart gives `arch` at `width` (full prefix, seed 0, plain mode), on one thread and
    without a progress bar, as the benchmarks time it."""
    from symscale.study import spec as spec_mod

    spec = spec_mod.load_spec("quickstart")
    fam = next(f for f in spec.families if f.arch == arch)
    config = spec_mod.run_config(spec, fam, width, 1.0, 0, "architecture")
    d = config.to_dict()
    d["runtime"].update(threads=1, progress="off")
    return type(config).from_dict(d)
