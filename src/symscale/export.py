"""A trained model as a `torch.export` program, for deployment without symscale's model code.

    from symscale.export import export_model, load_exported
    export_model("runs/esen-16", "esen-16.pt2")           # a run directory, checkpoint file or ForceField
    model = load_exported("esen-16.pt2")
    energy_ev, forces_ev_per_a = model.predict(structure)  # one symscale `Structure`

The program is one molecule's graph in, energy and forces out:

    program(z [n_atoms] long, pos [n_atoms, 3], batch [n_atoms] long (zeros), edge_index [2, n_edges] long,
            n_atoms [1] long, charge [1] long, spin [1] long) -> (energy [1] eV, forces [n_atoms, 3] eV/A)

with the conventions of `symscale.data.graph` (edge j -> i as `edge_index = (j, i)`, at most `max_neighbors`
nearest incoming edges within `cutoff`; both are stored beside the program). `load_exported` builds that
graph with symscale's own neighbour search; any code that builds the same graph can call the program alone.

Where it departs from the eager model, and why:
- torch.export, not TorchScript: every family exports with torch.export (dynamic atom and edge counts), while
  TorchScript cannot script the dataclass batch the models take.
- One structure per call: the models read the number of structures as a Python int, which export fixes at
  trace time; a calculator evaluates one structure at a time anyway.
- Conservative forces: `torch.autograd.grad` cannot be traced into a program, so a conservative model is
  exported as its energy, and `ExportedForceField` differentiates the program (which stays differentiable)
  with respect to the positions. Direct forces are the program's second output.
- The element check of `ForceField.species` is data-dependent control flow; `ExportedForceField` checks the
  elements before calling the program instead (the program itself trusts its input).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from symscale.data.graph import GraphBatch, Structure, collate
from symscale.errors import SymscaleError
from symscale.models.base import ForceField

METADATA_FILE = "symscale.json"
_DTYPES = {"float32": torch.float32, "float64": torch.float64}


class GraphProgram(nn.Module):
    """The model as a function of plain tensors: energy [1] (eV) and direct forces [n_atoms, 3] (eV/A), or
    the energy twice for a conservative model (its forces come from differentiating the energy)."""

    def __init__(self, model: ForceField):
        super().__init__()
        self.model = model

    def forward(self, z, pos, batch, edge_index, n_atoms, charge, spin) -> tuple[torch.Tensor, torch.Tensor]:
        graph = GraphBatch(z=z, pos=pos, batch=batch, edge_index=edge_index, n_atoms=n_atoms, charge=charge, spin=spin)
        species = self.model.element_index[z]  # [n_atoms]; elements are checked by the caller
        node_energy, node_forces = self.model.interactions(species, pos, graph)  # [n_atoms], [n_atoms, 3] | None
        scale = self.model.force_scale.to(node_energy.dtype)
        energy = torch.zeros_like(n_atoms, dtype=node_energy.dtype).index_add(0, batch, node_energy)  # [1]
        reference = self.model.element_energy[z].to(node_energy.dtype)  # [n_atoms] eV
        energy = scale * energy + torch.zeros_like(energy).index_add(0, batch, reference)  # [1] eV
        if node_forces is None:
            return energy, energy
        return energy, scale * node_forces  # [1] eV, [n_atoms, 3] eV/A


def _example(model: ForceField, dtype: torch.dtype) -> GraphBatch:
    """A small molecule of the model's elements, to trace with (its size does not matter: shapes are dynamic)."""
    rng = np.random.default_rng(0)
    numbers = np.array([model.elements[k % len(model.elements)] for k in range(6)], dtype=np.int64)
    positions = rng.normal(size=(6, 3)) * 0.8  # Angstrom, all within the cutoff
    return collate([Structure(numbers=numbers, positions=positions)], model.cutoff, model.max_neighbors, dtype)


def _inputs(graph: GraphBatch) -> tuple[torch.Tensor, ...]:
    return (graph.z, graph.pos, graph.batch, graph.edge_index, graph.n_atoms, graph.charge, graph.spin)


