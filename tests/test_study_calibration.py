"""Dry-run timing calibration (symscale.study.calibration): steps timed per family on this machine predict
each run's wall time, evaluations and the FLOP-model fit included; the study's wall time is the longest-first
schedule on its workers."""

from __future__ import annotations

import time

import pytest

from symscale.study import calibration
from symscale.study.calibration import TimeModel, WidthTiming, makespan, run_seconds
from symscale.study.spec import expand_runs, parse_spec


def _spec(path, families, **training):
    return parse_spec({
        "name": "cal", "dataset": {"path": str(path), "val": 12},
        "families": families,
        "evaluation": {"eval_points": 3, "eval_batch_size": 12, "equivariance_structures": 4},
        "training": {"batch_size": 8, "progress": "off", **training},
        "executor": {"workers": 1, "threads_per_worker": 1},
    })  # fmt: skip


def test_time_model_is_a_line_in_n_through_the_timed_widths():
    model = TimeModel((WidthTiming(4, 1000, 0.1, 0.01, False, 1.0), WidthTiming(16, 11000, 0.3, 0.03, False, 2.0)))
    assert model.step_s(6000) == pytest.approx(0.2) and model.eval_s(6000) == pytest.approx(0.02)
    assert model.flop_model_s(21000) == pytest.approx(3.0)  # extrapolated along the line
    assert model.step_s(10) == pytest.approx(0.1)  # never below the narrowest width's time
    flat = TimeModel((WidthTiming(4, 1000, 0.2, 0.01), WidthTiming(8, 3000, 0.1, 0.01)))  # a timing blip
    assert flat.step_s(5000) == pytest.approx(0.2)  # a falling line is taken as flat
    assert calibration.timed_widths({2: 100, 4: 400, 8: 3e5, 16: 1e6}, "cpu") == [2, 4]
    assert calibration.timed_widths({64: 1e6}, "cpu") == [64]


def test_run_seconds_counts_steps_evaluations_and_the_symmetry_loss(tmp_path):
    spec = _spec(tmp_path / "x.extxyz", [{"arch": "mpnn", "widths": [4]}])
    plan = expand_runs(spec)[0]
    model = TimeModel((WidthTiming(4, 1000, 0.5, 0.01, True, 2.0),))
    # 100 structures at batch 8: 13 steps; 3 evaluations (the last step among them), 12 + 4 x 2 structures each
    expected = calibration.RUN_OVERHEAD_S + 2.0 + 13 * 0.5 + 3 * (12 + 8) * 0.01
    assert run_seconds(plan, model, 1000, 100, 12, 1.0) == pytest.approx(expected)
    with_loss = run_seconds(plan, model, 1000, 100, 12, 6.0)
    assert with_loss == pytest.approx(expected + 5 * (2.0 + 13 * 0.5))
    assert makespan([5, 4, 3, 3, 1], 2) == 8 and makespan([5, 4], 1) == 9


@pytest.mark.slow  # about a minute on 2 loaded cores: it times GemNet-OC steps, then trains it
def test_calibrated_time_differs_by_family_and_follows_a_measured_run(tmp_path):
    from symscale.data.readers import write_structures
    from symscale.data.toy import toy_structures
    from symscale.study.estimate import estimate_runs
    from symscale.train.loop import train_run

    path = tmp_path / "data.extxyz"
    write_structures(path, toy_structures(92, seed=4, min_atoms=12, max_atoms=24))
    spec = _spec(path, [{"arch": "mpnn", "widths": [4]}, {"arch": "gemnet_oc", "widths": [2]}])
    plans = expand_runs(spec)
    timed = estimate_runs(spec, plans, [str(path)], calibrate=True)
    by_flops = estimate_runs(spec, plans, [str(path)])
    mpnn, gemnet = timed
    assert "ms/step" in gemnet.time_source and by_flops[0].time_source == "flops_per_second"
    # seconds per FLOP differ between families by more than 2x: one FLOP rate for both cannot say so
    timed_ratio, flops_ratio = gemnet.time_s / mpnn.time_s, by_flops[1].time_s / by_flops[0].time_s
    assert gemnet.time_s > 3 * mpnn.time_s and not 0.5 < timed_ratio / flops_ratio < 2.0
    start = time.perf_counter()
    assert train_run(plans[1].config, tmp_path / "run", progress=False).status == "finished"
    wall = time.perf_counter() - start
    predicted = gemnet.time_s - calibration.RUN_OVERHEAD_S  # in-process: no worker to start
    assert 0.5 * wall < predicted < 2.0 * wall, (predicted, wall)  # a loose band: the machine's load moves
