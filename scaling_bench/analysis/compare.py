"""Run against run: a gate that must not cry wolf.

A metric regresses only when it moved beyond the threshold in the bad direction *and* the raw
samples say the move is not noise (two-sided Mann–Whitney U at ``ALPHA``, ``scipy.stats``). What
a metric means comes from its spec (``core.metrics``), never from its name: which way is better,
and whether it is counted (bytes on disk: exact, taken at face value, no test needed) or measured
(a single timing or memory peak has no spread to test, so it is inconclusive).

Paired (``scaling-bench ab``, ``compare --paired``): process *i* of BASE ran beside process *i*
of CURRENT, minutes apart on the same machine, so the machine's drift between runs cancels in
their ratio. The test is then a one-sample t-test of the per-pair log ratios against zero, and
the ratio shown is their geometric mean: what a user computes by hand from the pairs. A move
every pair makes far beyond the noise the rounds showed (``FAR_BEYOND``) fails the gate even
where too few rounds leave the t-test without power.

Unpaired, the samples' p says only that the two *processes* differed (and per-process values
of runs minutes apart still drift apart as a whole): a move then regresses only if it also
clears the run-to-run drift σ, ``|log ratio| > t(1 − α/2, dof)·√2·σ`` (``analysis.unpaired``:
σ the larger of the metric's ``--processes`` spread and the machine's, measured by
``scaling-bench check``, never below a 5% floor), and is otherwise inconclusive, exit 0, with
one line naming ``ab`` and ``--processes`` (``Comparison.drift_line``).

By default every spec'd metric with a better direction is compared, except bookkeeping (seconds
spent timing, the peak MFU is measured against) and derived figures beside their source:
samples/s, FLOP/s, MFU from the step time, bytes/s from the save time are their source scaled by
a constant and share its verdict. ``--metric`` patterns select explicitly, whatever the spec says.
A metric that no workload declared is not guessed at: it is listed as having no spec
(``Comparison.unknown_metrics``), and compared, as lower-is-better, only where it is named.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from fnmatch import fnmatchcase
from typing import Any

import scaling_bench.workloads  # noqa: F401  (declares every built-in workload's metric specs)
from scaling_bench.analysis.busy import busy_note
from scaling_bench.analysis.significance import (
    FAR_BEYOND,
    far_beyond_noise,
    paired_log_ratios,
    paired_test,
    per_process,
    process_values,
    significance,
    smallest_p,
)
from scaling_bench.analysis.unpaired import (
    DRIFT_NOTE,
    Drift,
    drift_line,
    machine_differences,
    machine_drift,
    process_drift,
)
from scaling_bench.core.errors import UserError
from scaling_bench.core.metrics import LOWER, NEITHER, MetricSpec, find
from scaling_bench.core.stats import is_finite
from scaling_bench.meters.specs import clock_states_differ
from scaling_bench.store.foreign import Run

#: Many metrics are tested at once, so a 1-in-100 chance of a false alarm each is already plenty.
ALPHA = 0.01
DEFAULT_THRESHOLD = 0.05
FAILED_STATUSES = ("oom", "timeout", "crashed", "diverged")


@dataclass(frozen=True, slots=True)
class MetricComparison:
    """One metric of one case in both runs, and what the gate makes of the move."""

    case_id: str
    family: str
    metric: str
    unit: str
    base: float
    current: float
    direction: int
    ratio: float | None
    p_value: float | None
    verdict: str
    note: str = ""


def _verdict(
    base: dict,
    current: dict,
    sign: int,
    threshold: float,
    alpha: float,
    counted: bool,
    paired: bool = False,
    drift: Drift | None = None,
) -> tuple[float | None, float | None, str, str]:
    """(ratio, p, verdict, note) for one metric; ``sign`` is ``HIGHER``, ``LOWER`` or ``NEITHER``
    (a setting such as the best LR: a move is shown, never judged), and ``counted`` says the
    figure is exact (bytes on disk), so a move needs no test. A figure that did not settle on
    either side says so in the note; a move the sides' conditions explain (``_unlike``) is
    inconclusive, and so is any unpaired comparison with a side timed on a busy machine
    (``analysis.busy``). ``paired``: the runs are the two sides of an A/B (module docstring);
    ``drift``: the machine's run-to-run drift, which an unpaired move must also clear."""
    ratio, p, verdict, note = _judged(base, current, sign, threshold, alpha, counted, paired, drift)
    if verdict in ("improved", "regressed") and (unlike := _unlike(base, current)):
        verdict, note = "inconclusive", "; ".join(n for n in (note, unlike) if n)
    if busy := busy_note(base, current):  # an A/B's pairs shared the machine's load alike
        verdict, note = verdict if paired else "inconclusive", "; ".join(filter(None, (note, busy)))
    if base.get("settled") is False or current.get("settled") is False:
        note = "; ".join(n for n in (note, "unsettled") if n)
    return ratio, p, verdict, note


