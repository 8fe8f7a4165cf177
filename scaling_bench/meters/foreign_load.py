"""The CPU time other processes used while a figure was timed, and the load average.

The quick grid, run while other jobs held this 2-core machine's cores, took 476 s instead of
~62 s, and its figures came out unsettled and out of order with nothing saying why. So at the
edges of each timed block the machine's busy CPU seconds (``/proc/stat`` through
``psutil.cpu_times``: every state but idle and I/O wait, steal included: a neighbouring VM's
time is time this one did not get) are read beside this process's own (``os.times``: its
threads and the children it reaped) and that of the fork server and runner above it, which
supervise the case. Over the timed blocks, the difference per wall second is
the cores other processes used; as a share of the machine's logical cores it is
``foreign_cpu_fraction``. Above ``BUSY_SHARE`` the figure was timed on a busy machine: the
step-time metric and the figures derived from it say so (``busy``), the summary marks them and
``compare`` calls their comparison inconclusive.

``/proc/stat`` counts in clock ticks (10 ms), as long as the shortest block, so one block's
reading is mostly quantisation: the blocks are pooled, never judged one by one.
"""

from __future__ import annotations

import functools
import math
import os
import resource
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

import psutil

from scaling_bench.core.stats import single, summarize
from scaling_bench.meters.specs import BUSY_SHARE, RUNNER_PID_ENV
from scaling_bench.meters.timing import BlockMeter

#: The counters' resolution: ``/proc/stat`` counts in clock ticks.
TICK_S = 1 / os.sysconf("SC_CLK_TCK")

#: What ``annotation`` adds to a timed metric, and what a figure derived from it carries.
ANNOTATION_KEYS = ("busy", "foreign_cpu_fraction")


def machine_busy_s() -> float:
    """Busy CPU seconds of the whole machine since boot, summed over its logical CPUs: all but
    idle and I/O wait (guest time is already inside user time)."""
    t = psutil.cpu_times()
    guest = getattr(t, "guest", 0.0) + getattr(t, "guest_nice", 0.0)
    return sum(t) - t.idle - getattr(t, "iowait", 0.0) - guest


def run_supervisors() -> tuple[psutil.Process, ...]:
    """This process's ancestors up to the runner that ``RUNNER_PID_ENV`` names: the fork server
    and the runner, whose CPU time is the run's own. None where no runner is an ancestor (a
    worker started by hand, a test), so nothing but this process is ever counted as its own."""
    runner = os.environ.get(RUNNER_PID_ENV, "")
    chain: list[psutil.Process] = []
    for parent in psutil.Process().parents():
        chain.append(parent)
        if str(parent.pid) == runner:
            return tuple(chain)
    return ()


def own_cpu_s(supervisors: tuple[psutil.Process, ...] = ()) -> float:
    """CPU seconds of this process, all its threads, and its reaped children (``getrusage``: to
    the microsecond, where ``os.times`` counts whole ticks), plus those of the ``supervisors``
    themselves (not their reaped children: a finished case is not this block's)."""
    mine = sum(
        usage.ru_utime + usage.ru_stime
        for usage in map(resource.getrusage, (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    )
    return mine + sum(_cpu_s(process) for process in supervisors)


def _cpu_s(process: psutil.Process) -> float:
    """A supervisor's CPU seconds; none once it ended (the case ends with it)."""
    try:
        t = process.cpu_times()
    except psutil.NoSuchProcess:
        return 0.0
    return t.user + t.system


class ForeignLoad(BlockMeter):
    """Context manager: pass it to ``timing.measure(meters=...)``; ``metrics()`` once it ended.
    The readings are injectable so the arithmetic can be checked exactly."""

    def __init__(
        self,
        machine: Callable[[], float] = machine_busy_s,
        own: Callable[[], float] | None = None,
        clock: Callable[[], float] = time.monotonic,
        load: Callable[[], float] = lambda: os.getloadavg()[0],
        cores: int | None = None,
        tick_s: float = TICK_S,
    ) -> None:
        own = own or functools.partial(own_cpu_s, run_supervisors())
        self._machine, self._own, self._clock, self._load = machine, own, clock, load
        self.cores = cores or psutil.cpu_count() or 1
        self.tick_s = tick_s
        self.foreign_s = 0.0
        self.wall_s = 0.0
        self.blocks = 0
        self.loads: list[float] = []
        self._start: tuple[float, float, float] | None = None

    def __enter__(self) -> ForeignLoad:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._start = None

    def block_started(self) -> None:
        self._start = (self._clock(), self._machine(), self._own())

    def block_ended(self, block_s: float, calls: int) -> None:
        if self._start is None:
            return
        wall, machine, own = self._start
        self._start = None
        self.wall_s += self._clock() - wall
        # The two counters tick apart, so a block reads a tick too many or too few either way;
        # summed unclipped those errors cancel (clipped per block, they added up to a false
        # "busy" on an idle machine: 23 of the quick grid's 42 figures at 0.06 foreign cores).
        self.foreign_s += (self._machine() - machine) - (self._own() - own)
        self.blocks += 1
        self.loads.append(float(self._load()))

    @property
    def fraction(self) -> float | None:
        """Other processes' CPU seconds per wall second over the blocks, per logical core (none
        below zero: the counters' ticks can leave the pooled sum a little short)."""
        return max(0.0, self.foreign_s) / self.wall_s / self.cores if self.wall_s > 0 else None

    @property
    def margin(self) -> float | None:
        """How far the counters' ticks alone can move ``fraction`` (two σ): each block's reading
        of the machine is off by up to a tick per CPU either way (uniform, so σ² = tick²/6 per
        CPU and block), pooled over the blocks."""
        if not self.wall_s:
            return None
        return 2 * self.tick_s * math.sqrt(self.blocks * self.cores / 6) / self.wall_s / self.cores

    @property
    def busy(self) -> bool:
        """Busy only where other processes' share is above ``BUSY_SHARE`` by more than the ticks
        can explain: a figure of many short blocks reads ±0.06 cores from ticks alone on 2 CPUs,
        which marked figures of an idle machine busy."""
        return (self.fraction or 0.0) - (self.margin or 0.0) > BUSY_SHARE

    def metrics(self) -> dict[str, dict]:
        """The pooled share, with the cores it is of and how many blocks it covers; the load
        average's spread over the blocks. Nothing where no block was read."""
        if self.fraction is None:
            return {}
        share = single(self.fraction, "fraction") | {
            "n": self.blocks,
            "foreign_cores": self.fraction * self.cores,
            "cores": self.cores,
            "wall_s": self.wall_s,
            "tick_margin": self.margin,
            "busy": self.busy,
            "busy_share": BUSY_SHARE,
        }
        return {
            "foreign_cpu_fraction": share,
            "load_avg_1m": summarize(self.loads, "tasks", keep_samples=False),
        }

    def annotation(self) -> dict[str, Any]:
        """What the timed metric carries: whether it was timed on a busy machine, and the share."""
        if self.fraction is None:
            return {}
        return {"busy": self.busy, "foreign_cpu_fraction": self.fraction}


def busy_state(metric: dict) -> dict[str, Any]:
    """The busy annotation a metric carries, for the figures derived from it to carry too."""
    return {k: metric[k] for k in ANNOTATION_KEYS if k in metric}
