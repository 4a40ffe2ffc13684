"""One training run as the study does it: `train_run(config, out_dir)`.

A single pass (or `epochs` passes) over a nested training prefix in a seeded order, batch 64 structures,
schedule-free AdamW with muP groups, the study's loss, evaluations on the fixed validation set at log-spaced
points (with the averaged weights), compute accounting (atoms D, FLOPs C raw and corrected, device seconds),
checkpoints, and resumption. The run directory's layout, status schema, metrics log and lock belong to
`symscale.rundir`; the data of a run is resolved by `symscale.data.prefix`, the learning-rate search is
`symscale.train.tune`.

Rerunning with the same directory resumes from checkpoints/last.pt (the metrics after it are recomputed);
on CPU only with the torch thread count it started with (recorded in run.json as `threads`, see
`check_threads`);
a finished run returns at once; a different configuration is a `SymscaleError` and nothing is written; a
directory whose lock a live process holds (another `symscale train`, a study worker) is refused.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from symscale import rundir
from symscale.config import RunConfig
from symscale.data.graph import GraphBatch
from symscale.data.loader import BatchLoader, LoaderWorkers, collate_indices
from symscale.data.prefix import RunData, resolve_data
from symscale.data.stats import DatasetStats, check_validation_elements, compute_stats, count_elements
from symscale.errors import SymscaleError, filesystem_fault
from symscale.models.registry import build
from symscale.train import checkpoint as ckpt_io
from symscale.train import precision
from symscale.train.compilation import CompiledForward, compiled_forward
from symscale.train.compute import DeviceClock, FlopModel, fit_flop_model, flop_sizes
from symscale.train.evaluation import eval_steps, evaluate
from symscale.train.loss import force_field_loss
from symscale.train.optim import averaged_weights, build_optimizer, clip_gradients_, effective_warmup
from symscale.train.progress import ExtraLoggers, Progress
from symscale.train.symmetry import augment_batch, symmetry_loss

logger = logging.getLogger(__name__)

METRIC_KEYS = (
    "step", "epoch", "run_fraction", "structures_seen", "atoms_seen", "flops", "flops_raw", "device_seconds",
    "train_loss", "val_loss", "val_energy_loss", "val_force_loss", "energy_mae_mev_per_atom",
    "force_mae_mev_per_A", "force_cos",
)  # fmt: skip
_RUN_FILES = ("config.yaml", "status.json", "metrics.jsonl", "checkpoints")


@dataclass(frozen=True)
class RunResult:
    """What `train_run` returns: the run's status and its last metrics line (None before any evaluation)."""

    out_dir: Path
    status: str  # "finished" | "failed"
    reason: str | None
    steps: int
    total_steps: int
    num_parameters: int | None
    final: dict | None


# ---------------------------------------------------------------- run directory


def _existing_run(config: RunConfig, out: Path) -> RunResult | None:
    """None to (re)start; a RunResult for a finished run; a SymscaleError for a conflicting directory."""
    if not out.exists():
        return None
    if not out.is_dir():
        raise SymscaleError(f"output path {out} exists and is not a directory")
    if not (out / rundir.CONFIG).exists():
        if any(out.iterdir()):
            raise SymscaleError(f"output directory {out} is not empty and holds no symscale run; choose another --out")
        return None
    saved = RunConfig.from_yaml(out / rundir.CONFIG)
    diffs = config.differences(saved)
    if diffs:
        raise SymscaleError(
            f"run directory {out} holds a run with a different config ({', '.join(diffs)} differ); "
            "nothing was changed: use another --out or the same settings"
        )
    status = rundir.read_status(out)
    if status["status"] != "finished":
        return None
    metrics = rundir.read_metrics(out)
    run = rundir.read_json(out / rundir.RUN_INFO)
    return RunResult(
        out, "finished", None, status.get("step", 0), status.get("total_steps", 0), run.get("N"),
        metrics[-1] if metrics else None,
    )  # fmt: skip


