"""What records mean: power-law fits, distance from theory, and run-vs-run comparison.

Fits are ordinary least squares on log–log axes (``metric = c·N^k``), with a Student-t confidence
interval on ``k``: with three sizes there is one degree of freedom, and the interval says so.
The theory exponent beside each fit comes from the predictions on the same cases (FLOPs per sample
for time, predicted bytes for memory and checkpoints), so a family whose FLOPs grow faster than
its parameter count is held to its own FLOPs, not to ``k = 1``.

The comparison is a gate that must not cry wolf: a metric regresses only when it moved beyond the
threshold in the bad direction *and* the raw samples say the move is not noise (two-sided
Mann–Whitney U at ``ALPHA``). A figure measured once has no spread to test: bytes on disk
are counted, so they are taken at face value; a single timing or memory peak is inconclusive.

Derived figures (samples/s, tokens/s, FLOP/s, MFU, seconds per sample from the step time; bytes/s
from the save or load time) are their source scaled by a constant and share its verdict, so by
default only the source is compared where both are present.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from fnmatch import fnmatchcase
from functools import cache
from typing import Any

from scaling_bench.core.errors import UserError
from scaling_bench.store.foreign import Run
from scaling_bench.store.records import TRAIN_PEAK_NAMES

CONFIDENCE = 0.95
THEORY_TOLERANCE = 0.25
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
MEASURED_STATUSES = ("ok", "diverged")
WORKLOADS = ("forward", "train")


def direction(name: str) -> int | None:
    """+1 where higher is better, -1 where lower is better, ``None`` where the name cannot say."""
    if name.endswith(("_per_s", "_mfu")) or name == "mfu":
        return 1
    if name.endswith(("_s", "_bytes", "_error")) or "loss" in name or name in STABILITY_METRICS:
        return -1
    return None


# --- power-law fits ------------------------------------------------------------------------


def _t_two_sided(t: float, df: int) -> float:
    """P(|T| < t) for Student's t with integer ``df`` (Abramowitz & Stegun 26.7.3–4, exact)."""
    theta = math.atan(t / math.sqrt(df))
    c2 = math.cos(theta) ** 2
    if df % 2:
        term = total = math.cos(theta) if df > 1 else 0.0
        for k in range(3, df - 1, 2):
            term *= c2 * (k - 1) / k
            total += term
        return 2 / math.pi * (theta + math.sin(theta) * total)
    term = total = 1.0
    for k in range(2, df - 1, 2):
        term *= c2 * (k - 1) / k
        total += term
    return math.sin(theta) * total


@cache
def t_quantile(confidence: float, df: int) -> float:
    """The t with P(|T| < t) = ``confidence``: 12.71 for df=1 at 95%, 1.96 as df grows."""
    lo, hi = 0.0, 1.0
    while _t_two_sided(hi, df) < confidence:
        hi *= 2
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _t_two_sided(mid, df) < confidence else (lo, mid)
    return (lo + hi) / 2


@dataclass(frozen=True)
class PowerLaw:
    """``y = prefactor · N^exponent``; ``ci`` is ``None`` with two points (no residual left)."""

    exponent: float
    prefactor: float
    ci: tuple[float, float] | None
    r2: float
    n_points: int

    def __call__(self, n: float) -> float:
        return self.prefactor * n**self.exponent

    def contains(self, exponent: float) -> bool:
        return self.ci is not None and self.ci[0] <= exponent <= self.ci[1]


def fit_power_law(
    n: Sequence[float], y: Sequence[float], confidence: float = CONFIDENCE
) -> PowerLaw | None:
    """Least squares of log y on log N; ``None`` without two distinct positive sizes."""
    pairs = [(math.log(a), math.log(b)) for a, b in zip(n, y, strict=True) if a > 0 and b > 0]
    xs, ys = [p[0] for p in pairs], [p[1] for p in pairs]
    if len(set(xs)) < 2:
        return None
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in pairs) / sxx
    intercept = my - slope * mx
    sse = sum((y - intercept - slope * x) ** 2 for x, y in pairs)
    sst = sum((y - my) ** 2 for y in ys)
    df = len(pairs) - 2
    ci = None
    if df > 0:
        half = t_quantile(confidence, df) * math.sqrt(sse / df / sxx)
        ci = (slope - half, slope + half)
    r2 = 1 - sse / sst if sst > 0 else 1.0
    return PowerLaw(slope, math.exp(intercept), ci, r2, len(pairs))


def _value(section: dict, name: str) -> float | None:
    metric = section.get(name)
    value = metric.get("value") if isinstance(metric, dict) else None
    return float(value) if _is_finite(value) and value > 0 else None


