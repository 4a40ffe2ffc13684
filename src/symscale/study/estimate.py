"""Dry-run estimates of a study: N, D, FLOPs C and time per run, before anything starts.

N is counted exactly by building each model (on the meta device when the family allows it, so the paper's
1e7-parameter models cost nothing). D = training structures x prefix x epochs x atoms per structure, read
from the dataset when it is there and from the spec's `dataset.size_hint` otherwise. Time = C /
flops_per_second (the spec's `estimate.flops_per_second`, else a per-device default).

Compute is measured, not assumed (issue 13 item 6): per group (family with its model options, and symmetry
mode) the forward and training-step FLOPs per atom are counted (`symscale.train.compute.measure_family`)
on a batch of the study's own data when it is there (the built-in set once generated, or the dataset's
files), else on a representative sample of toy molecules sized like the data, whose atoms and edges per
atom are printed. The FLOPs are counted on 16 of the 64 sampled structures, chosen at even quantiles of their
edges per atom so that the 16 have the 64's edges per atom (FLOPs per atom = a + b x edges per atom for a graph
model; measured on synthetic OMol25-schema molecules: kappa within 0.7% of the 64's for all four families, the
paper's 12-layer eSEN counted in 10 s instead of 78 s). kappa = forward FLOPs / (atoms x N), as in the
paper; C = r kappa N D with r the measured training/forward ratio (the paper's estimate takes r = 3), times
M + 1 for a symmetry-loss run (M rotated copies of every batch). Widths with N <= KAPPA_EACH_PARAMS are
measured each; the others take the kappa and r measured once per group, at its largest width with
N <= KAPPA_MAX_PARAMS. Without measurement (`measure_kappa=False`, the ETA) kappa is the paper's and r = 3.

Time: with `calibrate=True` (the dry run of `symscale study`, when the spec's device is on this machine) each
group's real training steps are timed at two widths on this machine and each run's wall time is predicted
from them, evaluations included (`symscale.study.calibration`); otherwise time = C / flops_per_second, which
is one rate for every family and wrong by several times between them (GemNet-OC's small kernels).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from symscale.quantities import estimated_flops
from symscale.study.spec import RunPlan, StudySpec

log = logging.getLogger(__name__)

# forward FLOPs per atom per parameter, from the reference study's table (PAPER.md)
PAPER_KAPPA = {"mpnn": 2.33, "egnn": 28.09, "gemnet_oc": 35.18, "esen": 74.36}
# sustained training throughput assumed when the spec gives none (FLOP/s per run); calibrated on the
# quickstart (CPU, one thread per run) and on the paper's scale (one GPU per run)
DEFAULT_FLOPS_PER_SECOND = {"cpu": 2.0e9, "cuda": 2.0e13}
BUILTIN_ELEMENTS = (1, 6, 7, 8, 9, 16, 17, 35)  # the built-in xTB set: H C N O F S Cl Br
BUILTIN_ATOMS_PER_STRUCTURE = 18.0
MEASURE_STRUCTURES = 64  # structures sampled from the data: the edges per atom that compute is measured at
MEASURE_FLOP_STRUCTURES = 16  # of those, the structures whose FLOPs are counted (see `representative`)


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
    kappa_source: str  # where kappa was measured ("paper" when it was not)
    flops: float  # r kappa N D (M + 1 for a symmetry-loss run)
    time_s: float
    group: str = ""  # the family with its model options and mode, e.g. "esen-lmax4/architecture"
    train_ratio: float = 3.0  # r: training-step FLOPs / forward FLOPs
    multiplier: float = 1.0  # M + 1 for a symmetry-loss run, else 1
    sample: str = ""  # the batch compute was measured on (structures, atoms and edges per atom)
    time_source: str = "flops_per_second"  # how time_s was predicted: flops_per_second | the widths timed


@dataclass(frozen=True)
class DataSize:
    n_structures: int
    atoms_per_structure: float
    elements: tuple[int, ...]
    source: str  # "dataset" | "size_hint" | "builtin"


KAPPA_MAX_PARAMS = 2e5  # a group's wider widths take kappa measured at its largest width with N below this
KAPPA_EACH_PARAMS = 3e4  # widths with N below this are measured each (cheap; kappa varies most there)


@dataclass(frozen=True)
class GroupCost:
    """Measured cost of one (group, width): kappa and the training/forward FLOP ratio r."""

    kappa: float
    train_ratio: float
    source: str
    sample: str = ""


def group_key(plan: RunPlan) -> tuple:
    """What one FLOP measurement is valid for: the family, its model options and the symmetry mode."""
    options = tuple(sorted((k, repr(v)) for k, v in plan.config.model_overrides.items()))
    return plan.arch, options, plan.mode


def group_label(plan: RunPlan) -> str:
    """The group as text: `esen-lmax4/architecture` (options in key order; none: the arch alone)."""
    opts = "".join(f"-{k}{v}" for k, v in sorted(plan.config.model_overrides.items()))
    return f"{plan.arch}{opts}/{plan.mode}"


def symmetry_multiplier(plan: RunPlan) -> float:
    """M + 1 for a run whose loss averages over M rotated copies of every batch, else 1."""
    t = plan.config.training
    return float(t.symmetry_loss_rotations + 1) if t.symmetry_loss_rotations > 0 else 1.0


def measurement_batch(spec: StudySpec, size: DataSize, paths: list[str] | None, plan: RunPlan) -> tuple[Any, str]:
    """The batch compute is measured on, and a description of it: the study's own data when it is there,
    else toy molecules with the data's atoms per structure (a representative sample)."""
    from symscale.data.graph import collate

    dataset, where = _study_data(spec, paths), "of the study's data"
    if dataset is not None:
        idx = np.linspace(0, len(dataset) - 1, min(MEASURE_STRUCTURES, len(dataset))).round().astype(int)
        structures = [dataset[int(i)] for i in dict.fromkeys(idx.tolist())]
    else:
        from symscale.data.toy import toy_structures

        a = max(3, round(size.atoms_per_structure))
        structures = toy_structures(MEASURE_STRUCTURES, seed=0, min_atoms=max(3, a - 6), max_atoms=a + 6)
        where = "of toy molecules (representative sample: the study's data is not here)"
    d = plan.config.data
    sample = collate(structures, d.cutoff, d.max_neighbors)
    batch = representative(sample, structures, d.cutoff, d.max_neighbors, MEASURE_FLOP_STRUCTURES)
    text = (
        f"{batch.num_structures} of {sample.num_structures} structures {where} (at the sample's "
        f"{sample.num_edges / sample.num_atoms:.1f} edges per atom: {batch.num_edges / batch.num_atoms:.1f}), "
        f"{sample.num_atoms / sample.num_structures:.1f} atoms per structure"
    )
    return batch, text


