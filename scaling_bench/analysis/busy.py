"""Figures timed on a busy machine (``meters.foreign_load``): named, never taken as evidence.

A step timed while other processes held the cores is slower for a reason outside the code under
test, so ``compare`` calls a move of such a figure inconclusive, and a run ends by saying how
busy the machine was.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from scaling_bench.meters.specs import FOREIGN_SHARE
from scaling_bench.workloads.base import declarations

if TYPE_CHECKING:
    from scaling_bench.analysis.compare import MetricComparison

#: Where a comparison row's note says it was left inconclusive for a busy machine.
BUSY_NOTE = "busy machine"


def busy_reason(metric: dict) -> str | None:
    """Why a figure is not evidence of the code's speed (other processes' share of the CPUs
    while it was timed), or None where it was not marked busy."""
    if metric.get("busy") is not True:
        return None
    share = metric.get("foreign_cpu_fraction")
    used = f": other processes used {share:.0%} of the CPUs" if isinstance(share, float) else ""
    return f"{BUSY_NOTE}{used}"


def busy_note(base: dict, current: dict) -> str | None:
    """A comparison row's note where either side was timed on a busy machine."""
    sides = [f"{r} ({side})" for side, m in (("base", base), ("current", current))
             if (r := busy_reason(m))]  # fmt: skip
    return "; ".join(sides) or None


def busy_comparison_line(rows: Iterable[MetricComparison]) -> str | None:
    """``compare``'s one line where rows were left inconclusive because a side was busy."""
    n = sum(r.verdict == "inconclusive" and BUSY_NOTE in r.note for r in rows)
    if not n:
        return None
    return (
        f"note: {n} figure(s) inconclusive: timed while other processes used the CPUs "
        "(marked busy in the record); rerun on a quiet machine"
    )


def _timed_shares(records: Sequence[dict]) -> list[dict]:
    """Each timed workload's foreign-load metric (``{w}_foreign_cpu_fraction``) in the records."""
    names = [FOREIGN_SHARE.prefixed(w.name).name for w in declarations()]
    return [m for r in records for n in names if isinstance(m := r["metrics"].get(n), dict)]


def machine_busy_line(records: Sequence[dict]) -> str | None:
    """The run's last line: how busy the machine was over its timed workloads, or None where
    nothing was metered. ``quiet`` names a run where no figure was marked."""
    shares = _timed_shares(records)
    if not shares:
        return None
    wall = sum(m.get("wall_s", 0.0) for m in shares)
    cores = sum(m.get("foreign_cores", 0.0) * m.get("wall_s", 0.0) for m in shares)
    of = max(m.get("cores", 0) for m in shares)
    busy = sum(m.get("busy") is True for m in shares)
    used = f"other processes used {cores / wall if wall else 0.0:.2f} of {of} cores"
    if not busy:
        return f"machine quiet: {used} during the timed blocks"
    return (
        f"machine busy: {used} during the timed blocks; {busy} of {len(shares)} timed "
        "workloads' figures marked busy: rerun them on a quiet machine"
    )
