"""muP: roles inferred from base shapes, optimizer groups, and the coordinate check for every family."""

from __future__ import annotations

import functools
import math

import numpy as np
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
    assert roles["force_head.weight"].role == "vector"  # K channels -> 1 force; K does not grow with width
    assert roles["blocks.0.gram_input.weight"].role == "input"  # K x K inner products -> width
    assert roles["blocks.0.coordinate.2.weight"].role == "output"  # width -> K x K channel mixing
    assert roles["blocks.0.coordinate.0.weight"].role == "hidden"


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


SEEDS = (0, 1, 2)
SLOPE_TOLERANCE = 0.25  # |d log|Delta h| / d log width| allowed under muP
MODES = ("mup", "plain_lr", "sp_readout")  # muP; (a) one plain lr for every group; (b) SP readout init
OUTPUTS = ("output.energy", "output.forces")  # the model's own outputs, tracked beside every Linear


# Families whose muP this check measures as broken at this commit (what was measured). strict: once a family
# is fixed its case XPASSes, fails, and the entry must go; no case is skipped.
KNOWN_MUP_DEFECTS = {
    "esen": "scaling='sphere' (H, E_c fixed): energy slope 0.254 (3 seeds), rising to 0.42 over widths 128..1024: "
    "the standard-init S -> H layers are readouts inside the network (their W_0 Delta x grows as sqrt(S)); every "
    "muP-consistent init of them (std / sqrt(m), its multiplier form, 1/fan_in, zero) shrinks Delta h instead "
    "(-0.28..-0.75), because the fixed-width layers then reach the outputs through an S^-1/2 path; "
    "scaling='all' passes (test_esen_coordinate_check_passes_when_every_channel_grows). See the esen docstring",
}


# families whose muP-off cases take minutes on 2 cores (GemNet-OC's check runs at widths 64..512): run with -m slow;
# their muP-on case stays in the default suite
SLOW_OFF_CASES = ("gemnet_oc",)


def archs_mup_off() -> list:
    return [pytest.param(a, marks=pytest.mark.slow) if a in SLOW_OFF_CASES else a for a in list_archs()]


def archs_under_mup() -> list:
    return [
        pytest.param(a, marks=pytest.mark.xfail(strict=True, reason=KNOWN_MUP_DEFECTS[a]))
        if a in KNOWN_MUP_DEFECTS
        else a
        for a in list_archs()
    ]


MIN_CHANNELS = 8  # fewest channels the narrowest width-proportional layer may have at the smallest check width


def narrowest_ratio(arch: str) -> float:
    """Channels of the family's narrowest layer that grows with width, per unit of width (1 for most families;
    1/8 for GemNet-OC, whose quadruplet bottleneck is width / 8): the smallest dimension of any parameter that
    doubles from base_width to 2 * base_width, divided by base_width."""
    base = build(arch, 8, elements=ELEMENTS).base_width
    at_base = dict(build(arch, base, elements=ELEMENTS).named_parameters())
    doubled = dict(build(arch, 2 * base, elements=ELEMENTS).named_parameters())
    grown = [a for n, p in at_base.items() for a, b in zip(p.shape, doubled[n].shape, strict=True) if b == 2 * a]
    return min(grown) / base