def representative(sample: Any, structures: list, cutoff: float, max_neighbors: int, k: int) -> Any:
    """`k` of the sample's structures at even quantiles of their edges per atom, collated: their edges per atom
    is the sample's to within a few percent, so FLOPs per atom counted on them (a + b x edges per atom for a
    graph model) are the sample's at a quarter of the counting time. The sample itself when it has <= k."""
    from symscale.data.graph import collate

    n = sample.num_structures
    if n <= k:
        return sample
    edges = np.bincount(sample.batch[sample.edge_index[1]].numpy(), minlength=n)
    order = np.argsort(edges / sample.n_atoms.numpy(), kind="stable")
    pick = sorted(order[((np.arange(k) + 0.5) * n / k).astype(int)].tolist())
    return collate([structures[i] for i in pick], cutoff, max_neighbors)


def _study_data(spec: StudySpec, paths: list[str] | None):
    ds = spec.dataset
    try:
        if ds.builtin is not None:
            from symscale.data.builtin import builtin_path
            from symscale.data.readers import open_dataset

            path = builtin_path(ds.builtin, ds.seed)
            return open_dataset(path) if path.exists() else None
        if paths:
            from symscale.data.readers import open_dataset

            return open_dataset(paths, neutral_only=ds.neutral_only)
    except Exception as err:  # unreadable data: measured on the representative sample, and said so
        log.warning("cannot read the study's data for FLOP measurement (%s); using toy molecules", err)
    return None


def measure_group(plan: RunPlan, batch: Any, where: str) -> GroupCost:
    """kappa and r of the plan's family, options and width on `batch`."""
    from symscale.train.compute import measure_family

    f = measure_family(plan.arch, plan.width, batch, **dict(plan.config.model_overrides))
    ratio = f.train_flops_per_atom / f.forward_flops_per_atom
    return GroupCost(f.kappa_corrected, ratio, f"measured at width {plan.width}", where)


def group_costs(
    spec: StudySpec, plans: list[RunPlan], size: DataSize, paths: list[str] | None, n_params: dict, measure: bool
) -> dict[tuple, GroupCost]:
    """GroupCost per (group key, width). Widths with N <= KAPPA_EACH_PARAMS are measured each (kappa moves
    with width at small N); the others take one measurement per group, at the largest width with
    N <= KAPPA_MAX_PARAMS (else the smallest)."""
    costs: dict[tuple, GroupCost] = {}
    if not plans:
        return costs
    batch, where = measurement_batch(spec, size, paths, plans[0]) if measure else (None, "")
    for key in dict.fromkeys(group_key(p) for p in plans):
        group = dict(sorted({p.width: p for p in plans if group_key(p) == key}.items()))
        n = {w: n_params[_n_key(p)] for w, p in group.items()}
        if not measure:
            costs.update({(key, w): GroupCost(PAPER_KAPPA.get(p.arch, 10.0), 3.0, "paper") for w, p in group.items()})
            continue
        small = [w for w in group if n[w] <= KAPPA_MAX_PARAMS]
        anchor = small[-1] if small else next(iter(group))
        anchor_cost = measure_group(group[anchor], batch, where)
        for w, p in group.items():
            each = n[w] <= KAPPA_EACH_PARAMS and w != anchor
            costs[(key, w)] = measure_group(p, batch, where) if each else anchor_cost
    return costs