def _unlike(base: dict, current: dict) -> str:
    """Why the two figures were taken under conditions that move them by themselves (two
    different clock states: the GPU's SM clock, or throttling, as the device-state meter
    annotates a metric), or ``""``."""
    return clock_states_differ(base, current)


def _judged(
    base: dict,
    current: dict,
    sign: int,
    threshold: float,
    alpha: float,
    counted: bool,
    paired: bool,
    drift: Drift | None,
) -> tuple[float | None, float | None, str, str]:
    b, c = base.get("value"), current.get("value")
    if not (is_finite(b) and is_finite(c)):
        return None, None, "inconclusive", "no finite value"
    logs = None if counted or not paired else paired_log_ratios(base, current)
    if b == c and logs is None:
        return (1.0 if b else None), None, "unchanged", ""
    if b <= 0 or c <= 0:
        return None, None, "inconclusive", "no ratio of non-positive values"
    if logs is not None:
        ratio, p = paired_test(logs)
    else:
        ratio, p = c / b, None if counted else significance(base, current)
    if sign == NEITHER:
        moved = not 1 / (1 + threshold) <= ratio <= 1 + threshold
        return ratio, p, ("inconclusive" if moved else "unchanged"), "no better direction" * moved
    better = ratio**sign  # above 1: current is better
    if 1 / (1 + threshold) <= better <= 1 + threshold:
        return ratio, p, "unchanged", ""
    moved = "improved" if better > 1 else "regressed"
    if counted:
        return ratio, None, moved, "exact count"
    if p is None:
        return ratio, None, "inconclusive", "single measurement"
    unpaired = "unpaired: the sides hold different rounds" if paired and logs is None else ""
    if per_process(base, current) and logs is None:
        counts = len(process_values(base)), len(process_values(current))
        if smallest_p(*counts) >= alpha:
            note = f"{counts[0]} vs {counts[1]} processes cannot reach p < {alpha:g}"
            return ratio, p, "inconclusive", "; ".join(filter(None, (note, unpaired)))
    if p >= alpha:
        if logs is not None and far_beyond_noise(base, current, logs, threshold):
            return ratio, p, moved, f"every pair beyond {FAR_BEYOND:g}× the rounds' spread"
        return ratio, p, "inconclusive", "; ".join(filter(None, ("within noise", unpaired)))
    if drift is not None and logs is None:
        drift = max(filter(None, (process_drift(base, current), drift)), key=_bound(alpha))
        if abs(math.log(ratio)) <= math.log1p(drift.bound(alpha)):
            note = f"{DRIFT_NOTE}: {drift.describe(alpha)}"
            return ratio, p, "inconclusive", "; ".join(filter(None, (note, unpaired)))
    return ratio, p, moved, unpaired


def _bound(alpha: float) -> Callable[[Drift], float]:
    return lambda drift: drift.bound(alpha)


