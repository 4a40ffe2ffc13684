"""Timing calibration of a dry run: a few real training steps of each family, on this machine, now.

One FLOP rate for every family is wrong by several times (the deeper GemNet-OC spends its time in small
gather and scatter kernels, not in FLOPs), so `symscale study S --dry-run` times each group (family with its
model options; the symmetry mode only multiplies a step) at two widths, its narrowest and its widest with
N <= CALIBRATE_MAX_PARAMS, on batches of the study's own data at the study's batch size and thread count:

    step_s(N)  = s0 + s1 N      seconds of one training step (collation, forward, loss, backward, optimiser)
    eval_s(N)  = e0 + e1 N      seconds of one structure's forward pass at evaluation

through the two widths (s1, e1 >= 0; a single width gives a constant). A run then takes

    time_s = RUN_OVERHEAD_S + (flop_s(N) + steps x step_s(N)) x (M + 1)
             + evaluations x (n_val + equivariance copies) x eval_s(N)

plus the run's reading of its prefix and validation set and its statistics pass (timed per structure on
the study's data when it is there), with M the symmetry-loss rotations and flop_s the run's FLOP-model fit
before its first step (timed too: under FlopCounterMode it costs several steps, most for the deep
GemNet-OC). RUN_OVERHEAD_S (worker start, checkpoints) is a constant, measured on small real runs. Because
the steps are timed under whatever load the machine has, the estimate follows that load; a machine busier
during the study than during the dry run takes longer. The study's wall time is the longest-first schedule
of the runs on its workers.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

log = logging.getLogger(__name__)

CALIBRATE_MAX_PARAMS = {"cpu": 2e5, "cuda": 2e7}  # the wider width timed is the widest with N below this
# Timed steps per width, after WARMUP_STEPS untimed ones: at least MIN_STEPS, until MIN_TIME_S or MAX_STEPS; the
# median step is the estimate (robust to a slow outlier step). Measured on the quickstart, idle: the steps timed
# here are 9-25% slower than the same steps averaged over a whole run (their device_seconds), with the mean of
# 8 steps after one warm-up and with this median alike; the cause is not found and no factor corrects it.
WARMUP_STEPS, MIN_STEPS, MAX_STEPS, MIN_TIME_S = 2, 3, 16, 1.5
RUN_OVERHEAD_S = 3.0  # seconds per run besides its FLOP model, steps and evaluations (worker start, statistics)


@dataclass(frozen=True)
class WidthTiming:
    """Measured seconds of one training step and of one structure's evaluation at one width."""

    width: int
    n_params: int
    step_s: float
    eval_s_per_structure: float
    equivariance_checked: bool = False  # the evaluation also measures the equivariance error (not equivariant)
    flop_model_s: float = 0.0  # the run's FLOP-model fit at its start (FlopCounterMode: slow per operation)


@dataclass(frozen=True)
class TimeModel:
    """Seconds per step and per evaluated structure as lines in N, from the widths timed."""

    timings: tuple[WidthTiming, ...]

    def _line(self, n_params: float, attr: str) -> float:
        pts = sorted(self.timings, key=lambda t: t.n_params)
        lo, hi = pts[0], pts[-1]
        y_lo, y_hi = getattr(lo, attr), getattr(hi, attr)
        if hi.n_params == lo.n_params:
            return max(y_lo, y_hi)
        slope = max(0.0, (y_hi - y_lo) / (hi.n_params - lo.n_params))
        return max(y_lo + slope * (n_params - lo.n_params), min(y_lo, y_hi))

    def step_s(self, n_params: float) -> float:
        return self._line(n_params, "step_s")

    def eval_s(self, n_params: float) -> float:
        return self._line(n_params, "eval_s_per_structure")

    def flop_model_s(self, n_params: float) -> float:
        return self._line(n_params, "flop_model_s")

    @property
    def source(self) -> str:
        widths = ", ".join(f"{t.width} ({t.step_s * 1e3:.0f} ms/step)" for t in self.timings)
        return f"timed at width {widths}"


