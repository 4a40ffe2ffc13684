"""The unconstrained MPNN: parameter formula, options, and what it does (and does not) respect."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from symscale.data.graph import Structure, collate
from symscale.models.mpnn import MPNN, parameter_count
from symscale.models.registry import build

ELEMENTS = (1, 6, 7, 8)


@pytest.mark.parametrize(("width", "layers", "forces"), [(8, 3, "direct"), (20, 2, "direct"), (12, 4, "conservative")])
def test_parameter_formula(width, layers, forces):
    model = build("mpnn", width, elements=ELEMENTS, num_layers=layers, forces=forces)
    assert isinstance(model, MPNN)
    expected = parameter_count(width, 4, num_layers=layers, direct_forces=forces == "direct")
    assert model.num_parameters() == expected
    assert model.overrides == {"num_layers": layers}


def test_conservative_mode_has_no_force_head():
    assert build("mpnn", 8, elements=ELEMENTS, forces="conservative").force_head is None


def test_isolated_atoms_do_not_interact():
    """Two atoms further apart than the cutoff give the sum of two isolated-atom energies."""
    torch.manual_seed(0)
    model = build("mpnn", 8, elements=ELEMENTS, cutoff=5.0).double()
    pair = Structure(np.array([6, 8]), np.array([[0.0, 0, 0], [5.5, 0, 0]]))
    alone = [Structure(np.array([z]), np.zeros((1, 3))) for z in (6, 8)]
    with torch.no_grad():
        e_pair = model(collate([pair], cutoff=5.0, dtype=torch.float64)).energy
        e_alone = model(collate(alone, cutoff=5.0, dtype=torch.float64)).energy
    assert torch.allclose(e_pair, e_alone.sum(), atol=1e-12)


def test_sees_orientation():
    """The raw relative vector enters the messages: a rotated dimer gets a different energy."""
    torch.manual_seed(0)
    model = build("mpnn", 8, elements=ELEMENTS).double()
    along_x = Structure(np.array([6, 8]), np.array([[0.0, 0, 0], [1.2, 0, 0]]))
    along_z = Structure(np.array([6, 8]), np.array([[0.0, 0, 0], [0, 0, 1.2]]))
    with torch.no_grad():
        e = model(collate([along_x, along_z], dtype=torch.float64)).energy
    assert abs(float(e[0] - e[1])) > 1e-6


def _vector_inputs(model: MPNN, structure: Structure) -> dict[tuple[int, int], torch.Tensor]:
    """The relative-vector columns of the first block's edge input, by edge (source j, target i)."""
    seen = {}
    hook = model.blocks[0].edge_input.register_forward_hook(lambda _m, args, _out: seen.update(x=args[0]))
    batch = collate([structure], dtype=torch.float64)
    with torch.no_grad():
        model(batch)
    hook.remove()
    j, i = batch.edge_index
    return {(int(a), int(b)): seen["x"][k, :3] for k, (a, b) in enumerate(zip(j, i, strict=True))}


def test_nearest_neighbour_carries_most_directional_input():
    """A bonded neighbour (1.1 A) must reach an atom's messages with a larger relative vector than a distant one
    (5 A): forces are mostly set by the nearest neighbours. With r_ij / r_cut (the old input) it was 4.5x smaller
    and the direct force head stayed at the zero-force error for most of a quickstart run."""
    model = build("mpnn", 8, elements=ELEMENTS).double()
    trimer = Structure(np.array([6, 1, 8]), np.array([[0.0, 0, 0], [1.1, 0, 0], [0, 5.0, 0]]))
    v = _vector_inputs(model, trimer)
    near, far = v[(1, 0)], v[(2, 0)]
    assert torch.allclose(near, torch.tensor([1 / 1.1, 0, 0], dtype=torch.float64))  # r_ij / r^2, 1/Angstrom
    assert torch.allclose(far, torch.tensor([0, 1 / 5.0, 0], dtype=torch.float64))
    assert near.norm() > 4 * far.norm()


def test_cutoff_vector_input_kept_for_ablations():
    model = build("mpnn", 8, elements=ELEMENTS, vector_input="cutoff").double()
    assert model.overrides == {"vector_input": "cutoff"}
    trimer = Structure(np.array([6, 1, 8]), np.array([[0.0, 0, 0], [1.1, 0, 0], [0, 5.0, 0]]))
    v = _vector_inputs(model, trimer)
    assert torch.allclose(v[(2, 0)], torch.tensor([0, 5.0 / model.cutoff, 0], dtype=torch.float64))


def test_unknown_vector_input_is_one_clear_error():
    from symscale.errors import SymscaleError

    with pytest.raises(SymscaleError, match="vector_input"):
        build("mpnn", 8, elements=ELEMENTS, vector_input="unit")