def check_widths(arch: str, factors: tuple[int, ...] = (1, 2, 4, 8)) -> list[int]:
    """An 8x range of widths from max(32, base_width / 2), and from where the narrowest width-proportional layer
    has MIN_CHANNELS: muP is a statement about wide layers, and below 32 channels finite-width corrections alone
    move the slopes by about the tolerance. GemNet-OC's bottlenecks (triplet and atom interactions width / 4,
    quadruplet width / 8) have 8 and 4 channels at width 32: over widths 32..256 its outputs' slopes were
    -0.30 (forces) and -0.25 (energy), the same model with bottlenecks width, width, width / 2 gave -0.04 and
    -0.08 there, and the published bottlenecks over 64..512 (8 quadruplet channels at 64) pass (worst -0.21)."""
    base = build(arch, 8, elements=ELEMENTS).base_width
    start = max(32, base // 2, math.ceil(MIN_CHANNELS / narrowest_ratio(arch)))
    return [start * k for k in factors]


def activation_changes(
    arch: str, width: int, mode: str, seed: int, steps: int, lr: float, options: tuple = ()
) -> dict[str, float]:
    """Mean square of Delta h = h_t - h_0 for the output of every Linear layer and for the model's outputs
    (per-atom energy, forces), on the same batch, after `steps` Adam steps from the initialisation `seed`
    (`options`: family overrides as (name, value) pairs)."""
    batch = collate(toy_structures(4, seed=1), cutoff=6.0)
    per_atom = batch.energy / batch.n_atoms
    targets = (per_atom - per_atom.mean(), batch.forces / 3.0)
    torch.manual_seed(seed)
    model = build(arch, width, elements=ELEMENTS, **dict(options))
    if mode == "sp_readout":
        assert mup.standard_readout_init(model), f"{arch} has no readout (output-role) matrix"
    opt = torch.optim.Adam(mup.param_groups(model, lr=lr, lr_scaling=mode != "plain_lr"))
    names = {m: n for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    acts: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_hook(lambda mod, i, out: acts.__setitem__(names[mod], out.detach())) for m in names]
    first = {}
    for step in range(steps + 1):
        out = model(batch)
        acts.update({OUTPUTS[0]: out.energy.detach() / batch.n_atoms, OUTPUTS[1]: out.forces.detach()})
        if step == 0:
            first = dict(acts)
        if step == steps:
            break
        loss = (out.energy / batch.n_atoms - targets[0]).abs().mean() + (out.forces - targets[1]).norm(dim=-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    for h in hooks:
        h.remove()
    return {name: float((acts[name] - first[name]).pow(2).mean()) for name in first}


@functools.cache
def change_slopes(
    arch: str, mode: str, seeds: tuple[int, ...] = SEEDS, steps: int = 3, lr: float = 1e-3, options: tuple = ()
):
    """Slope of log RMS(Delta h) against log width, per tracked tensor, with Delta h pooled over `seeds`
    (root of the mean square over initialisations: one small model is one random draw)."""
    widths = check_widths(arch)
    rms = []
    for width in widths:
        runs = [activation_changes(arch, width, mode, seed, steps, lr, options) for seed in seeds]
        rms.append({name: math.sqrt(sum(run[name] for run in runs) / len(runs)) for name in runs[0]})
    slopes = {}
    for name in rms[0]:
        values = np.array([r[name] for r in rms])
        if (values == 0).all():
            continue  # a tensor that never changes (e.g. a layer whose input is identically zero)
        assert (values > 0).all(), (arch, mode, name, values)
        slopes[name] = float(np.polyfit(np.log(widths), np.log(values), 1)[0])
    assert slopes and all(o in slopes for o in OUTPUTS), (arch, sorted(slopes))
    return slopes


def outside(slopes: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 2) for k, v in slopes.items() if abs(v) > SLOPE_TOLERANCE}


@pytest.mark.parametrize("arch", archs_under_mup())
def test_coordinate_check_under_mup(arch):
    """Under muP, Delta h after a few Adam steps neither grows nor shrinks with width, for every Linear layer
    and for the energy and force outputs, over an 8x range of widths (Tensor Programs V, Fig. 5)."""
    slopes = change_slopes(arch, "mup")
    assert not outside(slopes), f"{arch}: |slope| > {SLOPE_TOLERANCE} under muP: {outside(slopes)}"


@pytest.mark.parametrize("arch", archs_mup_off())
def test_coordinate_check_fails_with_one_plain_learning_rate(arch):
    """(a) The same check with one plain lr for every group: hidden updates add up over a growing fan-in, so
    Delta h grows with width (about as width); the model's outputs grow with it."""
    slopes = change_slopes(arch, "plain_lr")
    grown = max(slopes[o] for o in OUTPUTS)
    assert grown > SLOPE_TOLERANCE, f"{arch}: outputs do not grow without muP lr scaling: {slopes}"
    assert sum(v > SLOPE_TOLERANCE for v in slopes.values()) > len(slopes) / 2, outside(slopes)


@pytest.mark.parametrize("arch", archs_mup_off())
def test_coordinate_check_fails_with_standard_readout_init(arch):
    """(b) The same check with muP learning rates but readouts drawn with std 1/sqrt(fan_in): the readout's
    large initial weights meet the O(1) change of its input, so the outputs change as sqrt(width)."""
    slopes = change_slopes(arch, "sp_readout")
    readouts = {
        n.rsplit(".", 1)[0]
        for n, r in mup.parameter_roles(build(arch, 32, elements=ELEMENTS)).items()
        if r.role == "output"
    }
    assert max(slopes[o] for o in OUTPUTS) > SLOPE_TOLERANCE, f"{arch}: outputs do not grow: {slopes}"
    tracked = [slopes[n] for n in readouts if n in slopes]  # readouts that are Linear layers
    if tracked:
        assert max(tracked) > SLOPE_TOLERANCE, {n: slopes.get(n) for n in readouts}


@pytest.mark.slow
@pytest.mark.parametrize("arch", list_archs())
@pytest.mark.parametrize("mode", MODES)
def test_coordinate_check_with_more_seeds_and_steps(arch, mode):
    """The heavier variant: 6 seeds, 6 steps. muP passes; each way of switching it off fails."""
    slopes = change_slopes(arch, mode, seeds=tuple(range(6)), steps=6)
    if mode == "mup":
        if arch in KNOWN_MUP_DEFECTS:
            pytest.xfail(KNOWN_MUP_DEFECTS[arch])
        assert not outside(slopes), outside(slopes)
    else:
        assert max(slopes[o] for o in OUTPUTS) > SLOPE_TOLERANCE, slopes


@pytest.mark.slow
def test_esen_coordinate_check_passes_when_every_channel_grows():
    """KNOWN_MUP_DEFECTS["esen"] is the fixed-width H and E_c of scaling='sphere', not eSEN's muP roles: with
    every channel growing (scaling='all') the same check passes under muP and fails with one plain lr."""
    options = (("scaling", "all"),)
    slopes = change_slopes("esen", "mup", options=options)
    assert not outside(slopes), f"esen scaling='all': |slope| > {SLOPE_TOLERANCE} under muP: {outside(slopes)}"
    plain = change_slopes("esen", "plain_lr", options=options)
    assert max(plain[o] for o in OUTPUTS) > SLOPE_TOLERANCE, plain


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