def _device(plan: Any) -> torch.device:
    name = str(plan.config.runtime.device)
    return torch.device("cuda" if name == "auto" and torch.cuda.is_available() else "cpu" if name == "auto" else name)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_width(plan: Any, structures: Sequence[Any], elements: list[int], threads: int) -> WidthTiming:
    """Time real training steps (collation included) and an evaluation pass of `plan`'s model on `structures`
    (batches of the plan's batch size, cycled), with `threads` torch threads."""
    from symscale.data.graph import collate
    from symscale.models.registry import build
    from symscale.train.loop import model_options
    from symscale.train.loss import force_field_loss
    from symscale.train.optim import build_optimizer, clip_gradients

    cfg, device, before = plan.config, _device(plan), torch.get_num_threads()
    tr, d = cfg.training, cfg.data
    torch.set_num_threads(max(1, threads))
    try:
        torch.manual_seed(0)
        model = build(cfg.arch, cfg.width, **model_options(cfg, elements=elements)).to(device).train()
        optimizer = build_optimizer(model, tr.lr, weight_decay=tr.weight_decay, betas=tr.betas)
        size = tr.batch_size
        chunks = [list(structures[a : a + size]) for a in range(0, max(1, len(structures) - size + 1), size)]

        def step(k: int) -> None:
            batch = collate(chunks[k % len(chunks)], d.cutoff, d.max_neighbors).to(device)
            force_field_loss(model(batch), batch, 1.0, tr.energy_weight, tr.force_weight).total.backward()
            clip_gradients(model, tr.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        for k in range(WARMUP_STEPS):  # allocations, lazy initialisation
            step(k)
        _sync(device)
        start, times = time.perf_counter(), []
        while len(times) < MIN_STEPS or (len(times) < MAX_STEPS and time.perf_counter() - start < MIN_TIME_S):
            t0 = time.perf_counter()
            step(WARMUP_STEPS + len(times))
            _sync(device)
            times.append(time.perf_counter() - t0)
        step_s = statistics.median(times)
        flop_s = _time_flop_model(model, collate(chunks[0], d.cutoff, d.max_neighbors).to(device), cfg)
        eval_s = _time_eval(model, optimizer, structures, cfg, device)
        sym = getattr(model, "symmetry", None)
        checked = bool(cfg.evaluation.equivariance_structures) and sym is not None and not sym.rotation_equivariant
        return WidthTiming(cfg.width, int(model.num_parameters()), step_s, eval_s, checked, flop_s)
    finally:
        torch.set_num_threads(before)


def _time_flop_model(model, batch, cfg) -> float:
    """Seconds of the FLOP-model fit a run makes before its first step (runtime.flop_samples batches; one
    here), or 0 when the run does no compute accounting."""
    from symscale.train.compute import fit_flop_model
    from symscale.train.loss import force_field_loss

    if not cfg.runtime.compute_accounting:
        return 0.0
    tr = cfg.training
    grad = torch.no_grad if cfg.forces == "direct" else torch.enable_grad

    def step(b):
        force_field_loss(model(b), b, 1.0, tr.energy_weight, tr.force_weight).total.backward()

    def forward(b):
        with grad():
            model(b)

    t0 = time.perf_counter()
    fit_flop_model(step, forward, [batch] * cfg.runtime.flop_samples, graph_free=getattr(model, "graph_free", False))
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - t0


def _time_eval(model, optimizer, structures, cfg, device) -> float:
    """Seconds per structure of the evaluation's forward pass (batches of eval_batch_size, collated once)."""
    from symscale.data.graph import collate

    d, size = cfg.data, cfg.evaluation.eval_batch_size
    batch = collate(list(structures[:size]), d.cutoff, d.max_neighbors).to(device)
    optimizer.eval()
    model.eval()
    grad = torch.enable_grad() if cfg.forces != "direct" else torch.no_grad()
    with grad:
        model(batch)  # warm-up
        _sync(device)
        t0 = time.perf_counter()
        model(batch)
        _sync(device)
    return (time.perf_counter() - t0) / batch.num_structures


@dataclass(frozen=True)
class DataTiming:
    """Seconds per structure of what a run does with its data before the first step: reading a structure
    from the dataset (the prefix and the validation set are read once) and the statistics pass."""

    read_s: float = 0.0
    stats_s: float = 0.0

    def run_s(self, n_prefix: int, n_val: int, max_stats_samples: int) -> float:
        return (n_prefix + n_val) * self.read_s + min(n_prefix, max_stats_samples) * self.stats_s


def time_data(dataset: Any, count: int = 200) -> DataTiming:
    """Time reading `count` structures of `dataset` and the statistics pass over them (None: free)."""
    if dataset is None or not len(dataset):
        return DataTiming()
    from symscale.data.stats import compute_stats

    idx = list(range(0, len(dataset), max(1, len(dataset) // count)))[:count]
    t0 = time.perf_counter()
    for i in idx:
        dataset[i]
    read_s = (time.perf_counter() - t0) / len(idx)
    t0 = time.perf_counter()
    compute_stats(dataset, idx, max_samples=len(idx))
    return DataTiming(read_s, (time.perf_counter() - t0) / len(idx))


def timed_widths(widths_n: dict[int, int], device: str) -> list[int]:
    """The widths a group is timed at: its narrowest and its widest with N <= CALIBRATE_MAX_PARAMS."""
    ordered = sorted(widths_n, key=lambda w: widths_n[w])
    cap = CALIBRATE_MAX_PARAMS.get(device, CALIBRATE_MAX_PARAMS["cpu"])
    small = [w for w in ordered if widths_n[w] <= cap] or ordered[:1]
    return list(dict.fromkeys([small[0], small[-1]]))


def run_seconds(
    plan: Any,
    model: TimeModel,
    n_params: int,
    n_train: int,
    n_val: int,
    multiplier: float,
    data: DataTiming | None = None,
) -> float:
    """Predicted wall seconds of one run (see the module docstring); `data`: reading and statistics."""
    from symscale.train.evaluation import eval_steps

    tr, ev = plan.config.training, plan.config.evaluation
    structures = max(1, round(n_train * float(plan.config.data.prefix or plan.prefix)))
    steps = tr.epochs * math.ceil(structures / tr.batch_size)
    evals = len(eval_steps(steps, ev.eval_points, ev.eval_first_fraction))
    checked = any(t.equivariance_checked for t in model.timings)
    per_eval = n_val + (ev.equivariance_structures * max(1, ev.equivariance_rotations) if checked else 0)
    setup = RUN_OVERHEAD_S + model.flop_model_s(n_params) * multiplier
    if data is not None:
        setup += data.run_s(structures, n_val, plan.config.data.stats_max_samples)
    return setup + steps * model.step_s(n_params) * multiplier + evals * per_eval * model.eval_s(n_params)


def makespan(times: Sequence[float], workers: int) -> float:
    """Wall seconds of running `times` longest first on `workers` parallel workers."""
    loads = [0.0] * max(1, workers)
    for t in sorted(times, reverse=True):
        loads[loads.index(min(loads))] += t
    return max(loads)
