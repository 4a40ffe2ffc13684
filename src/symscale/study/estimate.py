"""Dry-run estimates of a study: N, D, FLOPs C = 3 kappa N D and time per run, before anything starts.

N is counted exactly by building each model (on the meta device when the family allows it, so the paper's
1e7-parameter models cost nothing). D = training structures x prefix x epochs x atoms per structure, read
from the dataset when it is there and from the spec's `dataset.size_hint` otherwise. kappa (forward FLOPs per
atom per parameter) comes from `symscale.train.compute` when it offers a measured value, else from the
paper's table. Time = C / flops_per_second (the spec's `estimate.flops_per_second`, else a per-device default).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from symscale.study.spec import RunPlan, StudySpec
from symscale.train.compute import estimated_flops

log = logging.getLogger(__name__)

# forward FLOPs per atom per parameter, from the reference study's table (PAPER.md)
PAPER_KAPPA = {"mpnn": 2.33, "egnn": 28.09, "gemnet_oc": 35.18, "esen": 74.36}
# sustained training throughput assumed when the spec gives none (FLOP/s per run); calibrated on the
# quickstart (CPU, one thread per run) and on the paper's scale (one GPU per run)
DEFAULT_FLOPS_PER_SECOND = {"cpu": 2.0e9, "cuda": 2.0e13}
BUILTIN_ELEMENTS = (1, 6, 7, 8, 9, 16, 17, 35)  # the built-in xTB set: H C N O F S Cl Br
BUILTIN_ATOMS_PER_STRUCTURE = 18.0


@dataclass(frozen=True)
class RunEstimate:
    run_id: str
    arch: str
    width: int
    mode: str
    prefix: float
    seed: int
    n_params: int  # N
    atoms: float  # D, atoms seen over the whole run
    kappa: float
    kappa_source: str  # "measured" | "paper"
    flops: float  # 3 kappa N D
    time_s: float


@dataclass(frozen=True)
class DataSize:
    n_structures: int
    atoms_per_structure: float
    elements: tuple[int, ...]
    source: str  # "dataset" | "size_hint" | "builtin"


KAPPA_MAX_PARAMS = 2e5  # kappa is measured once per family, at its largest width with N below this


def family_kappa(arch: str, width: int) -> tuple[float, str]:
    """kappa of a family at a width: measured by `symscale.train.compute.measured_kappa` when available
    (forward FLOPs counted on the toy reference batch), else the paper's value."""
    try:
        from symscale.train.compute import measured_kappa
    except ImportError:
        return PAPER_KAPPA.get(arch, 10.0), "paper"
    try:
        return float(measured_kappa(arch, width)), f"measured at width {width}"
    except (RuntimeError, ValueError, NotImplementedError) as err:
        log.warning("could not measure kappa of %s at width %d (%s); using the paper's", arch, width, err)
        return PAPER_KAPPA.get(arch, 10.0), "paper"


def _kappa_widths(plans: list[RunPlan], n_params: dict[tuple[str, int], int]) -> dict[str, int]:
    """Per family, the width at which kappa is measured: the largest with N <= KAPPA_MAX_PARAMS."""
    out: dict[str, int] = {}
    for arch in dict.fromkeys(p.arch for p in plans):
        widths = sorted({p.width for p in plans if p.arch == arch})
        small = [w for w in widths if n_params[(arch, w)] <= KAPPA_MAX_PARAMS]
        out[arch] = small[-1] if small else widths[0]
    return out


def count_parameters(arch: str, width: int, elements: tuple[int, ...], overrides: dict[str, Any]) -> int:
    """Exact N of a family at a width (built on the meta device when possible)."""
    import torch

    from symscale.models.registry import build

    try:
        with torch.device("meta"):
            model = build(arch, width, elements=list(elements), **overrides)
    except (RuntimeError, NotImplementedError, TypeError, ValueError):
        model = build(arch, width, elements=list(elements), **overrides)
    return int(model.num_parameters())


def data_size(spec: StudySpec, paths: list[str] | None = None) -> DataSize:
    """How many structures of how many atoms the study trains on."""
    ds = spec.dataset
    hint = ds.size_hint
    if ds.builtin is not None:
        return DataSize(
            ds.builtin,
            hint.get("atoms_per_structure", BUILTIN_ATOMS_PER_STRUCTURE),
            ds.elements or BUILTIN_ELEMENTS,
            "builtin",
        )
    if paths:
        try:
            return _measure(paths, ds)
        except Exception as err:  # an unreadable dataset falls back to the hint, and says so
            log.warning("could not size dataset %s (%s); using the spec's size_hint", paths, err)
    if "structures" not in hint:
        from symscale.errors import SymscaleError

        raise SymscaleError(
            f"cannot size dataset {ds.path} (missing or unreadable) and the spec has no dataset.size_hint for estimates"
        )
    return DataSize(
        int(hint["structures"]), hint.get("atoms_per_structure", 20.0), ds.elements or (1, 6, 7, 8), "size_hint"
    )


def _measure(paths: list[str], ds) -> DataSize:
    from symscale.data.readers import open_dataset

    data = open_dataset(paths, neutral_only=ds.neutral_only, energy_key=ds.energy_key, forces_key=ds.forces_key)
    n = len(data)
    step = max(1, n // 200)
    sample = [data[i] for i in range(0, n, step)][:200]
    atoms = sum(len(s.numbers) for s in sample) / max(1, len(sample))
    elements = ds.elements or tuple(sorted({int(z) for s in sample for z in s.numbers}))
    return DataSize(n, atoms, elements, "dataset")


def estimate_runs(
    spec: StudySpec, plans: list[RunPlan], paths: list[str] | None = None, *, measure_kappa: bool = True
) -> list[RunEstimate]:
    """One estimate per planned run (kappa measured once per family when `measure_kappa`)."""
    size = data_size(spec, paths)
    n_train = size.n_structures if spec.dataset.val_path else max(0, size.n_structures - spec.dataset.val)
    device = str(spec.training.get("device", "cpu")).split(":")[0]
    fps = spec.flops_per_second or DEFAULT_FLOPS_PER_SECOND.get(device, DEFAULT_FLOPS_PER_SECOND["cpu"])
    n_params: dict[tuple[str, int], int] = {}
    for p in plans:
        if (p.arch, p.width) not in n_params:
            overrides = dict(p.config.model_overrides)
            n_params[(p.arch, p.width)] = count_parameters(p.arch, p.width, size.elements, overrides)
    kappas = {}
    for arch, width in _kappa_widths(plans, n_params).items():
        kappas[arch] = family_kappa(arch, width) if measure_kappa else (PAPER_KAPPA.get(arch, 10.0), "paper")
    out = []
    for p in plans:
        n = n_params[(p.arch, p.width)]
        epochs = float(p.config.training.epochs)
        prefix = p.config.data.train_fraction or p.prefix
        atoms = n_train * float(prefix) * epochs * size.atoms_per_structure
        kappa, source = kappas[p.arch]
        flops = estimated_flops(kappa, n, atoms)
        out.append(
            RunEstimate(
                p.run_id, p.arch, p.width, p.mode, p.prefix, p.seed, n, atoms, kappa, source, flops, flops / fps
            )
        )
    return out