@dataclass
class Comparison:
    """BASE against CURRENT: a row per (case, metric), and what could not be paired."""

    base: Run
    current: Run
    threshold: float
    alpha: float
    rows: list[MetricComparison]
    only_base: list[str]
    only_current: list[str]
    status_changes: list[tuple[str, str, str]]
    #: Metrics of the common cases that no workload declared: not compared unless named.
    unknown_metrics: list[str] = field(default_factory=list)
    #: Machine settings that differ between the runs and move timings (``torch_threads 2 → 1``).
    machine_differences: list[str] = field(default_factory=list)
    #: Whether some measured figure was tested over one process's samples a side, which
    #: leaves run-to-run variation untested (``run --processes``).
    within_process: bool = False
    #: Whether the runs are the two sides of an A/B, tested pair by pair (module docstring).
    paired: bool = False
    #: The machine's run-to-run drift an unpaired move must clear (module docstring).
    drift: Drift | None = None

    @property
    def regressions(self) -> list[MetricComparison]:
        return [r for r in self.rows if r.verdict == "regressed"]

    @property
    def newly_failed(self) -> list[tuple[str, str, str]]:
        return [s for s in self.status_changes if s[1] == "ok" and s[2] in FAILED_STATUSES]

    @property
    def within_drift(self) -> list[MetricComparison]:
        """The moves beyond the threshold that only the run-to-run drift kept from a verdict."""
        return [r for r in self.rows if r.verdict == "inconclusive" and DRIFT_NOTE in r.note]

    def drift_line(self) -> str | None:
        """One line saying why the gate holds no verdict on ``within_drift``, and what to run."""
        if not self.within_drift or self.drift is None:
            return None
        return drift_line(len(self.within_drift), self.drift, self.threshold, self.alpha)

    @property
    def failed_gate(self) -> bool:
        return bool(self.regressions or self.newly_failed)

    def by_family(self) -> dict[str, dict[str, tuple[float, int]]]:
        """Per family and metric, the geometric-mean ratio CURRENT/BASE and how many cases."""
        ratios: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        for row in self.rows:
            if row.ratio and math.isfinite(row.ratio):
                ratios[row.family][row.metric].append(row.ratio)
        return {
            family: {
                metric: (statistics.geometric_mean(xs), len(xs))
                for metric, xs in sorted(metrics.items())
            }
            for family, metrics in sorted(ratios.items())
        }

    def to_dict(self) -> dict[str, Any]:
        def side(run: Run) -> dict[str, Any]:
            return {"source": run.source, "kind": run.kind, "env": run.env}

        return {
            "base": side(self.base),
            "current": side(self.current),
            "threshold": self.threshold,
            "alpha": self.alpha,
            "failed_gate": self.failed_gate,
            "rows": [asdict(r) for r in self.rows],
            "only_base": self.only_base,
            "only_current": self.only_current,
            "unknown_metrics": self.unknown_metrics,
            "machine_differences": self.machine_differences,
            "within_process": self.within_process,
            "paired": self.paired,
            "drift": self.drift and asdict(self.drift) | {"bound": self.drift.bound(self.alpha)},
            "drift_line": self.drift_line(),
            "status_changes": [
                {"case_id": c, "base": b, "current": s} for c, b, s in self.status_changes
            ],
            "by_family": {
                family: {m: {"geomean_ratio": g, "cases": n} for m, (g, n) in metrics.items()}
                for family, metrics in self.by_family().items()
            },
        }


#: Why a metric whose spec says ``gated=False`` never fails the gate.
UNGATED_NOTE = "moves from run to run with allocator state (the tensor peak is gated)"

#: How a metric without a spec is read where ``--metric`` names it: measured, lower is better
#: (asv's convention for everything it tracks).
_UNSPECIFIED = MetricSpec("unspecified", "", LOWER)


def _selected(
    name: str, spec: MetricSpec | None, metrics: dict, patterns: Sequence[str] | None
) -> bool:
    """Named by a pattern, or, without patterns, compared by its spec: a better direction, not
    bookkeeping, and not a derived figure whose source is among ``metrics``."""
    if patterns:
        return any(fnmatchcase(name, p) for p in patterns)
    if spec is None or not spec.compared:
        return False
    return not (spec.kind == "derived" and spec.derived_from in metrics)


