"""Power-law fits of what was measured against the parameter count N, series by series.

Fits are ordinary least squares on log–log axes (``metric = c·N^k``, ``scipy.stats.linregress``),
with a Student-t confidence interval on ``k`` from the slope's standard error: with three sizes
there is one degree of freedom, and the interval says so. The theory exponent beside each fit comes
from the predictions on the same cases (FLOPs per sample for time, predicted bytes for memory and
checkpoints), so a family whose FLOPs grow faster than its parameter count is held to its own
FLOPs, not to ``k = 1``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from scipy import stats

from scaling_bench.core.stats import is_finite
from scaling_bench.store.records import TRAIN_PEAK_NAMES

CONFIDENCE = 0.95
MEASURED_STATUSES = ("ok", "diverged")
WORKLOADS = ("forward", "train")


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
    line = stats.linregress(xs, ys)
    # A constant is fitted exactly, but linregress leaves its correlation and error undefined.
    stderr, r2 = (0.0, 1.0) if len(set(ys)) == 1 else (line.stderr, line.rvalue**2)
    df = len(pairs) - 2
    ci = None
    if df > 0:
        half = stats.t.ppf((1 + confidence) / 2, df) * stderr
        ci = (float(line.slope - half), float(line.slope + half))
    return PowerLaw(float(line.slope), math.exp(line.intercept), ci, float(r2), len(pairs))


def positive_value(section: dict, name: str) -> float | None:
    """``section[name]["value"]`` where it is a finite positive figure (fit on log axes)."""
    metric = section.get(name)
    value = metric.get("value") if isinstance(metric, dict) else None
    return float(value) if is_finite(value) and value > 0 else None


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
    return lambda r: positive_value(r["metrics"], name)


def _predicted(name: str) -> Callable[[dict], float | None]:
    return lambda r: positive_value(r["predicted"], name)


def s_per_sample(record: dict, workload: str) -> float | None:
    """Seconds per sample, measured: the reciprocal of the workload's throughput."""
    return _reciprocal(positive_value(record["metrics"], f"{workload}_samples_per_s"))


def flops_per_sample(record: dict, workload: str) -> float | None:
    """FLOPs per sample, predicted: what time should be proportional to."""
    return positive_value(record["predicted"], f"{workload}_flops_per_sample")


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
