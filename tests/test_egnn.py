"""The multi-channel EGNN: parameter formula, vector channels, forces from the channels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from symscale.data.graph import Structure, collate
from symscale.models.egnn import EGNN, parameter_count
from symscale.models.registry import build

ELEMENTS = (1, 6, 7, 8)


@pytest.mark.parametrize(("width", "layers", "ratio"), [(8, 3, 4), (20, 2, 4), (12, 1, 2)])
def test_parameter_formula(width, layers, ratio):
    model = build("egnn", width, elements=ELEMENTS, num_layers=layers, vector_ratio=ratio)
    assert isinstance(model, EGNN)
    assert model.num_vectors == max(1, round(width / ratio))
    assert model.num_parameters() == parameter_count(width, 4, num_layers=layers, vector_ratio=ratio)


def test_vector_channels_scale_with_width():
    assert [build("egnn", w, elements=ELEMENTS).num_vectors for w in (2, 8, 64, 256)] == [1, 2, 16, 64]


def test_force_head_is_bias_free_linear_map():
    model = build("egnn", 16, elements=ELEMENTS)
    assert model.force_head.bias is None and model.force_head.weight.shape == (1, 4)


def test_lone_atom_has_zero_force_and_dimer_forces_lie_on_the_bond():
    torch.manual_seed(0)
    model = build("egnn", 16, elements=ELEMENTS).double()
    lone = Structure(np.array([8]), np.zeros((1, 3)))
    bond = np.array([0.3, -0.5, 1.1])
    dimer = Structure(np.array([6, 8]), np.stack([np.zeros(3), bond]))
    with torch.no_grad():
        out = model(collate([lone, dimer], dtype=torch.float64))
    assert torch.equal(out.forces[0], torch.zeros(3, dtype=torch.float64))
    unit = torch.tensor(bond / np.linalg.norm(bond))
    for f in out.forces[1:]:
        assert torch.allclose(torch.linalg.cross(f, unit), torch.zeros(3, dtype=torch.float64), atol=1e-12)
        assert f.norm() > 0
