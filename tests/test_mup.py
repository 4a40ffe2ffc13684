"""muP: roles inferred from base shapes, optimizer groups, and the coordinate check for every family."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from symscale.data.graph import collate
from symscale.data.toy import toy_structures
from symscale.models import mup
from symscale.models.registry import build, list_archs

ELEMENTS = (1, 6, 7, 8)


def test_roles_of_mpnn_layers():
    model = build("mpnn", 48, elements=ELEMENTS)
    roles = {name: r.role for name, r in mup.parameter_roles(model).items()}
    assert roles["embedding.weight"] == "input"
    assert roles["blocks.0.edge_input.weight"] == "input"
    assert roles["blocks.0.node_target.weight"] == "hidden"
    assert roles["blocks.0.node_target.bias"] == "vector"
    assert roles["energy_head.2.weight"] == "output"
    assert roles["force_head.2.weight"] == "output"
    mults = mup.parameter_roles(model)
    assert mults["blocks.0.message.weight"].width_mult == pytest.approx(48 / 32)
    assert mup.width_multiplier(model) == pytest.approx(1.5)


def test_roles_follow_overrides():
    shallow = build("egnn", 16, elements=ELEMENTS, num_layers=1)
    roles = mup.parameter_roles(shallow)
    assert not any(name.startswith("blocks.1.") for name in roles)
    assert roles["force_head.weight"].role == "output"  # K vector channels -> 1 force, K grows with width
    assert roles["blocks.0.mix.weight"].role == "hidden"


def test_param_groups_scale_lr_and_weight_decay():
    model = build("mpnn", 64, elements=ELEMENTS)  # width multiplier 2
    groups = mup.param_groups(model, lr=1e-3, weight_decay=0.1)
    seen = [id(p) for g in groups for p in g["params"]]
    assert sorted(seen) == sorted(id(p) for p in model.parameters())  # each parameter exactly once
    for g in groups:
        if g["role"] in ("hidden", "output"):
            assert g["lr"] == pytest.approx(1e-3 / g["width_mult"])
            assert g["lr"] * g["weight_decay"] == pytest.approx(1e-4)  # decay per step independent of width
        else:
            assert g["lr"] == 1e-3
        if all(p.dim() == 1 for p in g["params"]):
            assert g["weight_decay"] == 0.0
    assert {g["role"] for g in groups} == {"input", "hidden", "output", "vector"}
    torch.optim.AdamW(groups)  # accepted by a torch optimizer as is


def _activation_sizes(model: nn.Module, batch, targets, lr: float, steps: int) -> list[dict[str, float]]:
    """RMS of every Linear's output at init and after `steps` Adam steps with muP groups."""
    sizes: dict[str, float] = {}

    def record(name):
        return lambda module, inputs, out: sizes.__setitem__(name, float(out.detach().pow(2).mean().sqrt()))

    hooks = [m.register_forward_hook(record(name)) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    opt = torch.optim.Adam(mup.param_groups(model, lr=lr, weight_decay=0.0))
    snapshots = []
    for step in range(steps + 1):
        out = model(batch)
        if step in (0, steps):
            snapshots.append(dict(sizes))
        loss = (out.energy - targets[0]).abs().mean() + (out.forces - targets[1]).norm(dim=-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    for h in hooks:
        h.remove()
    return snapshots


SEEDS = (0, 1, 2)


def _pooled_sizes(arch: str, width: int, batch, targets) -> list[dict[str, float]]:
    """Activation RMS of every Linear, pooled over SEEDS (root of the mean square over initialisations).

    One initialisation of a small model is noisy (a readout's output at init is one random projection), so
    the check compares widths on the average over a few seeds, as the coordinate checks of `mup` do."""
    per_seed = []
    for seed in SEEDS:
        torch.manual_seed(seed)
        per_seed.append(_activation_sizes(build(arch, width, elements=ELEMENTS), batch, targets, lr=3e-3, steps=4))
    return [
        {name: math.sqrt(sum(run[phase][name] ** 2 for run in per_seed) / len(SEEDS)) for name in per_seed[0][phase]}
        for phase in (0, 1)
    ]


@pytest.mark.parametrize("arch", list_archs())
def test_coordinate_check(arch):
    """Activation sizes of every layer stay within a small factor over an 8x range of widths (muP).

    Widths start at 16 channels (or half the base width if larger): muP is a statement about wide layers, and
    at 8 channels the spread between initialisations alone exceeds the tolerance."""
    batch = collate(toy_structures(6, seed=1), cutoff=6.0)
    targets = (batch.energy / batch.n_atoms - (batch.energy / batch.n_atoms).mean(), batch.forces / 3.0)
    base = build(arch, 8, elements=ELEMENTS).base_width
    widths = [max(16, base // 2) * k for k in (1, 2, 4, 8)]  # 8x range around the base width
    readouts = {
        n.rsplit(".", 1)[0]
        for n, r in mup.parameter_roles(build(arch, widths[0], elements=ELEMENTS)).items()
        if r.role == "output"
    }
    runs = [_pooled_sizes(arch, w, batch, targets) for w in widths]
    worst = {}
    for phase in (0, 1):
        for name in runs[0][phase]:
            values = [run[phase][name] for run in runs]
            if all(v == 0 for v in values):
                continue  # e.g. EGNN's vector invariants in the first layer (vectors start at zero)
            assert all(v > 0 for v in values), (phase, name, values)
            # a muP readout starts at O(1/sqrt(width)) (weights std 1/fan_in): only growth is an error there
            worst[(phase, name)] = max(values) / (values[0] if name in readouts else min(values))
    assert worst, "no Linear layer was hooked"
    bad = {k: round(v, 2) for k, v in worst.items() if v > 4.0}
    assert not bad, f"{arch}: activation size changes by more than 4x over widths {widths}: {bad}"


def test_esen_edge_features_do_not_depend_on_width():
    """eSEN's edge features feed every radial weight; their size must not drift with width (it did when one
    linear layer mixed the fixed-size distance basis with the width-sized element embeddings)."""
    batch = collate(toy_structures(6, seed=1), cutoff=6.0)
    sizes = {}
    for width in (16, 128):
        squares = []
        for seed in SEEDS:
            torch.manual_seed(seed)
            model = build("esen", width, elements=ELEMENTS)
            hook = model.edge_embedding.register_forward_hook(
                lambda module, inputs, out, squares=squares: squares.append(float(out.detach().pow(2).mean()))
            )
            model(batch)
            hook.remove()
        sizes[width] = math.sqrt(sum(squares) / len(squares))
    assert 0.3 < sizes[16] < 1.5, sizes  # O(1): SiLU of a unit-variance pre-activation
    assert max(sizes.values()) / min(sizes.values()) < 1.25, sizes
