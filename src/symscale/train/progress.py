"""Progress of one run: a tqdm bar (atoms/s, loss, ETA) on a terminal, timed lines in `train.log` always,
and optional TensorBoard / Weights & Biases loggers when they are installed (metrics.jsonl is always written
by the loop).

W&B: a run of a study (a run directory `<study>/runs/<run id>/` beside the study's spec.yaml) logs to the
project named after the study, in the group of that study, under its run id, with `resume="allow"`: a
resumed run continues its W&B run instead of starting a new one. A run outside a study logs to project
"symscale" under `<directory name>-<config hash>` (stable across resumptions). TensorBoard writes to
`<run dir>/tensorboard` and, on resumption, drops events after the resumed step (`purge_step`), so a
study's curves read `tensorboard --logdir <study>/runs` without doubled segments.
"""

from __future__ import annotations

import datetime
import importlib.util
import logging
import sys
import time
from pathlib import Path

logger = logging.getLogger(__name__)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")


class Progress:
    """`update(step, atoms, loss)` per step; `log(text)` writes a line to train.log (and above the bar)."""

    def __init__(self, log_path: Path, total_steps: int, start_step: int, mode: str = "auto", every_s: float = 30.0):
        self.log_path = Path(log_path)
        self.total, self.step = total_steps, start_step
        self.every_s = every_s
        self.t0 = self.last_line = time.monotonic()
        self.atoms = 0
        use_bar = mode == "bar" or (mode == "auto" and sys.stderr.isatty())
        self.bar = None
        if use_bar:
            from tqdm import tqdm

            self.bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True, file=sys.stderr)

    def log(self, text: str) -> None:
        with open(self.log_path, "a") as fh:
            fh.write(f"{_now()} {text}\n")
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)

    def update(self, step: int, atoms: int, loss: float) -> None:
        self.atoms += atoms
        elapsed = max(time.monotonic() - self.t0, 1e-9)
        rate = self.atoms / elapsed
        if self.bar is not None:
            self.bar.update(step - self.step)
            self.bar.set_postfix(loss=f"{loss:.4g}", atoms_s=f"{rate:.3g}", refresh=False)
        self.step = step
        if time.monotonic() - self.last_line >= self.every_s:
            self.last_line = time.monotonic()
            done = step / max(self.total, 1)
            eta = elapsed / max(done, 1e-9) * (1 - done) if self.atoms else float("nan")
            self.log(f"step {step}/{self.total} loss {loss:.5g} atoms/s {rate:.4g} eta {eta:.0f}s")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def study_of(out_dir: Path) -> str | None:
    """The study name of a run directory `<study>/runs/<run id>` (from the study's spec.yaml), else None."""
    out_dir = Path(out_dir)
    spec = out_dir.parent.parent / "spec.yaml"
    if out_dir.parent.name != "runs" or not spec.is_file():
        return None
    import yaml

    try:
        name = (yaml.safe_load(spec.read_text()) or {}).get("name")
    except (yaml.YAMLError, AttributeError):
        name = None
    return str(name) if name else out_dir.parent.parent.name


def wandb_identity(out_dir: Path, config: dict) -> dict[str, str | None]:
    """W&B project, group, run id and name of a run directory (see the module docstring)."""
    out_dir = Path(out_dir)
    study = study_of(out_dir)
    if study is not None:
        return {"project": study, "group": study, "id": out_dir.name, "name": out_dir.name}
    from symscale.config import RunConfig

    run_id = f"{out_dir.name}-{RunConfig.from_dict(config).config_hash()[:10]}"
    return {"project": "symscale", "group": None, "id": run_id, "name": out_dir.name}


class ExtraLoggers:
    """TensorBoard and W&B, each only when asked for and installed (otherwise a warning, once).

    `start_step`: the step a resumed run restarts from (TensorBoard events after it are dropped)."""

    def __init__(
        self,
        out_dir: Path,
        tensorboard: bool,
        wandb: bool,
        run_name: str,
        config: dict,
        start_step: int | None = None,
    ):
        self.tb = self.wb = None
        if tensorboard:
            if importlib.util.find_spec("torch.utils.tensorboard") and importlib.util.find_spec("tensorboard"):
                from torch.utils.tensorboard import SummaryWriter

                purge = start_step if start_step else None
                self.tb = SummaryWriter(log_dir=str(Path(out_dir) / "tensorboard"), purge_step=purge)
            else:
                logger.warning("tensorboard is not installed; metrics go to metrics.jsonl only")
        if wandb:
            if importlib.util.find_spec("wandb"):
                import wandb as wandb_module

                identity = wandb_identity(out_dir, config)
                self.wb = wandb_module.init(
                    **identity, config=config, dir=str(out_dir), resume="allow", reinit="finish_previous"
                )
            else:
                logger.warning("wandb is not installed; metrics go to metrics.jsonl only")

    def write(self, metrics: dict) -> None:
        step = int(metrics["step"])
        numbers = {k: v for k, v in metrics.items() if isinstance(v, int | float) and k != "step"}
        if self.tb is not None:
            for k, v in numbers.items():
                self.tb.add_scalar(k, v, step)
        if self.wb is not None:
            self.wb.log(numbers, step=step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wb is not None:
            self.wb.finish()
