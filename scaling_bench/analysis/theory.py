"""Each measurement beside its prediction, flagged where the two are more than 25% apart.

Bytes the record both measured and predicted (memory peaks, checkpoint sizes; their specs say
bytes) are held to the predictions the record carries. Time has no absolute
prediction (it depends on the machine), so time per sample is held to FLOPs per sample at the
FLOP/s of the series' largest other case: a smaller case that flags spends the excess on overhead
that FLOPs do not count, and the largest case, held to the next largest's rate, flags where it
is slower than its series says (held to its own rate, it never could).
The FLOPs are the plan's, which for a sparse family are those of the active path (the routed
top_k experts, the shared ones and the router), not 6·N of every parameter it holds: a moe case
is held to the compute its tokens do, and its bytes to the total it stores.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from scaling_bench.analysis.fits import (
    by_series,
    flops_per_sample,
    paired_metrics,
    positive_value,
    s_per_sample,
    sample_time_metric,
    timed_workloads,
)
from scaling_bench.core.metrics import spec

THEORY_TOLERANCE = 0.25


@dataclass(frozen=True, slots=True)
class TheoryCheck:
    """One measurement beside its prediction; flagged beyond ``THEORY_TOLERANCE``."""

    case_id: str
    series: str
    params: int
    quantity: str
    unit: str
    measured: float
    predicted: float

    @property
    def ratio(self) -> float:
        return self.measured / self.predicted

    @property
    def flagged(self) -> bool:
        return abs(self.ratio - 1) > THEORY_TOLERANCE


def _rates(group: Sequence[dict], workload: str) -> list[tuple[dict, float]]:
    """(record, FLOP/s) of each measured case of the series, in the series' order."""
    return [
        (r, f / t)
        for r in group
        if (f := flops_per_sample(r, workload)) and (t := s_per_sample(r, workload))
    ]


def _last_rate(rates: Sequence[tuple[dict, float]], without: dict | None) -> float | None:
    """The last rate not measured on ``without``: at most the last two entries are looked at,
    so holding every case of a series to the others' rate is linear in the series' size."""
    rest = [rate for r, rate in rates[-2:] if r is not without]
    return rest[-1] if rest else None


def flops_rate(group: Sequence[dict], workload: str, without: dict | None = None) -> float | None:
    """The FLOP/s of the series' largest measured case (other than ``without``): the constant
    in ``time ∝ FLOPs``.

    The largest case is the nearest to compute-bound; against its rate, a smaller case's excess
    time is the overhead that FLOPs do not account for.
    """
    return _last_rate(_rates(group, workload), without)


def theory_checks(records: Iterable[dict]) -> list[TheoryCheck]:
    """Memory and checkpoint bytes against their predictions; time per sample against FLOPs per
    sample at the rate of the series' largest other case, so a case flags where overhead, not
    FLOPs, sets its time, and no case is held to a rate derived from itself."""
    checks = []
    timed = timed_workloads()
    for series, group in by_series(records).items():
        series_rates = {w: _rates(group, w) for w in timed}  # once per series, not per case
        for r in group:
            rates = {w: _last_rate(series_rates[w], r) for w in timed}
            pairs = [
                (
                    s.name,
                    s.unit,
                    positive_value(r["metrics"], s.name),
                    positive_value(r["predicted"], s.name),
                )
                for s in paired_metrics(r)
            ]
            for w, rate in rates.items():
                flops = flops_per_sample(r, w)
                predicted = flops / rate if flops and rate else None
                time = spec(sample_time_metric(w))
                pairs.append((time.name, time.unit, s_per_sample(r, w), predicted))
            checks.extend(
                TheoryCheck(r["case_id"], series, r["params"], *pair)
                for pair in pairs
                if pair[2] is not None and pair[3] is not None
            )
    return checks
