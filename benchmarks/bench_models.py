"""Training-step throughput of every symscale family, side by side with MACE and fairchem's eSEN.

One full training step = forward, loss (per-atom energy L1 + mean per-atom force-error norm, the study's
loss), backward, Adam step (muP groups for symscale). Measured on batches of 64 toy molecules of 10-30 atoms
(`toy_structures(..., min_atoms=10, max_atoms=30)`, elements H C N O), float32, on CPU threads; the
same batch (seed 0) is repeated so that the FLOPs counted on it are exactly those of each timed step.

Reported per (library, arch, width): N, atoms/s, step time, FLOPs per step (forward + backward, counted by
torch.utils.flop_counter.FlopCounterMode), the fraction of the machine's fp32 matmul peak (190 GFLOP/s on
2 threads, measured for this project), and the peak memory of a step (growth of the process's peak RSS during
any step, MiB, over the peak after building the model and the batch; each configuration runs in its own
process so that the peak is its own).

Baselines run in separate interpreters because their pinned dependencies conflict (mace-torch pins
e3nn==0.4.4; symscale's esen uses e3nn 0.6): pass `--mace-python /path/to/venv/bin/python` (a venv created
with --system-site-packages, so it uses the same torch 2.13 build) and `--fairchem-python` (fairchem-core 2.24
installed with --no-deps plus the few pure-Python packages its eSEN imports need; it requires torch~=2.13.0, but
its full dependency set pulls CUDA packages, hence --no-deps). Every configuration sees the same
batches (same seed). A baseline that cannot be imported is recorded with the reason it was skipped.

    python benchmarks/bench_models.py                      # all families, two widths each
    python benchmarks/bench_models.py --mace-python <mace-venv>/bin/python --out benchmarks/results/models.json
    python benchmarks/bench_models.py --archs esen --esen-preset paper --fairchem-python <venv>/bin/python \
        --fairchem-widths 32 --timeout 1800 --merge          # both eSENs at the reference study's 12 layers

Writes JSON with hardware, versions and git SHA.

symscale's eSEN against fairchem's (issue 15 item 4: at least 1.5x faster at widths 16, 32, 64, lmax 2 and 4,
2 and 12 layers): `--esen-vs-fairchem` runs that grid with the `paper` preset's channels (hidden = edge 32, 16
Gaussians, mmax 2, S2-grid activation; fairchem's grids at its default size), on the same batch for both, each
configuration `--repeats` rounds of one fresh process per library (alternating which goes first); the speedup of
a round is fairchem's step time over symscale's, reported as median, min and max over rounds with the machine's
load average beside every run, and the same ratio in CPU time of each process (`speedup_cpu_time`, which a
loaded machine moves far less than wall time). `--quick` only checks that it runs (width 8, 4 structures;
timings meaningless).

    python benchmarks/bench_models.py --esen-vs-fairchem --quick --fairchem-python <venv>/bin/python --threads 1
    python benchmarks/bench_models.py --esen-vs-fairchem --fairchem-python <venv>/bin/python --repeats 3 \
        --threads 2 --timeout 3600                           # on an idle machine (uptime below 0.3)
    python benchmarks/bench_models.py --esen-vs-fairchem --fairchem-python <venv>/bin/python --grid-layers 12 \
        --grid-lmax 2 --repeats 2 --out benchmarks/results/esen_vs_fairchem_12layers.json   # a part of the grid

The JSON is rewritten after every configuration (`complete: false` until the whole grid has run), so a grid
stopped part-way keeps what it measured.

The fairchem venv: `python -m venv --system-site-packages <venv>`, then `<venv>/bin/pip install --no-deps`
fairchem-core==2.24.0 monty hydra-core omegaconf antlr4-python3-runtime==4.9.3 torchtnt pyre-extensions tabulate
backoff huggingface_hub httpx2 (each with --no-deps, so none can pull another torch; the rest of what its eSEN
imports, ase, e3nn, lmdb, numpy, submitit, comes from the system site; hydra needs the 4.9 antlr runtime).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import cpu_model, write_json  # benchmarks/ is the script's own folder (stdlib only, for any Python)

PEAK_FLOPS = 190e9  # fp32 matmul peak on 2 threads of the Intel machine of issue 4, FLOP/s (the AMD EPYC: about 106e9)
BATCH_SIZE = 64
ELEMENTS = (1, 6, 7, 8)


def make_batches(n_batches: int, seed: int = 0, batch_size: int = BATCH_SIZE):
    import torch

    from symscale.data.graph import collate
    from symscale.data.toy import toy_structures

    structures = toy_structures(batch_size * n_batches, seed=seed, min_atoms=10, max_atoms=30)
    return [
        collate(structures[k * batch_size : (k + 1) * batch_size], cutoff=6.0, max_neighbors=30, dtype=torch.float32)
        for k in range(n_batches)
    ]


def loss_fn(energy, forces, batch):
    per_atom = ((energy - batch.energy) / batch.n_atoms).abs().mean()
    return per_atom + (forces - batch.forces).norm(dim=-1).mean()


# ---- one step per library: returns (model, step(batch) -> None) ---------------------------------------------


def esen_options(preset: str = "cpu", activation: str = "grid", lmax: int | None = None) -> dict:
    """symscale esen options of a benchmark preset: "cpu" = the family defaults (the `cpu` ladder: lmax 2,
    3 layers, hidden = edge channels = 8), "paper" = the `paper` ladder's (lmax 4, 12 layers, hidden = edge
    channels = 32, the reference study's eSEN); `activation` grid (S2 grid, eSEN's) or gate; `lmax` overrides."""
    import inspect

    from symscale.models import esen
    from symscale.models.ladders import ladder_overrides

    defaults = {k: v.default for k, v in inspect.signature(esen.ESEN).parameters.items()}
    options = {k: defaults[k] for k in ("lmax", "mmax", "num_layers", "num_radial")}
    options.update(hidden_channels=esen.DEFAULT_HIDDEN_CHANNELS, edge_channels=esen.DEFAULT_EDGE_CHANNELS)
    if preset == "paper":
        options.update(ladder_overrides("esen", "paper"))
    options["activation"] = activation
    if lmax is not None:
        options["lmax"] = lmax
    return options


def symscale_step(arch: str, width: int, esen: dict | None = None):
    import torch

    from symscale.models import mup
    from symscale.models.registry import build

    options = dict(esen or esen_options()) if arch == "esen" else {}
    model = build(arch, width, elements=ELEMENTS, **options)
    opt = torch.optim.Adam(mup.param_groups(model, lr=1e-3, weight_decay=0.0))

    def step(batch):
        out = model(batch)
        loss = loss_fn(out.energy, out.forces, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return model, step


def mace_step(arch: str, width: int):
    """MACE (Batatia et al. 2022) with conservative forces: `width` channels, max_ell 3, hidden L = 1,
    correlation 3, 2 interactions, the defaults of mace-torch's MACE-MP "small" recipe otherwise."""
    import numpy as np
    import torch
    from e3nn import o3
    from mace.modules import interaction_classes
    from mace.modules.models import MACE

    model = MACE(
        r_max=6.0,
        num_bessel=8,
        num_polynomial_cutoff=5,
        max_ell=3,
        interaction_cls=interaction_classes["RealAgnosticResidualInteractionBlock"],
        interaction_cls_first=interaction_classes["RealAgnosticResidualInteractionBlock"],
        num_interactions=2,
        num_elements=len(ELEMENTS),
        hidden_irreps=o3.Irreps(f"{width}x0e + {width}x1o"),
        MLP_irreps=o3.Irreps("16x0e"),
        atomic_energies=np.zeros(len(ELEMENTS)),
        avg_num_neighbors=16.0,
        atomic_numbers=list(ELEMENTS),
        correlation=3,
        gate=torch.nn.functional.silu,
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    z_index = torch.full((119,), -1, dtype=torch.long)
    z_index[list(ELEMENTS)] = torch.arange(len(ELEMENTS))

    def to_mace(batch):
        n_edges = batch.edge_index.shape[1]
        ptr = torch.cat([torch.zeros(1, dtype=torch.long), batch.n_atoms.cumsum(0)])
        return {
            "positions": batch.pos.clone(),
            "node_attrs": torch.nn.functional.one_hot(z_index[batch.z], len(ELEMENTS)).float(),
            "edge_index": batch.edge_index,
            "shifts": torch.zeros(n_edges, 3),
            "unit_shifts": torch.zeros(n_edges, 3),
            "cell": torch.zeros(batch.num_structures * 3, 3),
            "batch": batch.batch,
            "ptr": ptr,
            "head": torch.zeros(batch.num_structures, dtype=torch.long),
        }

    def step(batch):
        out = model(to_mace(batch), training=True, compute_force=True)
        loss = loss_fn(out["energy"], out["forces"], batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return model, step


def fairchem_step(arch: str, width: int, esen: dict | None = None):
    """fairchem's eSEN backbone (eSCNMDBackbone, fairchem-core 2.24) with linear energy and direct-force heads,
    at the same configuration as symscale's esen (`esen_options`): `width` sphere channels, its hidden and edge
    channels, lmax, mmax, layers and Gaussians; act_type "s2" with ff_type "grid" for activation "grid", "gate"
    with "spectral" for "gate"; cutoff 6, no dataset embedding. fairchem's grids keep their own default size.
    Edges are symscale's (otf_graph=False), the same for both."""
    import torch
    from ase import Atoms
    from fairchem.core.datasets.atomic_data import AtomicData, atomicdata_list_to_batch
    from fairchem.core.models.uma.escn_md import Linear_Energy_Head, Linear_Force_Head, eSCNMDBackbone

    options = dict(esen or esen_options())
    grid = options["activation"] == "grid"
    backbone = eSCNMDBackbone(
        max_num_elements=100,
        sphere_channels=width,
        lmax=options["lmax"],
        mmax=options["mmax"],
        otf_graph=False,
        max_neighbors=30,
        cutoff=6.0,
        edge_channels=options["edge_channels"],
        num_distance_basis=options["num_radial"],
        direct_forces=True,
        regress_forces=True,
        num_layers=options["num_layers"],
        hidden_channels=options["hidden_channels"],
        act_type="s2" if grid else "gate",
        ff_type="grid" if grid else "spectral",
        use_dataset_embedding=False,
        always_use_pbc=False,
    )
    model = torch.nn.ModuleList([backbone, Linear_Energy_Head(backbone), Linear_Force_Head(backbone)])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    cache = {}

    def to_fairchem(batch):
        if id(batch) not in cache:
            counts = batch.n_atoms.tolist()
            zs, xs = batch.z.split(counts), batch.pos.split(counts)
            items = [
                AtomicData.from_ase(Atoms(numbers=z.numpy(), positions=x.numpy()), r_edges=False, task_name="omol")
                for z, x in zip(zs, xs, strict=True)
            ]
            data = atomicdata_list_to_batch(items)
            data.edge_index = batch.edge_index
            data.cell_offsets = torch.zeros(batch.num_edges, 3)
            data.nedges = torch.bincount(batch.batch[batch.edge_index[1]], minlength=batch.num_structures)
            cache[id(batch)] = data
        return cache[id(batch)]

    def step(batch):
        data = to_fairchem(batch)
        emb = backbone(data)
        energy = model[1](data, emb)["energy"]
        forces = model[2](data, emb)["forces"]
        loss = loss_fn(energy, forces, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return model, step


LIBRARIES = {"symscale": symscale_step, "mace": mace_step, "fairchem": fairchem_step}


# ---- the worker: one configuration in its own process --------------------------------------------------------


def run_worker(
    library: str,
    arch: str,
    width: int,
    steps: int,
    warmup: int,
    threads: int,
    esen: dict | None = None,
    batch_size: int = BATCH_SIZE,
) -> dict:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    # one fixed batch: FLOPs counted on it are exactly those of each timed step
    batch = make_batches(1, batch_size=batch_size)[0]
    esen = dict(esen or esen_options())
    model, step = LIBRARIES[library](arch, width, esen) if arch == "esen" else LIBRARIES[library](arch, width)
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # model and batch built, no step yet
    with FlopCounterMode(display=False) as counter:
        step(batch)
    flops_per_step = counter.get_total_flops()
    for _ in range(warmup):
        step(batch)
    step_times, cpu_times = [], []
    for _ in range(steps):
        t0, c0 = time.perf_counter(), time.process_time()
        step(batch)
        step_times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
    step_s = sum(step_times) / steps
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "library": library,
        "arch": arch,
        "width": width,
        "lmax": esen["lmax"] if arch == "esen" else None,
        "esen_options": esen if arch == "esen" else None,
        "num_parameters": n_params,
        "atoms_per_step": batch.num_atoms,
        "edges_per_step": batch.num_edges,
        "step_s": step_s,
        "step_times_s": step_times,
        "step_cpu_s": sum(cpu_times) / steps,  # CPU time of the process (all its threads): less load-sensitive
        "atoms_per_s": batch.num_atoms / step_s,
        "flops_per_step": flops_per_step,
        "flops_per_s": flops_per_step / step_s,
        "fraction_of_matmul_peak": flops_per_step / step_s / PEAK_FLOPS,
        "peak_step_memory_mib": max(rss_after - rss_before, 0) / 1024,
        "peak_rss_mib": rss_after / 1024,
        "versions": library_versions(library),
        "load_average": os.getloadavg(),
    }


def library_versions(library: str) -> dict:
    """Versions of torch and of the packages the library's model runs on, from the worker's interpreter."""
    from importlib import metadata

    import torch

    names = {"mace": ("mace-torch", "e3nn"), "fairchem": ("fairchem-core", "e3nn")}
    out = {"torch": torch.__version__}
    for name in names.get(library, ()):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def spawn(python: str, library: str, arch: str, width: int, args, esen: dict | None = None) -> dict:
    """Run one configuration in a fresh interpreter `python`; `esen` (options of both eSENs) replaces the
    --esen-* flags."""
    cmd = [python, __file__, "--worker", library, arch, str(width)]
    cmd += ["--steps", str(args.steps), "--warmup", str(args.warmup), "--threads", str(args.threads)]
    cmd += ["--batch-size", str(args.batch_size)]
    if esen is not None:
        cmd += ["--esen-json", json.dumps(esen)]
    else:
        cmd += ["--esen-preset", args.esen_preset, "--esen-activation", args.esen_activation]
    if args.esen_lmax is not None and esen is None:
        cmd += ["--esen-lmax", str(args.esen_lmax)]
    env = dict(os.environ)
    if library == "mace":
        # e3nn 0.4.4 (pinned by mace-torch) loads its own constants file with torch.load, which torch >= 2.6
        # refuses under weights_only=True; the file ships inside e3nn, so plain loading is allowed here
        env["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"
        cmd += ["--steps", str(args.mace_steps), "--warmup", "0"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"library": library, "arch": arch, "width": width, "skipped": f"over {args.timeout} s"}
    if proc.returncode != 0:
        reason = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"library": library, "arch": arch, "width": width, "skipped": reason}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def plan(args) -> list[tuple[str, str, str, int]]:
    """(python, library, arch, width) for every configuration to run."""
    from symscale.errors import SymscaleError
    from symscale.models.ladders import load_ladder
    from symscale.models.registry import get_family, list_archs

    jobs = []
    for arch in args.archs or list_archs():
        try:
            ladder = load_ladder(arch, "cpu")
            widths = [ladder[len(ladder) // 2], ladder[-1]]
        except SymscaleError:
            base = get_family(arch).base_width
            widths = [base // 2, base]
        jobs += [(sys.executable, "symscale", arch, w) for w in widths]
    if args.mace_python:
        jobs += [(args.mace_python, "mace", "mace", w) for w in args.mace_widths]
    if args.fairchem_python:
        jobs += [(args.fairchem_python, "fairchem", "esen", w) for w in args.fairchem_widths]
        if "esen" in (args.archs or list_archs()):  # symscale's esen at fairchem's widths too, for the ratio
            have = {(lib, a, w) for _, lib, a, w in jobs}
            jobs += [
                (sys.executable, "symscale", "esen", w)
                for w in args.fairchem_widths
                if ("symscale", "esen", w) not in have
            ]
    return jobs


def comparisons(results: list[dict]) -> list[dict]:
    """symscale's esen against fairchem's eSEN at equal width: speedup = fairchem step time / symscale's."""
    ours = {
        r["width"]: r for r in results if r.get("library") == "symscale" and r.get("arch") == "esen" and "step_s" in r
    }
    out = []
    for r in results:
        if r.get("library") == "fairchem" and "step_s" in r and r["width"] in ours:
            mine = ours[r["width"]]
            out.append(
                {
                    "arch": "esen",
                    "width": r["width"],
                    "baseline": "fairchem",
                    "symscale_step_s": mine["step_s"],
                    "baseline_step_s": r["step_s"],
                    "speedup": r["step_s"] / mine["step_s"],
                    "memory_ratio": mine["peak_step_memory_mib"] / max(r["peak_step_memory_mib"], 1e-9),
                }
            )
    return out


def _ran(results: list[dict], library: str) -> bool:
    return any(r.get("library") == library and "skipped" not in r for r in results)


def environment() -> dict:
    import torch

    here = Path(__file__).parent
    sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=here)
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, cwd=here
    )
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "processor": cpu_model() or platform.processor(),
        "cpu_count": os.cpu_count(),
        "git_sha": sha.stdout.strip() or None,
        "git_dirty": bool(dirty.stdout.strip()) if dirty.returncode == 0 else None,
        "matmul_peak_flops": PEAK_FLOPS,
        "load_average_start": os.getloadavg(),
    }


# ---- symscale's eSEN against fairchem's: a grid of configurations, repeated, as ratios ------------------------

ESEN_GRID = {"widths": (16, 32, 64), "lmax": (2, 4), "layers": (2, 12)}  # issue 15 item 4
QUICK = {"widths": (8,), "lmax": (2, 4), "layers": (2,), "repeats": 2, "steps": 1, "warmup": 0, "batch_size": 4}
SPEEDUP_TARGET = 1.5  # symscale's eSEN at least this much faster than fairchem's at every configuration


def spread(values: list[float]) -> dict:
    """Median, min and max of repeated measurements, with the values themselves."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "values": values}


def compare_esen(width: int, esen: dict, args) -> dict:
    """Both eSENs at one configuration, `args.repeats` rounds; each round runs each library once in a fresh
    process (alternating which goes first, so a drift in the machine's load hits both), and the speedup of a
    round is fairchem's step time over symscale's in that round."""
    runs: dict[str, list[dict]] = {"symscale": [], "fairchem": []}
    order = [("symscale", sys.executable), ("fairchem", args.fairchem_python)]
    for k in range(args.repeats):
        for library, python in order if k % 2 == 0 else order[::-1]:
            runs[library].append(spawn(python, library, "esen", width, args, esen=esen))
    row = {"width": width, "lmax": esen["lmax"], "num_layers": esen["num_layers"], "esen_options": esen}
    skipped = [f"{r['library']}: {r['skipped']}" for rs in runs.values() for r in rs if "skipped" in r]
    if skipped:
        return {**row, "skipped": skipped[0]}
    for library, rs in runs.items():
        row[library] = {
            "num_parameters": rs[0]["num_parameters"],
            "step_s": spread([r["step_s"] for r in rs]),
            "peak_step_memory_mib": max(r["peak_step_memory_mib"] for r in rs),
            "flops_per_step": rs[0]["flops_per_step"],
            "versions": rs[0]["versions"],
            "load_average": [r["load_average"] for r in rs],
        }
    ratios = [f["step_s"] / s["step_s"] for s, f in zip(runs["symscale"], runs["fairchem"], strict=True)]
    row["speedup"] = spread(ratios)  # fairchem step time / symscale step time, per round
    # the same ratio in CPU time of each process: on a loaded machine it moves far less than wall time
    row["speedup_cpu_time"] = spread(
        [f["step_cpu_s"] / s["step_cpu_s"] for s, f in zip(runs["symscale"], runs["fairchem"], strict=True)]
    )
    row["meets_target"] = min(ratios) >= SPEEDUP_TARGET
    return row


def esen_versus_fairchem(args, write=None) -> dict:
    """The grid of `ESEN_GRID` (or `QUICK`; `--grid-layers/--grid-lmax/--grid-widths` take a part of it): eSEN
    options are the `paper` preset's (hidden = edge channels 32, 16 Gaussians, mmax 2) with lmax and depth from
    the grid; the same batch for both libraries. `write(payload)` is called after every configuration, so that
    a run stopped part-way keeps what it measured (`complete` says whether the whole grid ran)."""
    grid = dict(QUICK if args.quick else ESEN_GRID)
    parts = {"layers": args.grid_layers, "lmax": args.grid_lmax, "widths": args.grid_widths}
    grid.update({key: tuple(chosen) for key, chosen in parts.items() if chosen})
    base = esen_options("paper", args.esen_activation)
    environment_ = environment()
    settings = {
        "grid": {k: list(grid[k]) for k in ("widths", "lmax", "layers")},
        "whole_grid": not any(parts.values()),  # False: --grid-* ran a part of it
        "quick": args.quick,
        "repeats": args.repeats,
        "timed_steps_per_run": args.steps,
        "warmup_steps": args.warmup,
        "threads": args.threads,
        "batch_size_structures": args.batch_size,
        "speedup": f"fairchem step time / symscale step time, per round; target >= {SPEEDUP_TARGET}",
    }
    planned = [(layers, lmax, width) for layers in grid["layers"] for lmax in grid["lmax"] for width in grid["widths"]]
    rows: list[dict] = []

    def payload() -> dict:
        done = [r for r in rows if "speedup" in r]
        everywhere = bool(done) and len(done) == len(planned) and all(r["meets_target"] for r in done)
        return {
            "benchmark": "eSEN training step, symscale against fairchem-core",
            "settings": settings,
            "environment": {**environment_, "load_average_end": os.getloadavg()},
            "complete": len(rows) == len(planned),
            "configurations": rows,
            "meets_target_everywhere": everywhere,
        }

    for layers, lmax, width in planned:
        row = compare_esen(width, {**base, "lmax": lmax, "num_layers": layers}, args)
        rows.append(row)
        print(describe(row), flush=True)
        if write is not None:
            write(payload())
    return payload()


def describe(row: dict) -> str:
    head = f"eSEN {row['num_layers']:>2} layers lmax {row['lmax']} width {row['width']:>3}:"
    if "skipped" in row:
        return f"{head} skipped ({row['skipped']})"
    ours, theirs, speedup = row["symscale"]["step_s"], row["fairchem"]["step_s"], row["speedup"]
    return (
        f"{head} symscale {ours['median']:.3f} s/step, fairchem {theirs['median']:.3f} s/step, speedup "
        f"{speedup['median']:.2f}x (min {speedup['min']:.2f}, max {speedup['max']:.2f}); in CPU time "
        f"{row['speedup_cpu_time']['median']:.2f}x (min {row['speedup_cpu_time']['min']:.2f})"
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--worker", nargs=3, metavar=("LIBRARY", "ARCH", "WIDTH"), help=argparse.SUPPRESS)
    p.add_argument("--archs", nargs="*", help="symscale families (default: all registered)")
    p.add_argument("--steps", type=int, default=3, help="timed training steps per configuration (default 3)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps after the FLOP-counting step (default 1)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--timeout", type=float, default=150, help="seconds per configuration (default 150)")
    p.add_argument("--mace-python", help="python of a venv with mace-torch (default: MACE skipped)")
    p.add_argument("--mace-widths", type=int, nargs="*", default=[16], help="MACE channels (default 16)")
    p.add_argument("--mace-steps", type=int, default=1, help="timed MACE steps (default 1; a step takes ~10 s)")
    p.add_argument("--fairchem-python", help="python of a venv with fairchem-core (default: fairchem skipped)")
    p.add_argument("--fairchem-widths", type=int, nargs="*", default=[8, 16], help="eSEN channels (default 8 16)")
    p.add_argument(
        "--esen-preset",
        choices=("cpu", "paper"),
        default="cpu",
        help="eSEN configuration of both libraries: cpu = symscale's defaults (3 layers, lmax 2), paper = the paper "
        "ladder's (12 layers, lmax 4, hidden/edge 32; slow on a CPU: raise --timeout)",
    )
    p.add_argument("--esen-activation", choices=("grid", "gate"), default="grid", help="eSEN nonlinearity")
    p.add_argument("--esen-lmax", type=int, help="override the preset's lmax of both eSEN models (mmax 2)")
    p.add_argument("--esen-json", help=argparse.SUPPRESS)  # the worker's eSEN options, set by --esen-vs-fairchem
    p.add_argument("--batch-size", type=int, default=BATCH_SIZE, help=f"structures per batch (default {BATCH_SIZE})")
    p.add_argument(
        "--esen-vs-fairchem",
        action="store_true",
        help="only symscale's eSEN against fairchem's (needs --fairchem-python): widths 16 32 64, lmax 2 and 4, "
        "2 and 12 layers, --repeats rounds, speedups as ratios per round",
    )
    p.add_argument("--repeats", type=int, default=3, help="rounds per configuration of --esen-vs-fairchem (default 3)")
    p.add_argument(
        "--quick",
        action="store_true",
        help="with --esen-vs-fairchem: a check that it runs (width 8, lmax 2 and 4, 2 layers, 4 structures, "
        "2 rounds of 1 step); its timings mean nothing",
    )
    for name, what in (("layers", "depths"), ("lmax", "lmax values"), ("widths", "widths")):
        p.add_argument(
            f"--grid-{name}", type=int, nargs="+",
            help=f"with --esen-vs-fairchem: only these {what} of the grid (default: all of {ESEN_GRID[name]})",
        )  # fmt: skip
    p.add_argument("--merge", action="store_true", help="keep other configurations already in --out")
    p.add_argument("--out", type=Path, help="JSON to write (default benchmarks/results/models.json, or "
                   "esen_vs_fairchem.json, esen_vs_fairchem_quick.json)")  # fmt: skip
    args = p.parse_args(argv)
    if args.worker:
        library, arch, width = args.worker
        if args.esen_json:
            esen = json.loads(args.esen_json)
        else:
            esen = esen_options(args.esen_preset, args.esen_activation, args.esen_lmax)
        result = run_worker(library, arch, int(width), args.steps, args.warmup, args.threads, esen, args.batch_size)
        print(json.dumps(result))
        return 0
    results_dir = Path(__file__).parent / "results"
    if args.esen_vs_fairchem:
        if not args.fairchem_python:
            p.error("--esen-vs-fairchem needs --fairchem-python (a venv with fairchem-core, see the docstring)")
        if args.quick:
            args.repeats, args.steps, args.warmup, args.batch_size = (
                QUICK[k] for k in ("repeats", "steps", "warmup", "batch_size")
            )
        out = args.out or results_dir / ("esen_vs_fairchem_quick.json" if args.quick else "esen_vs_fairchem.json")
        payload = esen_versus_fairchem(args, lambda p: write_json(out, p))
        write_json(out, payload)
        where = "everywhere" if payload["settings"]["whole_grid"] else "at every configuration run (a part of the grid)"
        print(f"meets the {SPEEDUP_TARGET}x target {where}: {payload['meets_target_everywhere']}; wrote {out}")
        return 0
    args.out = args.out or results_dir / "models.json"
    results = []
    for python, library, arch, width in plan(args):
        r = spawn(python, library, arch, width, args)
        results.append(r)
        print(json.dumps(r), flush=True)
    if not args.mace_python:
        results.append({"library": "mace", "skipped": "no --mace-python given (mace-torch pins e3nn==0.4.4)"})
    if not args.fairchem_python:
        results.append({"library": "fairchem", "skipped": "no --fairchem-python given"})
    if args.merge and args.out.exists():
        fresh = {(r.get("library"), r.get("arch"), r.get("width")) for r in results}
        old = json.loads(args.out.read_text())["results"]
        results = [r for r in old if (r.get("library"), r.get("arch"), r.get("width")) not in fresh] + results
        results = [r for r in results if "skipped" not in r or r.get("arch") or not _ran(results, r["library"])]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": "training step", "batch_size": BATCH_SIZE, "environment": environment()}
    payload["results"] = results
    payload["comparisons"] = comparisons(results)
    for c in payload["comparisons"]:
        print(
            f"esen width {c['width']}: symscale {c['symscale_step_s']:.3f} s/step, fairchem "
            f"{c['baseline_step_s']:.3f} s/step, speedup {c['speedup']:.2f}x"
        )
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
