"""The quantities of the study, computed in one place: kappa, C = 3 kappa N D and H (device-hours).

The words are DESIGN.md's: N parameters, D atoms seen, C training FLOPs (forward + backward, counted as three
forwards), H device-hours, kappa forward FLOPs per atom per parameter. The training loop
(`symscale.train.compute`), the run directory's reader (`symscale.rundir`), the catalogue, the study's
estimates and the report all use these functions. The module needs neither torch nor numpy, so that reading a
finished run's numbers loads neither.
"""

from __future__ import annotations

import math
from typing import Any


def kappa(forward_flops: float, n_atoms: float, num_parameters: float) -> float:
    """kappa: forward FLOPs per atom per parameter (the paper's constant in C = 3 kappa N D)."""
    return forward_flops / (max(n_atoms, 1) * num_parameters)


def finite(x: Any) -> float | None:
    """`x` as a finite float, or None (missing, not a number, NaN, infinite): how run files' numbers are read."""
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def implied_kappa(flops: Any, num_parameters: Any, atoms: Any) -> float | None:
    """kappa = C / (3 N D) implied by measured training FLOPs C (forward + backward = 3 forwards), from values
    as a run's files record them; None when any of them is missing, zero or not a number."""
    c, n, d = finite(flops), finite(num_parameters), finite(atoms)
    return kappa(c / 3.0, d, n) if c and n and d else None


def device_hours(device_seconds: Any) -> float | None:
    """H: device-seconds in hours (None when unknown)."""
    seconds = finite(device_seconds)
    return None if seconds is None else seconds / 3600.0


def estimated_flops(kappa_value: float, num_parameters: float, atoms: float) -> float:
    """C = 3 kappa N D: the paper's estimate of training FLOPs (forward + backward = 3 forwards) from kappa,
    N parameters and D atoms seen."""
    return 3.0 * kappa_value * num_parameters * atoms
