"""Compute accounting: measured training FLOPs (C), kappa, and device time (H).

FLOPs are measured with `torch.utils.flop_counter.FlopCounterMode` over the forward and backward pass of real
batches. Its default registry counts matrix products and convolutions only, so it reports zero for the work
that message passing is made of; `CORRECTIONS` registers formulas for those ops (one FLOP per output element
of elementwise arithmetic and activations, per input element of reductions, per moved element of gathers
and index selections, per accumulated element of index_add / scatter_add / index_put). Both counts are kept:
`raw` (torch's registry) and `corrected` (with the extra formulas).

Measuring every step would slow training, so `FlopModel` measures a few batches (and halves of them, for
different sizes), fits FLOPs per step as a linear function of atoms and pairs,
    flops(batch) ~ c_atom * n_atoms + c_pair * n_pairs,
where the pairs are the neighbour-list edges of a graph model and, for a graph-free model (`graph_free = True`:
full attention within each structure, padded to the batch's largest structure), the padded token pairs
S * n_max^2, with its padded token slots S * n_max in place of atoms (`flop_sizes`); fitting a graph-free model on
atoms and edges misses its quadratic cost by up to 2x.
The loop adds the predicted count at every step. The fit is checked out of sample, on sub-batches of a
size it was not fitted on (and on a held-out batch when several are measured): `holdout_max_rel_error`.
kappa = forward FLOPs / (atoms x N) on the measured full batches (the paper's "forward FLOPs per atom per
parameter", so that C ~ 3 kappa N D).
Device seconds: wall time of the training steps only (evaluation excluded), read after
`torch.cuda.synchronize()` on CUDA; H is device-seconds in hours (`device_hours`).

kappa, H and C = 3 kappa N D themselves are computed in `symscale.quantities` (torch-free, so that the readers
of finished runs use the same formulas); this module imports torch only inside the functions that measure.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from symscale.quantities import kappa

if TYPE_CHECKING:
    import torch

    from symscale.data.graph import GraphBatch


def _numel(shape) -> int:
    if isinstance(shape, list | tuple) and shape and not isinstance(shape[0], int):  # torch.Size is a tuple
        shape = shape[0]  # multi-output op: count the first output
    return math.prod(shape) if isinstance(shape, list | tuple) else 1


def _per_output(*args, out_shape=None, **kwargs) -> int:
    return _numel(out_shape)


def _per_input(x_shape, *args, out_shape=None, **kwargs) -> int:
    return _numel(x_shape)


def _per_source(*args, out_shape=None, **kwargs) -> int:
    """index_add(self, dim, index, source) / scatter_add(self, dim, index, src): one add per source element."""
    return _numel(args[3]) if len(args) > 3 else _numel(out_shape)


def _per_values(*args, out_shape=None, **kwargs) -> int:
    """index_put(self, indices, values, accumulate): one write or add per value."""
    return _numel(args[2]) if len(args) > 2 else _numel(out_shape)


_ELEMENTWISE = (
    "add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_", "neg", "abs", "pow", "sqrt", "rsqrt",
    "reciprocal", "exp", "log", "sin", "cos", "tanh", "sigmoid", "silu", "relu", "gelu", "sgn", "clamp",
    "clamp_min", "maximum", "minimum", "where", "addcmul", "addcdiv", "lerp", "lerp_", "silu_backward",
    "sigmoid_backward", "tanh_backward", "gelu_backward", "threshold_backward", "pow_", "acos", "atan2",
    "masked_fill", "_softmax", "_softmax_backward_data", "native_layer_norm", "native_layer_norm_backward",
)  # fmt: skip
_REDUCTIONS = ("sum", "mean", "linalg_vector_norm", "norm", "prod", "amax", "cumsum")
_GATHERS = ("index_select", "gather", "index", "embedding", "repeat_interleave")
_SCATTERS = ("index_add", "index_add_", "scatter_add", "scatter_add_", "scatter_reduce", "embedding_dense_backward")
_PUTS = ("index_put", "index_put_", "_index_put_impl_")


def _packets(names: Sequence[str]) -> list:
    import torch

    aten = torch.ops.aten
    return [getattr(aten, n) for n in names if hasattr(aten, n)]


@functools.cache
def corrections() -> dict:
    """The extra FLOP formulas (aten op -> count), added to torch's registry; none replaces one of its own."""
    from torch.utils.flop_counter import flop_registry

    table = {}
    for op in _packets(_ELEMENTWISE) + _packets(_GATHERS):
        table[op] = _per_output
    for op in _packets(_REDUCTIONS):
        table[op] = _per_input
    for op in _packets(_SCATTERS):
        table[op] = _per_source
    for op in _packets(_PUTS):
        table[op] = _per_values
    assert not set(flop_registry) & set(table), "a correction would replace one of torch's own formulas"
    return table


@dataclass(frozen=True)
class FlopCount:
    """FLOPs of one measured call: `raw` (torch's registry: matmuls, convolutions) and `corrected`."""

    raw: int
    corrected: int


