"""The GPU check: every family on one CUDA device, in under 10 minutes, one JSON.

What it measures (each section records its own failures instead of stopping the script):
1. **Precision**: every registered family, forward + backward on one batch of 64 toy molecules, in fp32, TF32 and
   bf16 autocast, with direct and with conservative forces. Per case: finite or not, the relative error of energy and
   forces against fp32 (TF32 and bf16 only), the step time and the peak memory (torch.cuda.max_memory_allocated).
2. **Throughput**: training steps (forward, the study's loss, backward, Adam with muP groups) at the two smallest
   widths of each family's `paper` ladder, fp32 and bf16 autocast; atoms/s, step time, peak memory. fairchem's eSEN
   beside symscale's when `fairchem` imports (never installed by this script).
3. **Study**: a 20-run study (4 families x 5 widths of the `cpu` ladders, one epoch on a small built-in set) through
   `symscale study`, its wall time and whether every run finished.

    python benchmarks/gpu_check.py --out benchmarks/results/gpu_check.json          # on a CUDA machine
    python benchmarks/gpu_check.py --device cpu --quick --out /tmp/gpu_check.json   # the script's own smoke test

Without CUDA and without `--device cpu` it writes nothing and exits 2 with one line. `benchmarks/gpu_check.sh` is
the one command to run on a lent GPU machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

from symscale.data.graph import collate
from symscale.data.toy import toy_structures
from symscale.models import mup
from symscale.models.ladders import ladder_overrides, load_ladder
from symscale.models.registry import build, list_archs

ELEMENTS = (1, 6, 7, 8)
STAGE_FAMILIES = ("mpnn", "egnn", "gemnet_oc", "esen")  # the staircase, for the 20-run study


def environment(device: torch.device) -> dict:
    """Hardware, versions, git SHA and load average, as every benchmark JSON records them."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        sha = None
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
        "git_sha": sha,
        "device": str(device),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1), capability=props.major)
    return info


def make_batch(n_structures: int, device: torch.device, seed: int = 0):
    structures = toy_structures(n_structures, seed=seed, min_atoms=10, max_atoms=30)
    return collate(structures, cutoff=6.0, max_neighbors=30, dtype=torch.float32).to(device)


def loss_fn(energy, forces, batch):
    """The study's loss: per-atom energy L1 plus the mean per-atom norm of the force error."""
    per_atom = ((energy.float() - batch.energy) / batch.n_atoms).abs().mean()
    return per_atom + (forces.float() - batch.forces).norm(dim=-1).mean()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_mib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def set_precision(precision: str) -> None:
    tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32


def forward_backward(model, batch, precision: str, device: torch.device):
    """One forward and backward pass; returns (energy, forces, seconds)."""
    set_precision(precision)
    synchronize(device)
    start = time.perf_counter()
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        out = model(batch)
        loss = loss_fn(out.energy, out.forces, batch)
    loss.backward()
    synchronize(device)
    return out.energy.detach().float(), out.forces.detach().float(), time.perf_counter() - start


def relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    return float((value - reference).norm() / reference.norm().clamp_min(1e-12))


def check_precision(arch: str, width: int, options: dict, batch, device: torch.device) -> list[dict]:
    rows = []
    for forces in ("direct", "conservative"):
        reference = None
        for precision in ("fp32", "tf32", "bf16"):
            row = {"arch": arch, "width": width, "forces": forces, "precision": precision}
            try:
                torch.manual_seed(0)
                model = build(arch, width, elements=ELEMENTS, forces=forces, **options).to(device)
                reset_peak(device)
                forward_backward(model, batch, precision, device)  # warm-up (kernels, caches)
                energy, force, seconds = forward_backward(model, batch, precision, device)
                row.update(
                    finite=bool(torch.isfinite(energy).all() and torch.isfinite(force).all()),
                    step_s=seconds,
                    peak_mib=peak_mib(device),
                )
                if precision == "fp32":
                    reference = (energy, force)
                elif reference is not None:
                    row.update(
                        energy_rel_error=relative_error(energy, reference[0]),
                        forces_rel_error=relative_error(force, reference[1]),
                    )
            except Exception as err:  # recorded, not fatal: the check goes on with the next case
                row.update(error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc(limit=3))
            rows.append(row)
    set_precision("fp32")
    return rows


def train_steps(step, batch, device: torch.device, steps: int) -> dict:
    step(batch)  # warm-up
    synchronize(device)
    reset_peak(device)
    start = time.perf_counter()
    for _ in range(steps):
        step(batch)
    synchronize(device)
    seconds = (time.perf_counter() - start) / steps
    return {"step_s": seconds, "atoms_per_s": int(batch.num_atoms) / seconds, "peak_mib": peak_mib(device)}


