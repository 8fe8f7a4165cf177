"""A frontier study keeps to its ``--budget`` on a machine slower than its probe measured.

``frontier --budget 5m`` beside other jobs had run 10 of its 20 runs after 15 minutes: the design
was made from a throughput probe taken in a quieter minute, and every run then took ~3x its
prediction. So before each run the keeper re-plans from the pace it actually sees (the seconds
the finished runs took over the seconds predicted for them) and starts the run only if what it
commits to fits in the time left: a budget not yet begun is started only if all of its runs fit
at that pace (a budget's parabola needs its sizes; half a budget fits nothing), a begun one goes
on run by run. The budgets ascend, so the first that does not fit ends the study: the runs left
stay unrecorded (``--resume`` runs them) and the analysis fits what finished, saying so in one
line.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scaling_bench.config.case import Case
    from scaling_bench.frontier.design import PlannedRun


@dataclass
class BudgetKeeper:
    """``stop`` for ``runner.run_cases``: ``runs`` maps the case id of each run still to go, in
    the order they run, to its planned run; ``deadline`` is when they must have ended, on
    ``clock``; ``begun`` the budgets (FLOPs) with a run already recorded."""

    runs: Mapping[str, PlannedRun]
    deadline: float
    begun: set[float] = field(default_factory=set)
    clock: Callable[[], float] = time.perf_counter
    started: float | None = None
    predicted_done_s: float = 0.0
    #: Why the study stopped short, once it has; the runs it left.
    stopped: str | None = None
    left: list[str] = field(default_factory=list)
    _last: PlannedRun | None = None

    def pace(self, now: float) -> float:
        """Seconds taken per second predicted over the finished runs (1 before any finished)."""
        if self.started is None or self.predicted_done_s <= 0:
            return 1.0
        return (now - self.started) / self.predicted_done_s

    def stop(self, case: Case) -> bool:
        """Whether the run of ``case`` would break the budget at the pace seen so far."""
        now = self.clock()
        if self.started is None:
            self.started = now
        if self._last is not None:
            self.predicted_done_s += self._last.predicted_s
        self._last = None
        if self.stopped is not None:
            return True
        run = self.runs[case.case_id]
        pending = list(self.runs)[list(self.runs).index(case.case_id) :]
        commits = (
            [run]
            if run.budget in self.begun
            else [r for cid in pending if (r := self.runs[cid]).budget == run.budget]
        )
        pace = self.pace(now)
        need = pace * sum(r.predicted_s for r in commits)
        time_left = self.deadline - now
        if need > time_left:
            self.left = pending
            self.stopped = (
                f"the {len(commits)} run(s) of the budget of {run.budget:.3g} FLOPs would take "
                f"{need:.0f}s at the pace seen ({pace:.2g}x the prediction), and {time_left:.0f}s "
                "are left"
            )
            return True
        self.begun.add(run.budget)
        self._last = run
        return False

    def note(self, total: int) -> str | None:
        """One line where the study stopped short of its design, else None."""
        if self.stopped is None:
            return None
        return (
            f"frontier: kept to --budget: ran {total - len(self.left)} of the design's {total} "
            f"runs, fitted on those that finished; {self.stopped}; --resume runs the "
            f"{len(self.left)} left"
        )