def _batches(dataset, indices: np.ndarray, size: int, config: RunConfig, dtype, device) -> list[GraphBatch]:
    d = config.data
    return [
        collate_indices(dataset, indices[a : a + size], d.cutoff, d.max_neighbors, dtype).to(device)
        for a in range(0, len(indices), size)
    ]


# ---------------------------------------------------------------- the run


def model_options(config: RunConfig, stats: DatasetStats | None = None, elements: list[int] | None = None) -> dict:
    """The keyword arguments of `models.registry.build(config.arch, config.width, **options)`: graph, force
    mode, the family's overrides and, with `stats`, the element energies and force scale (eV, eV/A) of the
    training prefix. `elements` defaults to the prefix's (or [1] without stats: a shape check)."""
    if elements is None:
        elements = list(stats.elements) if stats is not None else [1]
    options = {
        "elements": elements, "cutoff": config.data.cutoff, "max_neighbors": config.data.max_neighbors,
        "forces": config.forces, **dict(config.model_overrides),
    }  # fmt: skip
    if stats is not None:
        options.update(element_energies=stats.element_energies, force_scale=stats.force_rms)
    return options


def check_model_config(config: RunConfig) -> None:
    """Build the model on the meta device (no memory, no data) so that an unknown arch, a width that gives no
    channels or a bad family override fails before anything is read or written."""
    with torch.device("meta"):
        model = build(config.arch, config.width, **model_options(config))
    if model.num_parameters() == 0 or any(p.numel() == 0 for p in model.parameters()):
        raise SymscaleError.invalid(f"width for arch {config.arch!r}", config.width, "a width that gives channels")


def check_threads(config: RunConfig, out: Path) -> None:
    """Refuse to resume a CPU run with another torch thread count than it started with (run.json `threads`).

    Measured (toy data, one batch of 32 structures, forward + backward, torch 2.13 CPU): gemnet_oc at width
    12 gives different gradients with 1 and 2 threads in all 329 tensors (max relative difference 4e-5;
    each count repeats bit for bit), and `torch.use_deterministic_algorithms(True)` does not change that
    (it pins scatter and index kernels, not how a reduction is split between threads); mpnn (16, 32), egnn
    (16) and esen (4) gave identical weights after 50 steps or gradients. So the count stays free and is
    recorded rather than forced to one (one thread would cost every multi-core run its parallelism), and it
    is not hashed into the run id (existing ids stay): a resumed run must use the count it started with,
    which the study's engines do by themselves (`study.executors`). On CUDA the CPU thread count does not
    change the kernels, and a run's older run.json without `threads` is not checked."""
    last = out / rundir.CHECKPOINTS / "last.pt"
    recorded = rundir.read_json(out / rundir.RUN_INFO).get("threads")
    if recorded is None or not last.exists() or _device(config).type != "cpu":
        return
    if int(recorded) != torch.get_num_threads():
        raise SymscaleError(
            f"run directory {out} was trained with {recorded} torch threads, this process has "
            f"{torch.get_num_threads()}: CPU results depend on the thread count; resume with --threads {recorded}"
        )


def _device(config: RunConfig) -> torch.device:
    name = config.runtime.device
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise SymscaleError.invalid("device", "cuda", "cpu (no CUDA device is available)")
    return torch.device(name)


def run_mode(config: RunConfig) -> str:
    """The study's symmetry mode of a run: architecture | augmentation | symmetry_loss | multi_epoch."""
    t = config.training
    if t.symmetry_loss_rotations:
        return "symmetry_loss"
    if t.epochs > 1:
        return "multi_epoch"
    return "augmentation" if t.augment != "none" else "architecture"