def _n_key(plan: RunPlan) -> tuple:
    return plan.arch, plan.width, tuple(sorted((k, repr(v)) for k, v in plan.config.model_overrides.items()))


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
        from symscale.data.builtin import builtin_path

        if builtin_path(ds.builtin, ds.seed).exists():  # generated: sized from the structures themselves
            return _measure([str(builtin_path(ds.builtin, ds.seed))], ds)
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
    spec: StudySpec,
    plans: list[RunPlan],
    paths: list[str] | None = None,
    *,
    measure_kappa: bool = True,
    calibrate: bool = False,
) -> list[RunEstimate]:
    """One estimate per planned run; N keyed by family, options and width, kappa and r by group and width;
    with `calibrate`, time from steps timed on this machine (`calibrated_times`)."""
    size = data_size(spec, paths)
    n_train = size.n_structures if spec.dataset.val_path else max(0, size.n_structures - spec.dataset.val)
    device = str(spec.training.get("device", "cpu")).split(":")[0]
    fps = spec.flops_per_second or DEFAULT_FLOPS_PER_SECOND.get(device, DEFAULT_FLOPS_PER_SECOND["cpu"])
    n_params: dict[tuple, int] = {}
    for p in plans:
        if _n_key(p) not in n_params:
            n_params[_n_key(p)] = count_parameters(p.arch, p.width, size.elements, dict(p.config.model_overrides))
    costs = group_costs(spec, plans, size, paths, n_params, measure_kappa)
    out = []
    for p in plans:
        n, cost, mult = n_params[_n_key(p)], costs[(group_key(p), p.width)], symmetry_multiplier(p)
        atoms = n_train * float(p.config.data.prefix or p.prefix) * float(p.config.training.epochs)
        atoms *= size.atoms_per_structure
        flops = estimated_flops(cost.kappa, n, atoms) * cost.train_ratio / 3.0 * mult
        out.append(
            RunEstimate(
                p.run_id, p.arch, p.width, p.mode, p.prefix, p.seed, n, atoms, cost.kappa, cost.source, flops,
                flops / fps, group_label(p), cost.train_ratio, mult, cost.sample,
            )
        )  # fmt: skip
    if calibrate:
        out = calibrated_times(spec, plans, out, size, paths, n_train)
    return out


def worker_threads(spec: StudySpec) -> int:
    """Torch threads of one local worker: the spec's threads_per_worker, else cores // workers."""
    import os

    workers = spec.executor.workers or 1
    return spec.executor.threads_per_worker or max(1, (os.cpu_count() or 1) // workers)


def calibration_structures(spec: StudySpec, size: DataSize, paths: list[str] | None, count: int) -> list:
    """`count` structures of the study's data spread over it, else toy molecules sized like the data."""
    dataset = _study_data(spec, paths)
    if dataset is not None and len(dataset):
        idx = np.linspace(0, len(dataset) - 1, min(count, len(dataset))).round().astype(int)
        return [dataset[int(i)] for i in idx]
    from symscale.data.toy import toy_structures

    a = max(3, round(size.atoms_per_structure))
    return toy_structures(count, seed=0, min_atoms=max(3, a - 6), max_atoms=a + 6)


def calibrated_times(
    spec: StudySpec, plans: list[RunPlan], estimates: list[RunEstimate], size: DataSize, paths, n_train: int
) -> list[RunEstimate]:
    """`estimates` with time_s predicted from training steps timed on this machine, per group (family and
    options; a symmetry mode only multiplies the step) at two widths. Unchanged (and logged) when the spec's
    device is not on this machine."""
    from dataclasses import replace

    import torch

    from symscale.study import calibration

    device = str(spec.training.get("device", "cpu")).split(":")[0]
    if device == "cuda" and not torch.cuda.is_available():
        log.warning("the spec trains on cuda and this machine has none: time from estimate.flops_per_second")
        return estimates
    batch = max(int(p.config.training.batch_size) for p in plans)
    evals = max(int(p.config.evaluation.eval_batch_size) for p in plans)
    structures = calibration_structures(spec, size, paths, max(3 * batch, evals))
    threads, models = worker_threads(spec), {}
    data = calibration.time_data(_study_data(spec, paths))
    by_plan = {id(p): e for p, e in zip(plans, estimates, strict=True)}
    groups: dict[tuple, dict[int, RunPlan]] = {}
    for p in plans:
        groups.setdefault(_n_key(p)[:1] + _n_key(p)[2:], {}).setdefault(p.width, p)
    for key, by_width in groups.items():
        n = {w: by_plan[id(p)].n_params for w, p in by_width.items()}
        timed = [calibration.time_width(by_width[w], structures, list(size.elements), threads)
                 for w in calibration.timed_widths(n, device)]  # fmt: skip
        models[key] = calibration.TimeModel(tuple(timed))
    out = []
    for p, e in zip(plans, estimates, strict=True):
        model = models[_n_key(p)[:1] + _n_key(p)[2:]]
        seconds = calibration.run_seconds(p, model, e.n_params, n_train, p.config.data.n_val, e.multiplier, data)
        out.append(replace(e, time_s=seconds, time_source=model.source))
    return out
