"""What every force-field family shares: element handling, energy reference, force scale, force mode.

A family subclasses `ForceField` and implements `interactions`, which maps (element index, positions,
graph) to a per-atom normalised energy and, for direct forces, per-atom normalised forces. The base class
turns these into physical units:

    E = force_scale * sum_i e_i + sum_i E_ref(Z_i)     [eV]
    F_i = force_scale * f_i            (forces="direct", the paper's setting)
    F_i = -dE/dx_i                     (forces="conservative", for molecular dynamics)

`force_scale` is the training-set force RMS (eV/Angstrom, from the dataset statistics) and E_ref the
per-element energy references (eV), so the network only predicts normalised residuals.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import torch
from torch import nn

from symscale.config import MODEL_REVISIONS
from symscale.data.graph import DEFAULT_CUTOFF, DEFAULT_MAX_NEIGHBORS, GraphBatch
from symscale.errors import SymscaleError

FORCE_MODES = ("direct", "conservative")
# constructor options every family shares; any other keyword is a family override (recorded in `overrides`)
SHARED_OPTIONS = ("elements", "cutoff", "max_neighbors", "forces", "element_energies", "force_scale")
MAX_Z = 118


@dataclass(frozen=True)
class Symmetry:
    """What a family builds in, as the report prints it."""

    group: str  # e.g. "T(3)" (translations only), "E(3)", "SE(3)"
    nu: int  # body order: nodes that define one message
    l: int | None  # tensor order of the geometric features (None: no geometric features)
    rotation_equivariant: bool  # energy invariant and forces equivariant under rotations
    reflection_equivariant: bool  # the same under reflections (O(3))


@dataclass(frozen=True)
class ModelOutput:
    energy: torch.Tensor  # [n_structures], eV
    forces: torch.Tensor  # [n_atoms, 3], eV/Angstrom


class ForceField(nn.Module):
    """Base class of all families. Subclasses set `arch`, `symmetry` and implement `interactions`."""

    arch: str = ""
    symmetry: Symmetry
    base_width: int  # the width at which hyper-parameters are tuned (muP width multiplier 1)
    # {revision: options that rebuild that earlier revision of the family} (config.MODEL_REVISIONS)
    legacy_options: Mapping[int, Mapping[str, Any]] = MappingProxyType({})

    def __init_subclass__(cls, **kwargs) -> None:
        """Record a family's own constructor options (e.g. num_layers) in `self.overrides`, so that the model
        can be rebuilt (checkpoints, muP base shapes) from `model_config()`."""
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None:
            return

        @functools.wraps(init)
        def recording_init(self, width, *args, **options):
            init(self, width, *args, **options)
            self.overrides = {k: v for k, v in options.items() if k not in SHARED_OPTIONS}

        cls.__init__ = recording_init

    def __init__(
        self,
        width: int,
        *,
        elements: Sequence[int],
        cutoff: float = DEFAULT_CUTOFF,
        max_neighbors: int = DEFAULT_MAX_NEIGHBORS,
        forces: str = "direct",
        element_energies: Mapping[int, float] | None = None,
        force_scale: float = 1.0,
    ) -> None:
        super().__init__()
        if not isinstance(width, int) or width < 1:
            raise SymscaleError.invalid("width", width, "an integer >= 1")
        if forces not in FORCE_MODES:
            raise SymscaleError.invalid("forces", forces, f"one of {', '.join(FORCE_MODES)}")
        elements = sorted({int(z) for z in elements})
        if not elements or elements[0] < 1 or elements[-1] > MAX_Z:
            raise SymscaleError.invalid("elements", elements, "atomic numbers between 1 and 118")
        if not force_scale > 0:
            raise SymscaleError.invalid("force_scale", force_scale, "a positive number (eV/Angstrom)")
        self.width = width
        self.elements = tuple(elements)
        self.cutoff = float(cutoff)
        self.max_neighbors = int(max_neighbors)
        self.force_mode = forces
        self.overrides: dict = {}
        index = torch.full((MAX_Z + 1,), -1, dtype=torch.long)
        index[torch.tensor(elements)] = torch.arange(len(elements))
        self.register_buffer("element_index", index, persistent=False)
        ref = torch.zeros(MAX_Z + 1, dtype=torch.float64)
        for z, e in (element_energies or {}).items():
            ref[int(z)] = float(e)
        self.register_buffer("element_energy", ref)
        self.register_buffer("force_scale", torch.tensor(float(force_scale), dtype=torch.float64))

    @property
    def num_elements(self) -> int:
        return len(self.elements)

    def num_parameters(self) -> int:
        """N: the exact number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def model_config(self) -> dict:
        """The model part of a checkpoint: `build(**config)` (with "overrides" spread) rebuilds this model."""
        return {
            "arch": self.arch,
            "width": self.width,
            "elements": list(self.elements),
            "cutoff": self.cutoff,
            "max_neighbors": self.max_neighbors,
            "forces": self.force_mode,
            "overrides": dict(self.overrides),
            "revision": MODEL_REVISIONS.get(self.arch, 1),
        }

    def species(self, z: torch.Tensor) -> torch.Tensor:
        """Element index (0..num_elements-1) of each atom; an unknown element is a `SymscaleError`."""
        if z.numel() and (int(z.min()) < 1 or int(z.max()) > MAX_Z):
            raise SymscaleError.invalid("atomic number", sorted(set(z.tolist())), "between 1 and 118")
        idx = self.element_index[z]
        if z.numel() and bool((idx < 0).any()):
            unknown = sorted(set(z[idx < 0].tolist()))
            raise SymscaleError(
                f"element(s) {unknown} unknown to this {self.arch} model; it was built for Z in {list(self.elements)}"
            )
        return idx

    def interactions(
        self, species: torch.Tensor, pos: torch.Tensor, batch: GraphBatch
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Per-atom normalised energies [n_atoms] and direct normalised forces [n_atoms, 3] (or None when
        `self.force_mode == "conservative"`). Subclasses implement the family's update rule here. Use `pos`
        (not `batch.pos`): it is the tensor that gradients are taken against."""
        raise NotImplementedError

    def forward(self, batch: GraphBatch) -> ModelOutput:
        return self.forward_through(self._assemble, batch)

    def forward_through(self, assemble: Callable[..., ModelOutput], batch: GraphBatch) -> ModelOutput:
        """`forward` with `assemble` (this model's `_assemble`, or a compiled version of it, see
        `symscale.train.compilation`) in place of `_assemble`: the element lookup and its checks stay outside,
        in eager mode (they read values, `int(z.min())`, which a compiled graph cannot)."""
        species = self.species(batch.z)
        pos = batch.pos
        conservative = self.force_mode == "conservative"
        with torch.enable_grad() if conservative else contextlib.nullcontext():
            if conservative and not pos.requires_grad:
                pos = pos.detach().requires_grad_(True)
            return assemble(species, pos, batch)

    def _assemble(self, species: torch.Tensor, pos: torch.Tensor, batch: GraphBatch) -> ModelOutput:
        conservative = self.force_mode == "conservative"
        node_energy, node_forces = self.interactions(species, pos, batch)
        # under bf16 autocast the heads end in bf16; the sums over atoms, the references and the forces stay in
        # the positions' dtype (bf16 would round a -1e4 eV total to 64 eV)
        node_energy = node_energy.to(pos.dtype)
        node_forces = None if node_forces is None else node_forces.to(pos.dtype)
        scale = self.force_scale.to(node_energy.dtype)
        per_structure = torch.zeros(batch.num_structures, dtype=node_energy.dtype, device=node_energy.device)
        per_structure = per_structure.index_add(0, batch.batch, node_energy)
        ref = torch.zeros_like(per_structure).index_add(
            0, batch.batch, self.element_energy[batch.z].to(node_energy.dtype)
        )
        energy = scale * per_structure + ref
        if conservative:
            (grad,) = torch.autograd.grad(
                per_structure.sum(), pos, create_graph=self.training, retain_graph=self.training
            )
            forces = -scale * grad
        else:
            if node_forces is None:
                raise RuntimeError(f"{self.arch}.interactions returned no direct forces")
            forces = scale * node_forces
        return ModelOutput(energy=energy, forces=forces)

    def extra_repr(self) -> str:
        return f"width={self.width}, elements={list(self.elements)}, forces={self.force_mode}"
