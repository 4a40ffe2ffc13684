"""Progress of one run: a tqdm bar (atoms/s, loss, ETA) on a terminal, timed lines in `train.log` always,
and optional TensorBoard / Weights & Biases loggers when they are installed (metrics.jsonl is always written
by the loop)."""

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


class ExtraLoggers:
    """TensorBoard and W&B, each only when asked for and installed (otherwise a warning, once)."""

    def __init__(self, out_dir: Path, tensorboard: bool, wandb: bool, run_name: str, config: dict):
        self.tb = self.wb = None
        if tensorboard:
            if importlib.util.find_spec("torch.utils.tensorboard") and importlib.util.find_spec("tensorboard"):
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(log_dir=str(Path(out_dir) / "tensorboard"))
            else:
                logger.warning("tensorboard is not installed; metrics go to metrics.jsonl only")
        if wandb:
            if importlib.util.find_spec("wandb"):
                import wandb as wandb_module

                self.wb = wandb_module.init(name=run_name, config=config, dir=str(out_dir), reinit=True)
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
