"""FLOP accounting: hand-counted MLP, agreement with FlopCounterMode, the per-atom/edge fit, kappa."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from symscale.data.graph import collate
from symscale.data.toy import toy_structures
from symscale.train.compute import DeviceClock, FlopModel, count_flops, first_structures, fit_flop_model, measure_family


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.SiLU(), nn.Linear(8, 2))


def test_mlp_forward_matches_the_hand_count():
    B = 10
    x = torch.randn(B, 4)
    with torch.no_grad():
        f = count_flops(lambda: mlp()(x))
    matmul = 2 * B * (4 * 8 + 8 * 2)  # two addmm: 2 m n k each (bias adds are inside addmm)
    assert f.raw == matmul
    assert f.corrected == matmul + B * 8  # + one FLOP per SiLU output


def test_mlp_forward_backward_hand_count():
    B = 10
    x = torch.randn(B, 4)
    model = mlp()
    f = count_flops(lambda: model(x).sum().backward())
    # forward 2B(32+16); backward: layer 2 grad_input and grad_weight (2 x 2B*16), layer 1 grad_weight (2B*32)
    assert f.raw == 2 * B * (32 + 16) + 2 * (2 * B * 16) + 2 * B * 32


def test_raw_count_equals_flop_counter_mode_on_a_model():
    batch = collate(toy_structures(6, seed=0))
    from symscale.models.registry import build

    model = build("mpnn", 8, elements=[1, 6, 7, 8])
    with FlopCounterMode(display=False) as mode:
        model(batch).forces.sum().backward()
    model.zero_grad()
    ours = count_flops(lambda: model(batch).forces.sum().backward())
    assert ours.raw == mode.get_total_flops() > 0
    assert ours.corrected > ours.raw  # message passing adds gathers, scatters and elementwise work


def test_linear_fit_predicts_an_unseen_batch():
    from symscale.models.registry import build

    model = build("mpnn", 8, elements=[1, 6, 7, 8])
    sample = [collate(toy_structures(16, seed=s)) for s in (1, 2)]

    def step(b):
        model(b).forces.pow(2).sum().backward()

    def forward(b):
        with torch.no_grad():
            model(b)

    fm = fit_flop_model(step, forward, sample)
    unseen = collate(toy_structures(24, seed=9))
    measured = count_flops(lambda: step(unseen))
    corrected, raw = fm.step(unseen.num_atoms, unseen.num_edges)
    assert corrected == pytest.approx(measured.corrected, rel=0.05)
    assert raw == pytest.approx(measured.raw, rel=0.05)
    kappa, kappa_raw = fm.kappa(model.num_parameters())
    assert kappa >= kappa_raw > 0


def test_first_structures_keeps_edges_within_the_kept_atoms():
    b = collate(toy_structures(8, seed=0))
    half = first_structures(b, 4)
    assert half.num_structures == 4 and half.num_atoms == int(b.n_atoms[:4].sum())
    assert int(half.edge_index.max()) < half.num_atoms and half.num_edges > 0


def test_measure_family_reports_kappa():
    f = measure_family("mpnn", 8, collate(toy_structures(8, seed=0)))
    assert f.kappa_corrected >= f.kappa_raw > 0
    assert f.train_flops_per_atom > 2 * f.forward_flops_per_atom  # backward costs about twice the forward


def test_device_clock_accumulates():
    clock = DeviceClock(torch.device("cpu"), seconds=1.0)
    with clock:
        sum(range(1000))
    assert clock.seconds > 1.0


def test_the_flop_model_is_checked_on_batches_it_was_not_fitted_on():
    one = [collate(toy_structures(16, seed=1))]

    def quadratic(b):  # FLOPs grow as atoms^2: no line through (atoms, edges) predicts a new size exactly
        x = torch.ones(b.num_atoms, b.num_atoms)
        (x @ x).sum()

    fm = fit_flop_model(quadratic, quadratic, one)
    assert fm.fit_max_rel_error < 1e-9  # batch and half: two points, two coefficients, an exact fit
    assert fm.holdout_max_rel_error > 0.01  # the three-quarter batch, never fitted on, shows the model's error
    assert FlopModel.from_dict(fm.to_dict()) == fm

    def linear(b):
        torch.ones(b.num_atoms, 8).sum()

    fm = fit_flop_model(linear, linear, one + [collate(toy_structures(16, seed=2))])
    assert 0 <= fm.holdout_max_rel_error < 1e-6
    old_record = {k: v for k, v in fm.to_dict().items() if "holdout" not in k}  # run.json before the check
    assert math.isnan(FlopModel.from_dict(old_record).holdout_max_rel_error)


def test_kappa_and_hours_have_one_home_that_needs_no_torch_and_the_loop_uses_it():
    """kappa and H are computed in symscale.quantities only, and reading them (rundir, catalogue) loads no torch."""
    import subprocess
    import sys

    from symscale.quantities import device_hours, implied_kappa, kappa

    code = (
        "import sys, symscale.rundir, symscale.study.catalogue\n"
        "from symscale.quantities import device_hours, implied_kappa\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print(implied_kappa(3 * 2.5 * 10 * 4, 10, 4), device_hours(7200))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["2.5", "2.0"]
    assert implied_kappa(300.0, 5, 4) == kappa(100.0, 4, 5)  # C = 3 kappa N D, the same kappa either way
    assert implied_kappa(None, 5, 4) is None and device_hours("nan") is None
    from symscale.train import compute

    assert compute.kappa is kappa  # FlopModel.kappa (the loop's) is the same function