def export_model(
    model: ForceField | str | Path,
    path: str | Path,
    *,
    dtype: str = "float64",
    forces: str | None = None,
    device: str | torch.device = "cpu",
) -> Path:
    """Export `model` (a `ForceField`, run directory or checkpoint) with `torch.export` to `path` (.pt2).

    `dtype`: float64 (default, for MD) or float32. `forces`: override the force mode ("direct" |
    "conservative"). `device`: where the program runs (its constants live there). Returns the path.
    """
    from symscale.ase import resolve_device

    if dtype not in _DTYPES:
        raise SymscaleError.invalid("dtype", dtype, f"one of {', '.join(_DTYPES)}")
    device = resolve_device(device)
    if isinstance(model, str | Path):
        from symscale.train.checkpoint import load_model

        model, _ = load_model(model, device=device)
    else:
        model = copy.deepcopy(model)  # the caller's model keeps its device, dtype and force mode
    if forces is not None:
        if forces not in ("direct", "conservative"):
            raise SymscaleError.invalid("forces", forces, "direct or conservative")
        model.force_mode = forces
    model = model.to(device=device, dtype=_DTYPES[dtype]).eval()
    program = GraphProgram(model)
    example = _inputs(_example(model, _DTYPES[dtype]).to(device=device))
    with torch.no_grad():
        program(*example)  # fills the families' cached constant tables outside the trace
    atoms, edges = torch.export.Dim("atoms", min=2), torch.export.Dim("edges", min=2)
    dynamic = ({0: atoms}, {0: atoms}, {0: atoms}, {1: edges}, None, None, None)
    exported = torch.export.export(program, example, dynamic_shapes=dynamic, strict=False)
    metadata = {
        "format": "symscale torch.export program, one molecule per call",
        "arch": model.arch,
        "width": model.width,
        "elements": list(model.elements),
        "cutoff": model.cutoff,
        "max_neighbors": model.max_neighbors,
        "forces": model.force_mode,
        "dtype": dtype,
        "device": str(device),
        "torch": torch.__version__,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.export.save(exported, str(path), extra_files={METADATA_FILE: json.dumps(metadata)})
    return path


class ExportedForceField:
    """A loaded exported program: `predict(structure)` gives (energy eV, forces [n_atoms, 3] eV/A)."""

    def __init__(self, program: nn.Module, metadata: dict):
        self.program = program
        self.metadata = metadata
        self.elements = frozenset(int(z) for z in metadata["elements"])
        self.dtype = _DTYPES[metadata["dtype"]]
        self.device = torch.device(metadata["device"])

    def predict(self, structure: Structure) -> tuple[float, np.ndarray]:
        """Energy (eV) and forces [n_atoms, 3] (eV/A) of one molecule."""
        unknown = sorted(set(np.asarray(structure.numbers).tolist()) - self.elements)
        if unknown:
            raise SymscaleError.invalid("elements", unknown, f"elements of this model, {sorted(self.elements)}")
        m = self.metadata
        graph = collate([structure], m["cutoff"], m["max_neighbors"], self.dtype).to(device=self.device)
        if m["forces"] == "conservative":
            pos = graph.pos.requires_grad_(True)
            with torch.enable_grad():
                energy, _ = self.program(*_inputs(graph.replace(pos=pos)))
                (grad,) = torch.autograd.grad(energy.sum(), pos)
            forces = -grad
        else:
            with torch.no_grad():
                energy, forces = self.program(*_inputs(graph))
        return float(energy.detach()[0]), forces.detach().cpu().double().numpy()


def load_exported(path: str | Path) -> ExportedForceField:
    """An `ExportedForceField` from a file written by `export_model`."""
    path = Path(path)
    if not path.is_file():
        raise SymscaleError(f"exported model not found: {path}")
    extra = {METADATA_FILE: ""}
    try:
        exported = torch.export.load(str(path), extra_files=extra)
    except (RuntimeError, ValueError, KeyError) as err:
        raise SymscaleError(f"cannot load {path}: not a torch.export program ({err})") from None
    if not extra[METADATA_FILE]:
        raise SymscaleError(f"cannot load {path}: a torch.export program without symscale's metadata")
    return ExportedForceField(exported.module(), json.loads(extra[METADATA_FILE]))