def symscale_trainer(arch: str, width: int, options: dict, precision: str, device: torch.device):
    torch.manual_seed(0)
    model = build(arch, width, elements=ELEMENTS, **options).to(device)
    opt = torch.optim.Adam(mup.param_groups(model, lr=1e-3, weight_decay=0.0))

    def step(batch):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            out = model(batch)
            loss = loss_fn(out.energy, out.forces, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return model.num_parameters(), step


def fairchem_trainer(sphere_channels: int, lmax: int, num_layers: int, device: torch.device):
    """fairchem's eSEN backbone with direct-force heads, when fairchem is installed (this script installs nothing)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_models import fairchem_step  # noqa: PLC0415  (imported only when fairchem is there)

    model, step = fairchem_step("esen", sphere_channels, esen_lmax=lmax, num_layers=num_layers, device=device)
    return sum(p.numel() for p in model.parameters()), step


def check_throughput(archs: list[str], batch, device: torch.device, steps: int, quick: bool) -> list[dict]:
    rows = []
    for arch in archs:
        ladder = "cpu" if quick else "paper"
        options = ladder_overrides(arch, ladder)
        for width in load_ladder(arch, ladder)[:2]:
            for precision in ("fp32", "bf16"):
                row = {"library": "symscale", "arch": arch, "width": width, "precision": precision, **options}
                try:
                    n_params, step = symscale_trainer(arch, width, options, precision, device)
                    row.update(num_parameters=n_params, **train_steps(step, batch, device, steps))
                except Exception as err:
                    row.update(error=f"{type(err).__name__}: {err}")
                rows.append(row)
    try:
        import fairchem  # noqa: F401
    except ImportError as err:
        rows.append({"library": "fairchem", "skipped": f"not installed ({err})"})
        return rows
    for sphere_channels in (16, 32):
        row = {"library": "fairchem", "arch": "esen", "width": sphere_channels, "lmax": 4, "num_layers": 12}
        try:
            n_params, step = fairchem_trainer(sphere_channels, 4, 12, device)
            row.update(num_parameters=n_params, **train_steps(step, batch, device, steps))
        except Exception as err:
            row.update(error=f"{type(err).__name__}: {err}")
        rows.append(row)
    return rows


STUDY_SPEC = """\
name: gpu-check
description: the GPU check's 20-run study (4 families x 5 cpu-ladder widths, one epoch on a small built-in set)
dataset: {{builtin: {structures}, seed: 0, val: {val}}}
families:
{families}
prefixes: [1.0]
seeds: [0]
evaluation: {{eval_points: 4, eval_first_fraction: 0.1, eval_batch_size: 64, equivariance_structures: 8}}
training: {{batch_size: 32, lr: 3.0e-3, warmup_steps: 5, device: {device}}}
executor: {{kind: local, workers: 1}}
fits: {{bootstrap: 50, seed: 0}}
report: false
"""


def check_study(device: torch.device, quick: bool, timeout_s: float) -> dict:
    widths_per_family = 2 if quick else 5
    families = "\n".join(
        f"  - {{arch: {arch}, widths: {load_ladder(arch, 'cpu')[:widths_per_family]}}}"
        for arch in STAGE_FAMILIES
        if arch in list_archs()
    )
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "gpu-check.yaml"
        structures, val = (120, 20) if quick else (1500, 150)
        spec.write_text(STUDY_SPEC.format(structures=structures, val=val, families=families, device=device.type))
        env = {**os.environ, "SYMSCALE_CACHE": os.environ.get("SYMSCALE_CACHE", str(Path(tmp) / "cache"))}
        command = [sys.executable, "-m", "symscale", "study", str(spec), "--dir", str(Path(tmp) / "study")]
        start = time.perf_counter()
        try:
            done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired:
            return {"finished": False, "reason": f"timed out after {timeout_s:.0f} s", "wall_s": timeout_s}
        wall = time.perf_counter() - start
        runs = sorted((Path(tmp) / "study" / "runs").glob("*/status.json"))
        statuses = [json.loads(p.read_text()).get("status") for p in runs]
        return {
            "finished": done.returncode == 0,
            "returncode": done.returncode,
            "wall_s": wall,
            "runs": len(statuses),
            "runs_finished": statuses.count("finished"),
            "output_tail": (done.stdout + done.stderr)[-2000:],
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu (the script's own smoke test)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the script itself, measures nothing")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per configuration")
    parser.add_argument("--study-timeout", type=float, default=240.0, help="seconds allowed for the 20-run study")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/gpu_check.json"))
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here (torch.cuda.is_available() is False); nothing written", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    archs = list_archs()
    started = time.perf_counter()
    result: dict = {"environment": environment(device), "archs": archs}
    batch = make_batch(8 if args.quick else 64, device)
    result["batch"] = {
        "structures": int(batch.num_structures),
        "atoms": int(batch.num_atoms),
        "edges": int(batch.num_edges),
    }
    print(f"precision: {len(archs)} families x direct/conservative x fp32/tf32/bf16", flush=True)
    result["precision"] = []
    for arch in archs:
        width = load_ladder(arch, "cpu")[0]
        result["precision"] += check_precision(arch, width, ladder_overrides(arch, "cpu"), batch, device)
    print("throughput: two widths per family, fp32 and bf16", flush=True)
    result["throughput"] = check_throughput(archs, batch, device, 2 if args.quick else args.steps, args.quick)
    print("study: 20 runs through `symscale study`", flush=True)
    result["study"] = check_study(device, args.quick, args.study_timeout)
    result["wall_s"] = time.perf_counter() - started
    failures = [r for r in result["precision"] + result["throughput"] if "error" in r or r.get("finished") is False]
    result["failures"] = len(failures)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(
        f"wrote {args.out}: {len(failures)} failing cases, study finished: {result['study'].get('finished')}, "
        f"{result['wall_s']:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