class _Run:
    """State of one run between setup and the end (a class so that the steps stay short functions)."""

    def __init__(self, config: RunConfig, out: Path, data: RunData, stats: DatasetStats, progress: bool):
        self.config, self.out, self.data, self.stats = config, out, data, stats
        rt, tr = config.runtime, config.training
        self.device = _device(config)
        self.dtype = torch.float64 if rt.dtype == "float64" else torch.float32
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = rt.tf32
            torch.backends.cudnn.allow_tf32 = rt.tf32
        check_validation_elements(stats, count_elements(data.dataset, data.val))  # before the first step
        elements = list(stats.elements)
        torch.manual_seed(config.seed)
        model = build(config.arch, config.width, **model_options(config, stats, elements))
        self.model = model.to(device=self.device, dtype=self.dtype).train()
        self.n_params = self.model.num_parameters()
        self.forward = compiled_forward(self.model, rt.compile)  # the model, or its compiled forward
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]  # clipped every step
        self.steps_per_epoch = math.ceil(len(data.train) / tr.batch_size)
        self.total_steps = tr.epochs * self.steps_per_epoch
        self.optimizer = build_optimizer(
            self.model, tr.lr, weight_decay=tr.weight_decay, betas=tr.betas,
            warmup_steps=effective_warmup(tr.warmup_steps, self.total_steps),
        )  # fmt: skip
        ev = config.evaluation
        self.eval_at = eval_steps(self.total_steps, ev.eval_points, ev.eval_first_fraction)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.step = 0
        self.counters = {"structures_seen": 0, "atoms_seen": 0, "flops": 0.0, "flops_raw": 0.0, "device_seconds": 0.0}
        self.loss_sum, self.loss_n = 0.0, 0
        self.val_losses: list[float] = []  # every evaluation's validation loss, oldest first (divergence)
        self.flop_model: FlopModel | None = None
        self.progress_mode = config.runtime.progress if progress else "off"
        self.val_batches = _batches(data.dataset, data.val, ev.eval_batch_size, config, self.dtype, self.device)
        self.equivariance_batch = None
        self.loader_workers = None  # data.loader.LoaderWorkers, started by the first pass that needs them
        sym = getattr(self.model, "symmetry", None)
        if ev.equivariance_structures and sym is not None and not sym.rotation_equivariant:
            idx = data.val[: ev.equivariance_structures]
            self.equivariance_batch = _batches(data.dataset, idx, len(idx), config, self.dtype, self.device)[0]

    # -- loss and one step

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast of the training forward and loss with `runtime.precision: bf16` (`train.precision`)."""
        return precision.autocast(self.device, self.config.runtime.precision)

    def loss(self, batch: GraphBatch, generator: torch.Generator, model=None) -> torch.Tensor:
        """The training loss of a batch: augmentation, the study's loss, and the symmetry loss if asked for."""
        model = self.forward if model is None else model
        tr, force_rms = self.config.training, self.stats.force_rms

        def loss_of(b: GraphBatch) -> torch.Tensor:
            return force_field_loss(model(b), b, force_rms, tr.energy_weight, tr.force_weight).total

        with self.autocast():
            b = augment_batch(batch, tr.augment, generator)
            loss = loss_of(b)
            if tr.symmetry_loss_rotations:
                loss = loss + tr.symmetry_loss_weight * symmetry_loss(loss_of, b, tr.symmetry_loss_rotations, generator)
        return loss

    def train_step(self, batch: GraphBatch) -> float:
        loss = self.loss(batch, self.generator)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise NonFiniteLoss(f"non-finite training loss ({value}) at step {self.step + 1}")
        loss.backward()
        clip_gradients_(self.trainable, self.config.training.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return value

    # -- compute accounting

    def measure_flops(self, loader_batches: list[GraphBatch]) -> FlopModel:
        """Fit the FLOP model on a copy of the model (no state of the run changes)."""
        model = copy.deepcopy(self.model)
        gen = torch.Generator().manual_seed(12345)

        def step(b: GraphBatch) -> None:
            self.loss(b, gen, model).backward()

        def forward(b: GraphBatch) -> None:
            with torch.no_grad() if self.config.forces == "direct" else contextlib.nullcontext(), self.autocast():
                model(b)

        return fit_flop_model(step, forward, loader_batches, graph_free=getattr(model, "graph_free", False))

    # -- evaluation and checkpoints

    def evaluate(self) -> dict:
        ev, tr = self.config.evaluation, self.config.training
        with averaged_weights(self.optimizer, self.model):  # in float32 at any precision (`train.precision`)
            metrics = evaluate(
                self.model, self.val_batches, self.stats.force_rms, energy_weight=tr.energy_weight,
                force_weight=tr.force_weight, equivariance_batch=self.equivariance_batch, forward=self.forward,
                equivariance_rotations=ev.equivariance_rotations,
            )  # fmt: skip
        line = {
            "step": self.step,
            "epoch": (self.step - 1) // self.steps_per_epoch if self.step else 0,
            "run_fraction": self.step / self.total_steps,  # the share of this run done
            **self.counters,
            "train_loss": self.loss_sum / max(self.loss_n, 1),
            **metrics,
        }
        self.loss_sum, self.loss_n = 0.0, 0
        return line

    def checkpoint_dict(self, finished: bool) -> dict:
        rng = {"torch": torch.get_rng_state(), "generator": self.generator.get_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "config": self.config.to_dict(),
            "config_hash": self.config.config_hash(),
            "model": self.model.model_config(),
            "model_state": self.model.state_dict(),
            "optimizer_state": self.optimizer.state_dict(),
            "stats": self.stats.to_dict(),
            "position": {
                "step": self.step,
                "epoch": self.step // self.steps_per_epoch,
                "batch_in_epoch": self.step % self.steps_per_epoch,
                "total_steps": self.total_steps,
                "finished": finished,
            },
            "counters": dict(self.counters),
            "rng": rng,
            "flop_model": None if self.flop_model is None else self.flop_model.to_dict(),
            "provenance": ckpt_io.provenance(self.device, precision.describe(self.config.runtime, self.device)),
        }

    def save(self, name: str, finished: bool = False) -> None:
        """Checkpoint with the averaged weights (optimizer in eval mode while saving)."""
        with averaged_weights(self.optimizer, self.model):
            ckpt_io.save_checkpoint(self.out / "checkpoints" / name, self.checkpoint_dict(finished))

    def restore(self, ckpt: dict) -> None:
        """Load weights (x), optimizer state (saved in eval mode), counters, RNG; back to train mode (y)."""
        self.model.load_state_dict(ckpt["model_state"])
        self.optimizer.load_state_dict(ckpt["optimizer_state"])
        self.optimizer.train()
        self.model.train()
        self.step = int(ckpt["position"]["step"])
        self.counters.update(ckpt["counters"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        self.generator.set_state(ckpt["rng"]["generator"])
        if "cuda" in ckpt["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state_all(ckpt["rng"]["cuda"])
        if ckpt.get("flop_model"):
            self.flop_model = FlopModel.from_dict(ckpt["flop_model"])


class NonFiniteLoss(RuntimeError):
    """A NaN or infinite training loss: the run stops with status failed."""


class Diverged(RuntimeError):
    """A validation loss that says the run diverged (see `divergence`): the run stops with status failed."""


def divergence(losses: list[float], factor: float, patience: int) -> str | None:
    """Why the validation losses so far (oldest first) say a run diverged, or None.

    Diverged: the last loss is not finite; or it is above `factor` x the first evaluation's; or it rose at
    each of the last `patience` evaluations (0: never) and is now above the first evaluation's (a run that
    overfits, multi-epoch, rises too but stays below where it started).
    """
    if not losses:
        return None
    first, last = losses[0], losses[-1]
    if not math.isfinite(last):
        return f"diverged: non-finite validation loss ({last}) at evaluation {len(losses)}"
    if last > factor * first:
        return f"diverged: validation loss {last:.4g} above {factor:g} x its first evaluation ({first:.4g})"
    recent = losses[-patience - 1 :]
    if patience and len(recent) == patience + 1 and all(b > a for a, b in zip(recent, recent[1:])) and last > first:
        return (
            f"diverged: validation loss rose at {patience} evaluations in a row ({recent[0]:.4g} -> {last:.4g}), "
            f"above its first evaluation ({first:.4g})"
        )
    return None


def _epoch_order(train: np.ndarray, seed: int, epoch: int) -> np.ndarray:
    """The training prefix in the seeded order of one epoch."""
    return train[np.random.default_rng([int(seed), int(epoch)]).permutation(len(train))]


def _loader(run: _Run, epoch: int, start_batch: int) -> BatchLoader:
    d, workers = run.config.data, run.config.runtime.loader_workers
    order = _epoch_order(run.data.train, run.config.seed, epoch)
    if workers and run.loader_workers is None:  # started once per run, reused by every pass; closed at its end
        run.loader_workers = LoaderWorkers(
            run.data.dataset, workers, cutoff=d.cutoff, max_neighbors=d.max_neighbors, dtype=run.dtype,
            prefetch=d.prefetch,
        )  # fmt: skip
    return BatchLoader(
        run.data.dataset, order, run.config.training.batch_size, cutoff=d.cutoff, max_neighbors=d.max_neighbors,
        dtype=run.dtype, start_batch=start_batch, prefetch=d.prefetch, pool=run.loader_workers,
    )  # fmt: skip


def _run_json(run: _Run) -> dict:
    c = run.config
    kappa, kappa_raw = run.flop_model.kappa(run.n_params) if run.flop_model else (None, None)
    return {
        "arch": c.arch,
        "width": c.width,
        "N": run.n_params,
        "kappa": kappa,
        "kappa_raw": kappa_raw,
        "seed": c.seed,
        "mode": run_mode(c),
        "prefix": c.data.prefix,
        "symmetry": dict(vars(run.model.symmetry)) if hasattr(run.model, "symmetry") else None,
        "dataset": run.data.description,
        "n_total": run.data.n_total,
        "n_train": len(run.data.train),
        "n_val": len(run.data.val),
        "val_split": run.data.split,
        "atoms_per_structure": run.stats.atoms_per_structure,
        "total_steps": run.total_steps,
        "eval_steps": run.eval_at,
        "config_hash": c.config_hash(),
        "threads": torch.get_num_threads(),  # CPU results depend on it: a resume must use the same (check_threads)
        "flop_model": run.flop_model.to_dict() if run.flop_model else None,
        "provenance": ckpt_io.provenance(run.device, precision.describe(c.runtime, run.device)),
    }


def _setup(config: RunConfig, out: Path, dataset, progress: bool) -> tuple[_Run, dict | None]:
    data = resolve_data(config, dataset)
    last = out / rundir.CHECKPOINTS / "last.pt"
    ckpt = ckpt_io.load_checkpoint(last) if last.exists() else None
    if ckpt is not None:
        stats = DatasetStats.from_dict(ckpt["stats"])
    else:
        d = config.data
        stats = compute_stats(
            data.dataset, data.train, max_samples=d.stats_max_samples, cutoff=d.cutoff,
            max_neighbors=d.max_neighbors, seed=d.split_seed,
        )  # fmt: skip
    return _Run(config, out, data, stats, progress), ckpt


def _start_fresh(run: _Run) -> None:
    out, rt = run.out, run.config.runtime
    out.mkdir(parents=True, exist_ok=True)
    rundir.write_text(out / rundir.CONFIG, run.config.to_yaml())
    run.stats.save(out / rundir.STATS)
    rundir.write_text(out / rundir.METRICS, "")
    rundir.write_text(out / rundir.TRAIN_LOG, "")
    if rt.compute_accounting:
        first = _loader(run, 0, 0)
        sample = [first.batch(b).to(run.device) for b in range(min(rt.flop_samples, len(first)))]
        run.flop_model = run.measure_flops(sample)
    rundir.write_json(out / rundir.RUN_INFO, _run_json(run))


def _train(run: _Run, progress: Progress, loggers: ExtraLoggers) -> dict | None:
    """The loop over epochs and batches from the run's position; returns the last metrics line."""
    clock = DeviceClock(run.device, run.counters["device_seconds"])
    eval_set, ev = set(run.eval_at), run.config.evaluation
    last_line = None
    for epoch in range(run.step // run.steps_per_epoch, run.config.training.epochs):
        start = run.step - epoch * run.steps_per_epoch
        for batch in _loader(run, epoch, start):
            batch = batch.to(run.device)
            with clock:
                value = run.train_step(batch)
            run.step += 1
            run.loss_sum, run.loss_n = run.loss_sum + value, run.loss_n + 1
            _count(run, batch, clock)
            progress.update(run.step, batch.num_atoms, value)
            if run.step in eval_set:
                last_line = run.evaluate()
                rundir.append_metrics(run.out, last_line)
                loggers.write(last_line)
                run.val_losses.append(float(last_line["val_loss"]))
                why = divergence(run.val_losses, ev.divergence_factor, ev.divergence_patience)
                if why is not None:
                    raise Diverged(f"{why} at step {run.step}")
                progress.log(
                    f"eval step {run.step}/{run.total_steps} val_loss {last_line['val_loss']:.5g} "
                    f"force_mae {last_line['force_mae_mev_per_A']:.4g} meV/A"
                )
                k = run.eval_at.index(run.step) + 1
                if ev.checkpoint_every and k % ev.checkpoint_every == 0 and run.step < run.total_steps:
                    run.save("last.pt")
    return last_line


def _count(run: _Run, batch: GraphBatch, clock: DeviceClock) -> None:
    c = run.counters
    c["structures_seen"] += batch.num_structures
    c["atoms_seen"] += batch.num_atoms
    c["device_seconds"] = clock.seconds
    if run.flop_model is not None:
        corrected, raw = run.flop_model.step(*flop_sizes(batch, getattr(run.model, "graph_free", False)))
        c["flops"] += corrected
        c["flops_raw"] += raw


def _is_oom(err: BaseException) -> bool:
    if isinstance(err, getattr(torch, "OutOfMemoryError", ())):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def train_run(config: RunConfig, out_dir: str | os.PathLike, *, progress: bool = True, dataset=None) -> RunResult:
    """Train (or resume, or return a finished) run in `out_dir`; see the module docstring.

    `dataset`: an already opened dataset (any object with len and [i] -> Structure) to use instead of
    `config.data.source` (tests, benchmarks). Raises `SymscaleError` for bad input before writing anything;
    a non-finite loss or out-of-memory ends the run with status "failed" (returned, not raised). The run
    holds its directory's lock throughout: a second process on the same directory is refused (SymscaleError)."""
    out = Path(out_dir)
    check_model_config(config)
    done = _existing_run(config, out)
    if done is not None:  # finished: returned without taking the lock
        return done
    out.parent.mkdir(parents=True, exist_ok=True)
    with rundir.RunLock(out).held():
        done = _existing_run(config, out)  # again under the lock: another owner may have finished it
        return done if done is not None else _train_locked(config, out, dataset, progress)


def _train_locked(config: RunConfig, out: Path, dataset, progress: bool) -> RunResult:
    if config.runtime.threads:
        torch.set_num_threads(config.runtime.threads)
    check_threads(config, out)
    run, ckpt = _setup(config, out, dataset, progress)
    if ckpt is not None:
        run.restore(ckpt)
        rundir.keep_metrics(out, run.step)  # drops a torn last line too
        run.val_losses = [float(m.get("val_loss", math.nan)) for m in rundir.read_metrics(out)]
    else:
        _start_fresh(run)
    status = {"step": run.step, "total_steps": run.total_steps, "config_hash": config.config_hash()}
    rundir.write_status(out, "running", **status)
    prog = Progress(out / rundir.TRAIN_LOG, run.total_steps, run.step, run.progress_mode, config.runtime.log_every_s)
    loggers = ExtraLoggers(
        out, config.runtime.tensorboard, config.runtime.wandb, out.name, config.to_dict(), start_step=run.step
    )
    prog.log(f"{'resume' if ckpt else 'start'} {config.arch} width {config.width} N {run.n_params} at step {run.step}")
    try:
        _warm_up(run, prog)
        last = _train(run, prog, loggers)
        run.save("final.pt", finished=True)  # inside the try: a full disk here is a failed run, not `running`
        run.save("last.pt", finished=True)
    except (NonFiniteLoss, Diverged) as err:
        return _fail(run, str(err), prog)
    except Exception as err:  # recorded in status.json, then re-raised unless it is an out-of-memory error
        if not _is_oom(err):
            fault = filesystem_fault(err, f"at step {run.step}")
            why = rundir.STOPPED_BY_FILESYSTEM + fault if fault else f"{type(err).__name__}: {err}"
            _record_failure(run, why)  # a refused write (disk full) leaves the run resumable by a study
            raise
        return _fail(run, f"out of memory at step {run.step + 1}: {str(err).splitlines()[0]}", prog)
    finally:
        prog.close()
        loggers.close()
        if run.loader_workers is not None:
            run.loader_workers.close()
    rundir.write_status(out, "finished", None, **{**status, "step": run.step})
    prog.log(f"finished at step {run.step}")
    last = last or (rundir.read_metrics(out) or [None])[-1]
    return RunResult(out, "finished", None, run.step, run.total_steps, run.n_params, last)


def _warm_up(run: _Run, prog: Progress) -> None:
    """Compile the forward before the first step (`runtime.compile`), outside the device clock; one line in
    train.log says how long it took, or why the run trains eagerly."""
    if not isinstance(run.forward, CompiledForward) or not run.val_batches:
        return
    started = time.perf_counter()
    run.forward.warm_up(run.val_batches[0])
    if run.forward.compiled:
        prog.log(f"compiled the forward in {time.perf_counter() - started:.1f} s")
    else:
        prog.log(f"eager: compilation failed or was refused ({run.forward.reason})")


def _record_failure(run: _Run, reason: str) -> None:
    """status.json `failed` with a one-line reason, also on a full disk: the checkpoint writer has removed
    its temporary file by now (that frees the space a small status file needs); when even that write fails
    the status is rewritten in place, so that it never stays `running`."""
    reason = " ".join(reason.split())[:500]
    try:
        rundir.write_status(run.out, "failed", reason, step=run.step, total_steps=run.total_steps)
    except SymscaleError:
        _overwrite_status_in_place(run.out, reason)


def _overwrite_status_in_place(out: Path, reason: str) -> None:
    """Rewrite status.json in its own blocks (no new file, so no free space needed): `failed` and as much of
    the reason as fits in the old file's length, padded with spaces (valid JSON)."""
    path = out / rundir.STATUS
    with contextlib.suppress(OSError), open(path, "r+b") as fh:
        room = len(fh.read())
        for cut in range(len(reason), -1, -1):
            text = json.dumps({"status": "failed", "reason": reason[:cut], "updated_utc": rundir.utc_now()})
            if len(text) <= room:
                fh.seek(0)
                fh.write(text.ljust(room).encode())
                fh.flush()
                os.fsync(fh.fileno())
                return


def _fail(run: _Run, reason: str, prog: Progress) -> RunResult:
    logger.warning("run %s failed: %s", run.out, reason)
    _record_failure(run, reason)  # first: a full disk may refuse the log line below, never the status
    with contextlib.suppress(OSError):
        prog.log(f"failed: {reason}")
    metrics = rundir.read_metrics(run.out)
    return RunResult(
        run.out, "failed", reason, run.step, run.total_steps, run.n_params, metrics[-1] if metrics else None
    )