def count_flops(fn: Callable[[], object]) -> FlopCount:
    """FLOPs of `fn()` in one pass: `corrected` with `CORRECTIONS` added to torch's registry, `raw` the part
    that torch's own registry counts (the same per-op numbers FlopCounterMode reports without corrections)."""
    from torch.utils.flop_counter import FlopCounterMode, flop_registry

    mode = FlopCounterMode(display=False, custom_mapping=corrections())
    with mode:
        fn()
    counts = mode.get_flop_counts().get("Global", {})
    raw = sum(v for op, v in counts.items() if op in flop_registry)
    return FlopCount(raw=int(raw), corrected=int(sum(counts.values())))


@dataclass(frozen=True)
class FlopModel:
    """Per-step FLOPs as a linear function of atoms and edges, fitted on measured batches.

    Coefficients in FLOPs per atom and per edge for the training step (forward + backward, including any
    symmetry-loss copies) and for one forward pass (for kappa), raw and corrected."""

    train_corrected: tuple[float, float]
    train_raw: tuple[float, float]
    forward_corrected: tuple[float, float]
    forward_raw: tuple[float, float]
    fit_max_rel_error: float  # worst relative error of the corrected training fit on the batches it was fitted on
    measured_atoms: int
    measured_forward_corrected: int
    measured_forward_raw: int
    # worst relative error of the corrected training fit on batches not used to fit it (three-quarter
    # sub-batches of every measured batch, and the last batch when there are several); NaN in old records
    holdout_max_rel_error: float = float("nan")

    def step(self, n_atoms: int, n_edges: int) -> tuple[float, float]:
        """(corrected, raw) training FLOPs of one step on a batch of this many atoms and pairs (edges, or for a
        graph-free model its padded token slots and pairs: `flop_sizes`)."""
        c, r = self.train_corrected, self.train_raw
        return c[0] * n_atoms + c[1] * n_edges, r[0] * n_atoms + r[1] * n_edges

    def kappa(self, num_parameters: int) -> tuple[float, float]:
        """(corrected, raw) forward FLOPs per atom per parameter on the measured batches."""
        atoms = self.measured_atoms
        return kappa(self.measured_forward_corrected, atoms, num_parameters), kappa(
            self.measured_forward_raw, atoms, num_parameters
        )

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, d: dict) -> FlopModel:
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()})


def _fit(sizes: np.ndarray, flops: np.ndarray) -> tuple[tuple[float, float], float]:
    coef, *_ = np.linalg.lstsq(sizes, flops, rcond=None)
    pred = sizes @ coef
    rel = float(np.max(np.abs(pred - flops) / np.maximum(flops, 1.0)))
    return (float(coef[0]), float(coef[1])), rel


