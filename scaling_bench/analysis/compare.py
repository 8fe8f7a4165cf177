"""Run against run: a gate that must not cry wolf.

A metric regresses only when it moved beyond the threshold in the bad direction *and* the raw
samples say the move is not noise (two-sided Mann–Whitney U at ``ALPHA``, ``scipy.stats``). A
figure measured once has no spread to test: bytes on disk are counted, so they are taken at face
value; a single timing or memory peak is inconclusive.

Derived figures (samples/s, tokens/s, FLOP/s, MFU, seconds per sample from the step time; bytes/s
from the save or load time) are their source scaled by a constant and share its verdict, so by
default only the source is compared where both are present.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from fnmatch import fnmatchcase
from typing import Any

from scipy import stats

from scaling_bench.core.errors import UserError
from scaling_bench.core.stats import is_finite
from scaling_bench.store.foreign import Run

#: Many metrics are tested at once, so a 1-in-100 chance of a false alarm each is already plenty.
ALPHA = 0.01
DEFAULT_THRESHOLD = 0.05
#: Our bookkeeping, not performance: seconds spent timing, the machine's own peak.
NOT_COMPARED = ("*_timed_s", "peak_flops_per_s")
#: (suffix of a derived metric, suffix of the time it is derived from), as throughput.py names them.
DERIVED = (
    ("_samples_per_s", "_step_s"),
    ("_tokens_per_s", "_step_s"),
    ("_flops_per_s", "_step_s"),
    ("_mfu", "_step_s"),
    ("_bytes_per_s", "_s"),
    ("_sample_s", "_step_s"),
)
STABILITY_METRICS = (
    "final_loss_std",
    "loss_spikes",
    "diverged_fraction",
    "lr_sensitivity",
    "generalization_gap",
)
FAILED_STATUSES = ("oom", "timeout", "crashed", "diverged")


def direction(name: str) -> int | None:
    """+1 where higher is better, -1 where lower is better, ``None`` where the name cannot say."""
    if name.endswith(("_per_s", "_mfu")) or name == "mfu":
        return 1
    if name.endswith(("_s", "_bytes", "_error")) or "loss" in name or name in STABILITY_METRICS:
        return -1
    return None


def mann_whitney_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value of the Mann–Whitney U test that ``a`` and ``b`` share a distribution.

    scipy's ``method="auto"``: exact where a side has 8 samples or fewer and nothing ties, else
    the normal approximation with the tie and continuity corrections (identical samples give 1).
    """
    return float(stats.mannwhitneyu(a, b, alternative="two-sided", method="auto").pvalue)


def _summary_p(base: dict, current: dict) -> float | None:
    """Where only medians and IQRs were kept (pytest-benchmark without --benchmark-save-data, asv
    without --record-samples): a z-test on the medians, each median's standard error taken as that
    of a normal distribution with the same IQR (σ = IQR/1.349, SE = 1.2533·σ/√n)."""
    sides = (base, current)
    if not all(is_finite(m.get(k)) for m in sides for k in ("median", "iqr", "n")):
        return None
    if any(m["n"] < 2 for m in sides):
        return None
    se2 = sum((1.2533 * m["iqr"] / 1.349) ** 2 / m["n"] for m in sides)
    diff = current["median"] - base["median"]
    if se2 == 0:
        return 0.0 if diff else 1.0
    return float(2 * stats.norm.sf(abs(diff) / math.sqrt(se2)))


def significance(base: dict, current: dict) -> float | None:
    """p-value that the two metrics differ; ``None`` where there is nothing to test."""
    a = [x for x in base.get("samples") or () if is_finite(x)]
    b = [x for x in current.get("samples") or () if is_finite(x)]
    if a and b and len(a) + len(b) > 2:
        return mann_whitney_p(a, b)
    return _summary_p(base, current)