def _is_finite(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _reciprocal(value: float | None) -> float | None:
    return 1 / value if value else None


@dataclass(frozen=True)
class Quantity:
    """A figure worth fitting against N, and a figure proportional to what theory predicts."""

    name: str
    label: str
    unit: str
    measured: Callable[[dict], float | None]
    theory: Callable[[dict], float | None] | None = None


def _measured(name: str) -> Callable[[dict], float | None]:
    return lambda r: _value(r["metrics"], name)


def _predicted(name: str) -> Callable[[dict], float | None]:
    return lambda r: _value(r["predicted"], name)


def s_per_sample(record: dict, workload: str) -> float | None:
    """Seconds per sample, measured: the reciprocal of the workload's throughput."""
    return _reciprocal(_value(record["metrics"], f"{workload}_samples_per_s"))


def flops_per_sample(record: dict, workload: str) -> float | None:
    """FLOPs per sample, predicted: what time should be proportional to."""
    return _value(record["predicted"], f"{workload}_flops_per_sample")


def _time_quantity(w: str) -> Quantity:
    return Quantity(
        f"{w}_s_per_sample",
        f"{w} time per sample",
        "s",
        lambda r: s_per_sample(r, w),
        lambda r: flops_per_sample(r, w),
    )


def _throughput_quantity(w: str) -> Quantity:
    return Quantity(
        f"{w}_samples_per_s",
        f"{w} throughput",
        "samples/s",
        _measured(f"{w}_samples_per_s"),
        lambda r: _reciprocal(flops_per_sample(r, w)),
    )


def _paired_quantity(name: str, label: str, unit: str) -> Quantity:
    """A metric that ``predicted`` holds under its own name (memory peaks, checkpoint bytes)."""
    return Quantity(name, label, unit, _measured(name), _predicted(name))


QUANTITIES: tuple[Quantity, ...] = (
    *(_time_quantity(w) for w in WORKLOADS),
    *(_throughput_quantity(w) for w in WORKLOADS),
    _paired_quantity(TRAIN_PEAK_NAMES["cuda"], "train peak GPU allocated", "bytes"),
    _paired_quantity(TRAIN_PEAK_NAMES["cpu"], "train peak RSS", "bytes"),
    _paired_quantity("checkpoint_bytes", "checkpoint size", "bytes"),
    _paired_quantity("checkpoint_bytes_with_optimizer", "checkpoint with optimizer", "bytes"),
    Quantity("final_loss_mean", "final loss", "", _measured("final_loss_mean")),
    Quantity("heldout_loss", "held-out loss", "", _measured("heldout_loss")),
)


def series_of(record: dict) -> str:
    """The case id without its size: every axis but N, so a series is one line on a plot."""
    family, _, rest = record["case_id"].partition("-")
    return f"{family}-{rest.partition('-')[2]}"


def by_series(records: Iterable[dict]) -> dict[str, list[dict]]:
    """Records with measurements (finished, or diverged in training), grouped by series and
    sorted by parameter count."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in (r for r in records if r["status"] in MEASURED_STATUSES and r.get("params")):
        groups[series_of(r)].append(r)
    return {k: sorted(v, key=lambda r: r["params"]) for k, v in sorted(groups.items())}


@dataclass(frozen=True)
class ScalingFit:
    """One quantity of one series against N, with the exponent theory expects on the same cases."""

    series: str
    quantity: Quantity
    fit: PowerLaw
    theory_exponent: float | None
    points: tuple[tuple[float, float], ...]

    @property
    def agrees_with_theory(self) -> bool | None:
        if self.theory_exponent is None or self.fit.ci is None:
            return None
        return self.fit.contains(self.theory_exponent)


def scaling_fits(records: Iterable[dict], confidence: float = CONFIDENCE) -> list[ScalingFit]:
    """Every quantity that has two sizes or more in a series, fitted as ``c·N^k``."""
    fits = []
    for series, group in by_series(records).items():
        for q in QUANTITIES:
            rows = [(r["params"], q.measured(r), r) for r in group]
            rows = [(n, y, r) for n, y, r in rows if y is not None]
            fit = fit_power_law([n for n, _, _ in rows], [y for _, y, _ in rows], confidence)
            if fit is None:
                continue
            theory = None
            if q.theory:
                pred = [(n, q.theory(r)) for n, _, r in rows]
                if all(p is not None for _, p in pred):
                    theory_fit = fit_power_law([n for n, _ in pred], [p for _, p in pred])
                    theory = theory_fit.exponent if theory_fit else None
            points = tuple((float(n), y) for n, y, _ in rows)
            fits.append(ScalingFit(series, q, fit, theory, points))
    return fits


@dataclass(frozen=True)
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


def flops_rate(group: Sequence[dict], workload: str) -> float | None:
    """The FLOP/s of the series' largest measured case: the constant in ``time ∝ FLOPs``.

    The largest case is the nearest to compute-bound; against its rate, a smaller case's excess
    time is the overhead that FLOPs do not account for.
    """
    rates = [
        f / t
        for r in group
        if (f := flops_per_sample(r, workload)) and (t := s_per_sample(r, workload))
    ]
    return rates[-1] if rates else None


def theory_checks(records: Iterable[dict]) -> list[TheoryCheck]:
    """Memory and checkpoint bytes against their predictions; time per sample against FLOPs per
    sample at the rate of the series' largest case, so a case flags where overhead, not FLOPs,
    sets its time."""
    checks = []
    for series, group in by_series(records).items():
        rates = {w: flops_rate(group, w) for w in WORKLOADS}
        for r in group:
            pairs = [
                (name, m.get("unit", ""), _value(r["metrics"], name), _value(r["predicted"], name))
                for name, m in r["predicted"].items()
            ]
            for w, rate in rates.items():
                flops = flops_per_sample(r, w)
                predicted = flops / rate if flops and rate else None
                pairs.append((f"{w}_s_per_sample", "s", s_per_sample(r, w), predicted))
            checks.extend(
                TheoryCheck(r["case_id"], series, r["params"], *pair)
                for pair in pairs
                if pair[2] is not None and pair[3] is not None
            )
    return checks


# --- run against run ------------------------------------------------------------------------


def _exact_u_cdf(u: int, n1: int, n2: int) -> float:
    """P(U <= u) without ties, from the count of orderings with each U (small samples only)."""

    @cache
    def count(m: int, n: int, k: int) -> int:
        if k < 0:
            return 0
        if m == 0 or n == 0:
            return int(k == 0)
        return count(m - 1, n, k - n) + count(m, n - 1, k)

    return sum(count(n1, n2, k) for k in range(u + 1)) / math.comb(n1 + n2, n1)


def mann_whitney_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value of the Mann–Whitney U test that ``a`` and ``b`` share a distribution.

    Exact below 8 samples a side without ties; otherwise the normal approximation with the tie
    correction and a continuity correction.
    """
    n1, n2 = len(a), len(b)
    if not n1 or not n2:
        return 1.0
    pooled = sorted([(v, 0) for v in a] + [(v, 1) for v in b])
    rank_a, ties, i = 0.0, 0, 0
    while i < len(pooled):
        j = i
        while j + 1 < len(pooled) and pooled[j + 1][0] == pooled[i][0]:
            j += 1
        t = j - i + 1
        ties += t**3 - t
        rank_a += (i + j + 2) / 2 * sum(1 for k in range(i, j + 1) if pooled[k][1] == 0)
        i = j + 1
    u = rank_a - n1 * (n1 + 1) / 2
    u_small = min(u, n1 * n2 - u)
    if not ties and max(n1, n2) < 8:
        return min(1.0, 2 * _exact_u_cdf(round(u_small), n1, n2))
    n = n1 + n2
    var = n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1)))
    if var <= 0:
        return 1.0
    z = (n1 * n2 / 2 - u_small - 0.5) / math.sqrt(var)
    return min(1.0, math.erfc(max(z, 0.0) / math.sqrt(2)))