def sub_batches(batches: Sequence[GraphBatch]) -> list[GraphBatch]:
    """Each batch and its first half (so that the fit sees two sizes)."""
    out = []
    for b in batches:
        out.append(b)
        if b.num_structures >= 2:
            out.append(first_structures(b, b.num_structures // 2))
    return out


def first_structures(batch: GraphBatch, k: int) -> GraphBatch:
    """The first `k` structures of a batch, with their atoms and edges."""
    n_atoms = int(batch.n_atoms[:k].sum())
    keep = batch.edge_index[1] < n_atoms  # edges never cross structures
    from symscale.data.graph import GraphBatch

    return GraphBatch(
        z=batch.z[:n_atoms],
        pos=batch.pos[:n_atoms],
        batch=batch.batch[:n_atoms],
        edge_index=batch.edge_index[:, keep],
        n_atoms=batch.n_atoms[:k],
        charge=batch.charge[:k],
        spin=batch.spin[:k],
        energy=None if batch.energy is None else batch.energy[:k],
        forces=None if batch.forces is None else batch.forces[:n_atoms],
    )


def flop_sizes(batch: GraphBatch, graph_free: bool = False) -> tuple[int, int]:
    """What a model's work scales with, (tokens, pairs): a graph model's atoms and neighbour-list edges; a
    graph-free model's padded token slots S * n_max and padded token pairs S * n_max^2 (its blocks run on the
    batch padded to its largest structure, attention over every pair of slots)."""
    if not graph_free:
        return int(batch.num_atoms), int(batch.num_edges)
    n_max = int(batch.n_atoms.max()) if batch.num_structures else 0
    return int(batch.num_structures) * n_max, int(batch.num_structures) * n_max * n_max


def fit_flop_model(
    train_step: Callable[[GraphBatch], object],
    forward: Callable[[GraphBatch], object],
    batches: Sequence[GraphBatch],
    graph_free: bool = False,
) -> FlopModel:
    """Measure `train_step(batch)` (forward + backward) and `forward(batch)` on `batches` and their halves,
    fit FLOPs per atom and per edge (see the module docstring), and check the fit out of sample: on the
    first three quarters of every batch and, given several batches, on the last one (not fitted on)."""
    fitted, held_out = holdout_split(batches)
    samples = sub_batches(fitted)
    sizes = np.array([flop_sizes(b, graph_free) for b in samples], dtype=np.float64)
    train = [count_flops(lambda b=b: train_step(b)) for b in samples]
    fwd = [count_flops(lambda b=b: forward(b)) for b in batches]
    full_sizes = np.array([flop_sizes(b, graph_free) for b in batches], dtype=np.float64)
    tc, err = _fit(sizes, np.array([f.corrected for f in train], dtype=np.float64))
    tr, _ = _fit(sizes, np.array([f.raw for f in train], dtype=np.float64))
    fc, _ = _fit(full_sizes, np.array([f.corrected for f in fwd], dtype=np.float64))
    fr, _ = _fit(full_sizes, np.array([f.raw for f in fwd], dtype=np.float64))
    holdout = [(b, count_flops(lambda b=b: train_step(b)).corrected) for b in held_out]
    rel = [abs(float(np.dot(tc, flop_sizes(b, graph_free))) - f) / max(f, 1.0) for b, f in holdout]
    return FlopModel(
        train_corrected=tc,
        train_raw=tr,
        forward_corrected=fc,
        forward_raw=fr,
        fit_max_rel_error=err,
        measured_atoms=int(sum(b.num_atoms for b in batches)),
        measured_forward_corrected=int(sum(f.corrected for f in fwd)),
        measured_forward_raw=int(sum(f.raw for f in fwd)),
        holdout_max_rel_error=float(max(rel)) if rel else float("nan"),
    )


def holdout_split(batches: Sequence[GraphBatch]) -> tuple[list[GraphBatch], list[GraphBatch]]:
    """(batches the FLOP model is fitted on, batches it is checked on): the last batch is held out when
    there are several; the first three quarters of every batch (a size the fit never sees) always are."""
    batches = list(batches)
    fitted = batches[:-1] if len(batches) > 1 else batches
    held = [first_structures(b, 3 * b.num_structures // 4) for b in batches if b.num_structures >= 4]
    return fitted, held + (batches[-1:] if len(batches) > 1 else [])


class DeviceClock:
    """Accumulated device seconds of the blocks run inside `with clock:` (CUDA synchronised)."""

    def __init__(self, device: torch.device | str, seconds: float = 0.0):
        import torch

        self.cuda = torch.device(device).type == "cuda"
        self.seconds = float(seconds)
        self._t0 = 0.0

    def _sync(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()

    def __enter__(self) -> DeviceClock:
        self._sync()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self._sync()
        self.seconds += time.perf_counter() - self._t0


# ---------------------------------------------------------------- a family at a width (CLI, study estimates)


@dataclass(frozen=True)
class FamilyFlops:
    """Measured cost of a family at a width on a reference batch (the `symscale flops` table row)."""

    arch: str
    width: int
    num_parameters: int
    kappa_raw: float
    kappa_corrected: float
    forward_flops_per_atom: float  # corrected
    train_flops_per_atom: float  # corrected, forward + backward
    atoms: int
    edges: int


def reference_batch(n_structures: int = 64, seed: int = 0, dataset=None) -> GraphBatch:
    """A batch of the first `n_structures` of `dataset` (default: the toy set) for FLOP measurements."""
    from symscale.data.graph import collate
    from symscale.data.toy import toy_structures

    structures = (
        toy_structures(n_structures, seed=seed) if dataset is None else [dataset[i] for i in range(n_structures)]
    )
    return collate(structures)


def measure_family(arch: str, width: int, batch: GraphBatch | None = None, **overrides) -> FamilyFlops:
    """N, kappa (raw, corrected) and FLOPs per atom of `arch` at `width` on `batch` (default: 64 toy molecules)."""
    import torch

    from symscale.models.registry import build
    from symscale.train.loss import force_field_loss

    batch = reference_batch() if batch is None else batch
    elements = sorted({int(z) for z in batch.z.tolist()})
    torch.manual_seed(0)
    model = build(arch, width, elements=elements, **overrides)

    def train_step(b: GraphBatch) -> None:
        force_field_loss(model(b), b, 1.0).total.backward()

    fwd = count_flops(lambda: model(batch))
    train = count_flops(lambda: train_step(batch))
    n_params, atoms = model.num_parameters(), batch.num_atoms
    return FamilyFlops(
        arch=arch,
        width=width,
        num_parameters=n_params,
        kappa_raw=kappa(fwd.raw, atoms, n_params),
        kappa_corrected=kappa(fwd.corrected, atoms, n_params),
        forward_flops_per_atom=fwd.corrected / atoms,
        train_flops_per_atom=train.corrected / atoms,
        atoms=atoms,
        edges=batch.num_edges,
    )


def measured_kappa(arch: str, width: int) -> float:
    """Corrected kappa of `arch` at `width` on the toy reference batch (used by the study's estimates)."""
    return measure_family(arch, width).kappa_corrected
