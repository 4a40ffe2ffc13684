"""The graph-free Transformer: parameter and FLOP formulas, attention, masking, no cutoff, muP roles.

Its contract (shapes, batching, permutation and translation symmetry, measurably NOT rotation-equivariant,
smoothness, conservative forces, save/load) is in tests/test_models_contract.py; its muP coordinate check in
tests/test_models_mup.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from symscale.data.graph import Structure, collate
from symscale.data.toy import toy_structures
from symscale.errors import SymscaleError
from symscale.models import mup
from symscale.models.registry import build
from symscale.models.transformer import Transformer, attention, matmul_flops, parameter_count
from symscale.train.compute import count_flops

ELEMENTS = (1, 6, 7, 8)


def model_of(width: int = 16, seed: int = 0, **kw) -> Transformer:
    torch.manual_seed(seed)
    return build("transformer", width, elements=ELEMENTS, **kw).double().eval()


def batch_of(structures):
    return collate(structures, dtype=torch.float64)


@pytest.mark.parametrize(
    ("width", "layers", "forces", "head_dim"), [(8, 4, "direct", 8), (24, 2, "direct", 8), (32, 3, "conservative", 16)]
)
def test_parameter_formula(width, layers, forces, head_dim):
    model = build("transformer", width, elements=ELEMENTS, num_layers=layers, forces=forces, head_dim=head_dim)
    expected = parameter_count(width, len(ELEMENTS), num_layers=layers, direct_forces=forces == "direct")
    assert model.num_parameters() == expected
    assert model.overrides == {"num_layers": layers, "head_dim": head_dim}
    assert model.blocks[0].attention.num_heads == width // head_dim


@pytest.mark.parametrize("forces", ["direct", "conservative"])
def test_matmul_flops_formula(forces):
    """torch's counter (raw: matrix products) on one 7-atom structure equals the itemised formula exactly;
    the attention products grow as n^2 (a 14-atom structure costs more than twice as much)."""
    model = model_of(16, forces=forces)
    for n_atoms in (7, 14):
        mol = toy_structures(1, seed=2, min_atoms=n_atoms, max_atoms=n_atoms)
        batch = batch_of(mol)
        if forces == "direct":
            counted = count_flops(lambda b=batch: model(b)).raw
        else:  # the forward pass only (the conservative force is a backward)
            counted = count_flops(lambda b=batch: model.interactions(model.species(b.z), b.pos, b)).raw
        assert counted == matmul_flops(16, n_atoms, direct_forces=forces == "direct"), n_atoms
    assert matmul_flops(16, 14) > 2 * matmul_flops(16, 7)


def test_attention_uses_mup_logit_scaling_and_masks_padding():
    """softmax(q k^T / d_head) v over real keys only; the fused kernel and the explicit product agree."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5, 8, dtype=torch.float64) for _ in range(3))
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])[:, None, None, :]
    explicit = attention(q, k, v, mask, fused=False)
    fused = attention(q, k, v, mask, fused=True)
    assert torch.allclose(explicit, fused, atol=1e-12)
    by_hand = torch.softmax(q[1] @ k[1, :, :3].transpose(-1, -2) / 8, dim=-1) @ v[1, :, :3]  # keys 0..2 only
    assert torch.allclose(explicit[1], by_hand, atol=1e-12)
    standard = torch.softmax(q[0] @ k[0].transpose(-1, -2) / 8**0.5, dim=-1) @ v[0]
    assert not torch.allclose(explicit[0], standard, atol=1e-6)  # not the 1/sqrt(d) of standard attention


def test_padding_does_not_leak():
    """A small molecule gives the same outputs alone and beside a much larger one (padded to its size)."""
    small, large = toy_structures(2, seed=4, min_atoms=3, max_atoms=3)[0], toy_structures(1, seed=5, min_atoms=12)[0]
    model = model_of()
    with torch.no_grad():
        alone = model(batch_of([small]))
        together = model(batch_of([large, small]))
    assert torch.allclose(alone.energy, together.energy[1:], atol=1e-12)
    assert torch.allclose(alone.forces, together.forces[len(large) :], atol=1e-12)


def test_no_cutoff():
    """Every atom sees every atom: moving an atom from 20 to 25 Angstrom away changes the energy, which no
    model with a 6 Angstrom cutoff would notice."""
    model = model_of()

    def energy(distance: float) -> float:
        pos = np.array([[0.0, 0, 0], [1.2, 0, 0], [distance, 0.3, 0.0]])
        with torch.no_grad():
            return float(model(batch_of([Structure(np.array([6, 8, 1]), pos)])).energy[0])

    assert abs(energy(20.0) - energy(25.0)) > 1e-6
    assert model.graph_free


def test_width_must_be_a_multiple_of_the_head_size():
    with pytest.raises(SymscaleError, match="multiple of head_dim"):
        build("transformer", 20, elements=ELEMENTS, head_dim=8)


def test_mup_roles():
    model = build("transformer", 128, elements=ELEMENTS)
    roles = mup.parameter_roles(model)
    assert roles["embedding.weight"].role == "input"
    assert roles["position_embedding.weight"].role == "input"
    for name in ("query", "key", "value", "output"):
        assert roles[f"blocks.0.attention.{name}.weight"].role == "hidden"
        assert roles[f"blocks.0.attention.{name}.weight"].width_mult == pytest.approx(2.0)
    assert roles["blocks.0.mlp.0.weight"].role == "hidden"
    assert roles["blocks.0.attention_norm.weight"].role == "vector"
    assert roles["energy_head.2.weight"].role == "output"
    assert roles["force_head.2.weight"].role == "output"


def test_runs_in_float32_with_gradients():
    """The training setting: float32, direct forces, a backward pass through the padded attention."""
    torch.manual_seed(0)
    model = build("transformer", 16, elements=ELEMENTS)
    batch = collate(toy_structures(3, seed=1))
    out = model(batch)
    assert out.energy.dtype == torch.float32
    (out.energy.sum() + out.forces.pow(2).sum()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_flop_model_of_a_graph_free_model_follows_its_padded_pairs():
    """C of a transformer run comes from a FLOP model fitted on a few batches: on padded token slots and pairs it
    extrapolates to structures twice as large within 10%; on atoms and edges (the graph families' sizes) it
    does not (it was off by a factor of 2 to 4)."""
    from symscale.train.compute import count_flops, fit_flop_model, flop_sizes
    from symscale.train.loss import force_field_loss

    torch.manual_seed(0)
    model = build("transformer", 16, elements=[1, 6, 7, 8])

    def step(b):
        force_field_loss(model(b), b, 1.0).total.backward()

    def forward(b):
        with torch.no_grad():
            model(b)

    fitted = [
        collate(toy_structures(16, seed=s, min_atoms=4, max_atoms=m), cutoff=6.0) for s, m in enumerate((8, 12, 16))
    ]
    big = collate(toy_structures(16, seed=9, min_atoms=20, max_atoms=30), cutoff=6.0)
    true = count_flops(lambda: step(big)).corrected
    errors = {}
    for graph_free in (True, False):
        flops = fit_flop_model(step, forward, fitted, graph_free=graph_free)
        errors[graph_free] = abs(flops.step(*flop_sizes(big, graph_free))[0] / true - 1)
    assert errors[True] < 0.10, errors
    assert errors[False] > 0.5, errors