def _summary_p(base: dict, current: dict) -> float | None:
    """Where only medians and IQRs were kept (pytest-benchmark without --benchmark-save-data, asv
    without --record-samples): a z-test on the medians, each median's standard error taken as that
    of a normal distribution with the same IQR (σ = IQR/1.349, SE = 1.2533·σ/√n)."""
    sides = (base, current)
    if not all(_is_finite(m.get(k)) for m in sides for k in ("median", "iqr", "n")):
        return None
    if any(m["n"] < 2 for m in sides):
        return None
    se2 = sum((1.2533 * m["iqr"] / 1.349) ** 2 / m["n"] for m in sides)
    diff = current["median"] - base["median"]
    if se2 == 0:
        return 0.0 if diff else 1.0
    return math.erfc(abs(diff) / math.sqrt(2 * se2))


def significance(base: dict, current: dict) -> float | None:
    """p-value that the two metrics differ; ``None`` where there is nothing to test."""
    a = [x for x in base.get("samples") or () if _is_finite(x)]
    b = [x for x in current.get("samples") or () if _is_finite(x)]
    if a and b and len(a) + len(b) > 2:
        return mann_whitney_p(a, b)
    return _summary_p(base, current)


@dataclass(frozen=True)
class MetricComparison:
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
    if not (_is_finite(b) and _is_finite(c)):
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
                metric: (math.exp(statistics.fmean(math.log(x) for x in xs)), len(xs))
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