def selectable(patterns: Sequence[str] | None) -> Callable[[str], bool]:
    """Which metrics a comparison with these ``--metric`` patterns can select, by name: what a
    run's reader keeps (``load_run``). A superset of ``_selected``: a derived figure is kept
    beside its source (the other run may lack the source), one without a spec to be listed."""

    def keep(name: str) -> bool:
        spec = find(name)
        if spec is None:
            return True
        return any(fnmatchcase(name, p) for p in patterns) if patterns else spec.compared

    return keep


def compare_runs(
    base: Run,
    current: Run,
    threshold: float = DEFAULT_THRESHOLD,
    metrics: Sequence[str] | None = None,
    alpha: float = ALPHA,
    paired: bool = False,
) -> Comparison:
    """Pair cases by id and metrics by name; ``metrics`` are names or glob patterns; ``paired``:
    the runs are the two sides of an A/B, process *i* of one beside process *i* of the other.

    Without ``metrics``, every metric its spec says to compare is compared (module docstring);
    a metric without a spec is listed in ``unknown_metrics``, and compared as lower-is-better
    only where ``metrics`` names it.
    """
    common = [c for c in base.cases if c in current.cases]
    if not common:
        raise UserError(f"{base.source} and {current.source} have no case in common")
    rows = []
    unknown: set[str] = set()
    within_process = False
    drift = machine_drift(base.env, current.env)
    for case_id in common:
        b, c = base.cases[case_id], current.cases[case_id]
        unknown.update(n for n in (*b.metrics, *c.metrics) if find(n) is None)
        shared = {k: v for k, v in c.metrics.items() if k in b.metrics}
        for name in sorted(shared):
            known = find(name)
            if not _selected(name, known, shared, metrics):
                continue
            spec = known or _UNSPECIFIED
            bm, cm = b.metrics[name], c.metrics[name]
            ratio, p, verdict, note = _verdict(
                bm, cm, spec.better, threshold, alpha, spec.counted, paired, drift
            )
            if verdict in ("regressed", "improved") and not spec.gated:
                verdict, note = "inconclusive", f"{verdict}, not gated: {UNGATED_NOTE}"
            within_process |= p is not None and not per_process(bm, cm)
            if known is None:
                note = "; ".join(filter(None, ("no spec: lower taken as better", note)))
            rows.append(
                MetricComparison(
                    case_id,
                    c.family or b.family,
                    name,
                    spec.unit or cm.get("unit") or bm.get("unit") or "",
                    bm["value"],
                    cm["value"],
                    spec.better,
                    ratio,
                    p,
                    verdict,
                    note,
                )
            )
    unmatched = [p for p in metrics or () if not any(fnmatchcase(r.metric, p) for r in rows)]
    if unmatched:
        raise UserError(f"--metric {unmatched[0]}: no such metric in both runs' common cases")
    status_changes = [
        (c, base.cases[c].status, current.cases[c].status)
        for c in common
        if base.cases[c].status != current.cases[c].status
    ]
    if not rows and not status_changes:
        none = f" ({', '.join(sorted(unknown))} have no spec: name them with --metric)"
        raise UserError(
            f"{base.source} and {current.source} have no metric in common{none * bool(unknown)}"
        )
    return Comparison(
        base,
        current,
        threshold,
        alpha,
        rows,
        only_base=[c for c in base.cases if c not in current.cases],
        only_current=[c for c in current.cases if c not in base.cases],
        status_changes=status_changes,
        unknown_metrics=sorted(unknown),
        machine_differences=machine_differences(base.env, current.env),
        within_process=within_process,
        paired=paired,
        drift=drift,
    )


def parse_threshold(text: str) -> float:
    """``5%`` or ``0.05``: the relative change below which a metric counts as unchanged."""
    raw = text.strip()
    try:
        value = float(raw.removesuffix("%")) / (100 if raw.endswith("%") else 1)
    except ValueError:
        raise UserError(f"--threshold {text!r}: not a number (5% or 0.05)") from None
    if not 0 <= value < 1:
        raise UserError(f"--threshold {text!r}: give a relative change below 100%, like 5%")
    return value
