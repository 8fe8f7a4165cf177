"""What a run shows as its cases go: one line per finished case on stderr, and on a terminal a
live bar with the running case, done/total and ETA.

The runner (``engine.runner.run_cases``) only tells a ``ProgressSink`` of each case; this is the
sink the command line gives it (``case_progress``), so the engine draws nothing itself.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class CaseProgress:
    """One line per finished case on stderr; with ``live``, also a live bar with the running
    case, done/total and ETA."""

    def __init__(self, total: int, live: bool) -> None:
        self.total = total
        self.bar = (
            Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            if live
            else None
        )

    def __enter__(self) -> CaseProgress:
        if self.bar:
            self.bar.start()
            self.task = self.bar.add_task("", total=self.total)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.bar:
            self.bar.stop()

    def start(self, case_id: str) -> None:
        if self.bar:
            self.bar.update(self.task, description=case_id)

    def finish(self, record: dict[str, Any], n_done: int) -> None:
        line = f"[{n_done}/{self.total}] {record['case_id']} {record['status']} "
        line += f"{record['duration_s']:.1f}s"
        if record["error"]:
            line += f": {record['error'].splitlines()[-1][:120]}"
        if self.bar:
            self.bar.console.print(line, markup=False, highlight=False)
            self.bar.advance(self.task)
        else:
            print(line, file=sys.stderr, flush=True)


def case_progress(bar: bool) -> Callable[[int], CaseProgress]:
    """The runner's ``progress``: the lines always, the bar where ``bar`` and stderr is a
    terminal (``--no-progress`` turns the bar off, never the lines)."""
    return lambda total: CaseProgress(total, live=bar and sys.stderr.isatty())
