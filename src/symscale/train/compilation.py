"""torch.compile of a model's forward (`runtime.compile`), with a fallback to eager mode.

What is compiled: `ForceField._assemble`, i.e. the family's interactions, the per-structure energy sum and the
direct force head, with inductor and dynamic shapes (`dynamic=True`): atoms, edges and structures change from
batch to batch, and a graph specialised to each size would recompile at every batch. The element lookup stays
eager (`ForceField.forward_through`): it checks values (`int(z.min())`), which a graph cannot. Inside a compiled
graph the CPU fast paths of `models.layers` (the CSR segment sum and the gather with a scatter backward, both
custom autograd functions with a cache on the index tensor) give way to plain index_select and scatter_add_,
which inductor fuses itself; the constant SO(3) tables of `models.so3` are built eagerly, by one eager forward
before the first compiled one (`CompiledForward.warm_up`).

Graph breaks found with torch._dynamo.explain on each family's `_assemble` (toy batch, torch 2.13 CPU): mpnn,
egnn, esen none; gemnet_oc builds its triplet and quadruplet indices with data-dependent sizes (nonzero,
bincount, `.item()` in `Grouping.of`), so its forward is several graphs with eager index code between them;
its compilation has not yet been seen to finish (over 15 min on a loaded 2-core CPU).

Where the run departs from eager: compiled kernels add in another order, so energies and forces agree with
eager to float32 rounding, not bit for bit (tests/test_models_compile.py states the tolerance), and a run's
numbers depend on the switch as they depend on the thread count.

A fallback, never a crash: when compilation fails (no C++ compiler for inductor on CPU, an operator inductor
cannot lower, a dynamo error) one warning line says why and the run goes on in eager mode. AOTAutograd
compiles a graph's backward only at the first backward, so `warm_up` runs one forward and backward on the
first training batch (gradients are discarded: the weights and the optimizer do not change) and a failure
there falls back too. Conservative forces in training are left eager with a warning: their loss
differentiates dE/dx again, a double backward through a compiled graph, which AOTAutograd does not support.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable

import torch

from symscale.data.graph import GraphBatch
from symscale.models.base import ForceField, ModelOutput

logger = logging.getLogger(__name__)

# the errors a failed compilation raises: dynamo's (its BackendCompilerFailed wraps inductor's lowering and
# C++ errors) and inductor's own C++ errors where they escape unwrapped
_COMPILE_ERRORS: tuple[type[BaseException], ...] = (torch._dynamo.exc.TorchDynamoException,)
try:
    from torch._inductor.exc import CppCompileError, InvalidCxxCompiler

    _COMPILE_ERRORS += (CppCompileError, InvalidCxxCompiler)
except ImportError:  # pragma: no cover - an older or newer torch without them
    pass


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:300]}"


class CompiledForward:
    """`model(batch)` through a compiled `_assemble`, or eagerly once compilation has failed or was refused.

    `reason` is None while the compiled path is in use, else the one-line reason of the fallback.
    Call it like the model; the model itself is not changed (its state_dict, deepcopy and checkpoints stay
    as they were)."""

    def __init__(self, model: ForceField, *, training_forces: bool = True) -> None:
        self.model = model
        self.reason: str | None = None
        self._assemble: Callable[..., ModelOutput] = model._assemble
        refused = refusal(model, training_forces)
        if refused is not None:
            self._fall_back(refused)
        else:
            self._assemble = torch.compile(model._assemble, backend="inductor", dynamic=True)

    @property
    def compiled(self) -> bool:
        return self.reason is None

    def __call__(self, batch: GraphBatch) -> ModelOutput:
        if self.reason is not None:
            return self.model(batch)
        try:
            return self.model.forward_through(self._assemble, batch)
        except _COMPILE_ERRORS as err:
            self._fall_back(_one_line(err))
            return self.model(batch)

    def warm_up(self, batch: GraphBatch) -> None:
        """One eager forward (builds the constant tables), then one compiled forward and backward on `batch`
        (compiles the graph and its backward, or falls back). Gradients are reset to None afterwards."""
        with torch.no_grad():
            self.model(batch)
        if self.reason is not None:
            return
        out = self(batch)
        if self.reason is not None:
            return
        try:
            (out.energy.sum() + out.forces.sum()).backward()
        except _COMPILE_ERRORS as err:
            self._fall_back(_one_line(err))
        finally:
            self.model.zero_grad(set_to_none=True)

    def _fall_back(self, reason: str) -> None:
        self.reason = reason
        self._assemble = self.model._assemble
        logger.warning("runtime.compile: %s; the run goes on in eager mode", reason)


def refusal(model: ForceField, training_forces: bool) -> str | None:
    """Why `model` is not compiled at all (None: it is): conservative training forces, or no C++ compiler for
    inductor on CPU."""
    if training_forces and model.force_mode == "conservative":
        return "conservative forces are trained through a double backward, which compiled graphs do not support"
    device = next(iter(model.buffers())).device
    if device.type == "cpu" and not any(shutil.which(cc) for cc in ("c++", "g++", "clang++")):
        return "inductor on CPU needs a C++ compiler (c++, g++ or clang++) and none is on PATH"
    return None


def compiled_forward(model: ForceField, mode: str) -> Callable[[GraphBatch], ModelOutput]:
    """The forward a run uses for `runtime.compile` = `mode`: the model itself ("off") or a `CompiledForward`.

    A study's worker process trains run after run, and every family shares `ForceField._assemble`: dynamo's
    graphs of the earlier runs are dropped first (`torch._dynamo.reset`), so that they do not use up its
    recompile limit (8 per function, beyond which it runs eagerly without a word). Inductor's cache on disk
    stays: a later run of the same family compiles faster (benchmarks/bench_compile.py, cold and warm)."""
    if mode == "off":
        return model
    torch._dynamo.reset()
    return CompiledForward(model)