@dataclass(frozen=True)
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
    base: dict, current: dict, sign: int, threshold: float, alpha: float, counted: bool
) -> tuple[float | None, float | None, str, str]:
    """(ratio, p, verdict, note) for one metric; ``sign`` is +1 where higher is better, and
    ``counted`` says the figure is exact (bytes on disk), so a move needs no test."""
    b, c = base.get("value"), current.get("value")
    if not (is_finite(b) and is_finite(c)):
        return None, None, "inconclusive", "no finite value"
    if b == c:
        return (1.0 if b else None), None, "unchanged", ""
    if b <= 0 or c <= 0:
        return None, None, "inconclusive", "no ratio of non-positive values"
    ratio = c / b
    better = ratio**sign  # above 1: current is better
    if 1 / (1 + threshold) <= better <= 1 + threshold:
        return ratio, significance(base, current), "unchanged", ""
    p = significance(base, current)
    moved = "improved" if better > 1 else "regressed"
    if p is None:
        if counted:
            return ratio, None, moved, "exact count"
        return ratio, None, "inconclusive", "single measurement"
    if p < alpha:
        return ratio, p, moved, ""
    return ratio, p, "inconclusive", "within noise"


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

    @property
    def regressions(self) -> list[MetricComparison]:
        return [r for r in self.rows if r.verdict == "regressed"]

    @property
    def newly_failed(self) -> list[tuple[str, str, str]]:
        return [s for s in self.status_changes if s[1] == "ok" and s[2] in FAILED_STATUSES]

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
            "status_changes": [
                {"case_id": c, "base": b, "current": s} for c, b, s in self.status_changes
            ],
            "by_family": {
                family: {m: {"geomean_ratio": g, "cases": n} for m, (g, n) in metrics.items()}
                for family, metrics in self.by_family().items()
            },
        }


def _is_count(name: str, base: dict, current: dict) -> bool:
    """Bytes measured once that are not a peak: sizes on disk, the same on every run."""
    single = base.get("n", 1) == 1 and current.get("n", 1) == 1
    return single and name.endswith("_bytes") and "peak" not in name


def _selected(name: str, metrics: dict, patterns: Sequence[str] | None) -> bool:
    if patterns:
        return any(fnmatchcase(name, p) for p in patterns)
    if direction(name) is None or any(fnmatchcase(name, p) for p in NOT_COMPARED):
        return False
    return not any(
        name.endswith(suffix) and name.removesuffix(suffix) + source in metrics
        for suffix, source in DERIVED
    )


def compare_runs(
    base: Run,
    current: Run,
    threshold: float = DEFAULT_THRESHOLD,
    metrics: Sequence[str] | None = None,
    alpha: float = ALPHA,
) -> Comparison:
    """Pair cases by id and metrics by name; ``metrics`` are names or glob patterns.

    Without ``metrics``, every metric whose name gives its direction is compared, except derived
    ones beside their source; a named metric whose name does not give its direction is taken as
    lower-is-better (asv's convention).
    """
    common = [c for c in base.cases if c in current.cases]
    if not common:
        raise UserError(f"{base.source} and {current.source} have no case in common")
    rows = []
    for case_id in common:
        b, c = base.cases[case_id], current.cases[case_id]
        shared = {k: v for k, v in c.metrics.items() if k in b.metrics}
        for name in sorted(shared):
            if not _selected(name, shared, metrics):
                continue
            bm, cm = b.metrics[name], c.metrics[name]
            sign = direction(name) or -1
            counted = _is_count(name, bm, cm)
            ratio, p, verdict, note = _verdict(bm, cm, sign, threshold, alpha, counted)
            rows.append(
                MetricComparison(
                    case_id,
                    c.family or b.family,
                    name,
                    cm.get("unit") or bm.get("unit") or "",
                    bm["value"],
                    cm["value"],
                    sign,
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
        raise UserError(f"{base.source} and {current.source} have no metric in common")
    return Comparison(
        base,
        current,
        threshold,
        alpha,
        rows,
        only_base=[c for c in base.cases if c not in current.cases],
        only_current=[c for c in current.cases if c not in base.cases],
        status_changes=status_changes,
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
