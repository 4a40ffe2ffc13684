"""The study's progress bar: runs done of the total, FLOPs done of the estimated total, elapsed time and ETA.

One tqdm bar on stderr for the whole study (the runs' own bars are off in the engines). Its position is the
estimated training FLOPs (3 kappa N D, `symscale.study.estimate`) of the runs finished so far, so the ETA
weighs a large run as much as its compute; without estimates every run counts one.

    bar = StudyBar(tasks)               # off when stderr is not a terminal, unless enabled=True
    executor.run(tasks, on_start=bar.start, on_finish=bar.finish)
    bar.close()
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import IO

from tqdm import tqdm

from symscale.study.executors import RunOutcome, RunTask


class StudyBar:
    """tqdm bar over a study's runs. `enabled=None`: on when `file` (default stderr) is a terminal."""

    def __init__(self, tasks: list[RunTask], *, enabled: bool | None = None, file: IO[str] | None = None):
        file = file or sys.stderr
        if enabled is None:
            enabled = bool(getattr(file, "isatty", lambda: False)())
        self.total_runs = len(tasks)
        self.done_runs = 0
        self.running = 0
        self.failed = 0
        self.by_flops = all(t.estimated_flops > 0 for t in tasks) and bool(tasks)
        self.cost = {t.run_id: t.estimated_flops if self.by_flops else 1 for t in tasks}
        flops = "{n_fmt}/{total_fmt} FLOPs" if self.by_flops else "FLOPs not estimated"
        self.bar = tqdm(
            total=sum(self.cost.values()),
            file=file,
            disable=not enabled,
            unit="FLOPs",
            unit_scale=self.by_flops,
            dynamic_ncols=True,
            bar_format="{desc} |{bar}| " + flops + " [{elapsed}<{remaining}]",
        )
        self._describe()

    def _describe(self) -> None:
        failed = f", {self.failed} failed" if self.failed else ""
        self.bar.set_description_str(
            f"runs {self.done_runs}/{self.total_runs} done, {self.running} running{failed}", refresh=True
        )

    def start(self, task: RunTask) -> None:
        """A run started (the engines call this when it really starts)."""
        self.running += 1
        self._describe()

    def finish(self, task: RunTask, outcome: RunOutcome) -> None:
        """A run ended, finished or not: it counts as done, with its estimated FLOPs."""
        self.running = max(0, self.running - 1)
        self.done_runs += 1
        self.failed += outcome.status != "finished"
        self.bar.update(self.cost.get(task.run_id, 0.0))
        self._describe()  # redraws now (an update alone waits for tqdm's mininterval)

    def printer(self, out: Callable[[str], None]) -> Callable[[str], None]:
        """`out` for the study's lines while the bar is drawn: they print above the bar, which then redraws."""
        if self.bar.disable:
            return out

        def write(line: str) -> None:
            with self.bar.external_write_mode():
                out(line)

        return write

    def close(self) -> None:
        self.bar.close()
