"""Power-law fits of what was measured against the parameter count N, series by series.

Fits are ordinary least squares on log–log axes (``metric = c·N^k``, ``scipy.stats.linregress``),
with a Student-t confidence interval on ``k`` from the slope's standard error: with three sizes
there is one degree of freedom, and the interval says so. The theory exponent beside each fit comes
from the predictions on the same cases (FLOPs per sample for time, predicted bytes for memory and
checkpoints), so a family whose FLOPs grow faster than its parameter count is held to its own
FLOPs, not to ``k = 1``.

N is the total parameter count (what memory and checkpoints hold) by default; a sparse family's
records also carry ``active_params`` (what one token touches, what its FLOPs follow), and
``scaling_fits(..., against="active_params")`` fits the same figures against that, for the series
where the two counts part ways, so a report can show both exponents.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from scipy import stats

import scaling_bench.workloads  # noqa: F401  (declares every built-in workload's metric specs)
from scaling_bench.config.case import Case
from scaling_bench.core.metrics import LOWER, MetricSpec, find, spec
from scaling_bench.core.stats import is_finite
from scaling_bench.workloads.base import declarations, declarations_with_step
from scaling_bench.workloads.catalog import LOSS_UNIT, Declared, Needs

CONFIDENCE = 0.95
MEASURED_STATUSES = ("ok", "diverged")
#: The parameter counts a figure can be fitted against, by record field, and what to call each.
N_CHOICES = {"params": "N", "active_params": "active N"}


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
    """A figure worth fitting against N (named, labelled and in the unit of its metric spec),
    and a figure proportional to what theory predicts. ``plotted`` is False for a quantity that
    another plot shows already (throughput: time per sample upside down)."""

    name: str
    label: str
    unit: str
    measured: Callable[[dict], float | None]
    theory: Callable[[dict], float | None] | None = None
    plotted: bool = True


def _measured(name: str) -> Callable[[dict], float | None]:
    return lambda r: positive_value(r["metrics"], name)


def _predicted(name: str) -> Callable[[dict], float | None]:
    return lambda r: positive_value(r["predicted"], name)


def _label(s: MetricSpec) -> str:
    return s.label or s.name


def timed_workloads() -> list[str]:
    """The workloads that time one step per call, whose time the fits hold against FLOPs."""
    return [w.name for w in declarations_with_step()]


def throughput_metric(workload: str) -> str:
    return f"{workload}_samples_per_s"


def sample_time_metric(workload: str) -> str:
    return f"{workload}_sample_s"


def s_per_sample(record: dict, workload: str) -> float | None:
    """Seconds per sample, measured: the reciprocal of the workload's throughput."""
    return _reciprocal(positive_value(record["metrics"], throughput_metric(workload)))


def flops_per_sample(record: dict, workload: str) -> float | None:
    """FLOPs per sample, predicted: what time should be proportional to."""
    return positive_value(record["predicted"], f"{workload}_flops_per_sample")


def _time_quantity(w: str) -> Quantity:
    s = spec(sample_time_metric(w))
    return Quantity(
        s.name,
        _label(s),
        s.unit,
        lambda r: s_per_sample(r, w),
        lambda r: flops_per_sample(r, w),
    )


def _throughput_quantity(w: str) -> Quantity:
    s = spec(throughput_metric(w))
    return Quantity(
        s.name,
        _label(s),
        s.unit,
        _measured(s.name),
        lambda r: _reciprocal(flops_per_sample(r, w)),
        plotted=False,
    )


def paired_metrics(record: dict) -> list[MetricSpec]:
    """The specs of the bytes a record both measured and predicted (memory peaks, checkpoint
    sizes, a rank's share of the training state), in the record's order."""
    specs = (find(n) for n in record["metrics"] if n in record["predicted"])
    return [s for s in specs if s is not None and s.unit == "bytes"]


def _paired_quantity(s: MetricSpec) -> Quantity:
    """A metric that ``predicted`` holds under its own name."""
    return Quantity(s.name, _label(s), s.unit, _measured(s.name), _predicted(s.name))


def own_model_workloads() -> list[Declared]:
    """Workloads that train models of their own (convergence studies): what the report shows
    as behaviour rather than cost."""
    return [w for w in declarations() if w.needs is Needs.OWN_MODELS]


def behaviour_specs() -> list[MetricSpec]:
    """Measured figures of those workloads that have a better direction (losses, errors,
    spikes, divergence, LR sensitivity)."""
    return [
        s for w in own_model_workloads() for s in w.specs if s.kind == "measured" and s.compared
    ]


def loss_specs() -> list[MetricSpec]:
    """The losses among them, lower is better: what is fitted against N."""
    return [s for s in behaviour_specs() if s.unit == LOSS_UNIT and s.better == LOWER]


def quantities(records: Iterable[dict]) -> list[Quantity]:
    """What is fitted, from the registry and the records: time per sample and throughput of
    every workload that times a step, every bytes metric the records both measured and
    predicted, and the losses of workloads that train their own models."""
    timed = timed_workloads()
    paired = {s.name: s for r in records for s in paired_metrics(r)}
    return [
        *(_time_quantity(w) for w in timed),
        *(_throughput_quantity(w) for w in timed),
        *(_paired_quantity(s) for s in paired.values()),
        *(Quantity(s.name, _label(s), s.unit, _measured(s.name)) for s in loss_specs()),
    ]


def series_of(record: dict) -> str:
    """Every axis but N, so a series is one line on a plot: the case's ``series_id``, or the
    whole case id where the record's case lacks an axis a case needs (nothing is cut from it)."""
    try:
        return Case.from_dict(record.get("case") or {}).series_id
    except (TypeError, ValueError):
        return record["case_id"]


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
    #: How many of the points are figures that did not settle (``meters.timing``).
    unsettled: int = 0
    #: The record field N is read from (``N_CHOICES``): the total count, or the active one.
    against: str = "params"

    @property
    def agrees_with_theory(self) -> bool | None:
        if self.theory_exponent is None or self.fit.ci is None:
            return None
        return self.fit.contains(self.theory_exponent)


def sizes_against(group: Sequence[dict], against: str) -> list[int] | None:
    """Each record's N as ``against`` counts it; ``None`` for the active count where a record
    lacks it or every one equals its total (a dense series: the fit would repeat the total's)."""
    sizes = [r.get(against) for r in group]
    if not all(isinstance(n, int) and n > 0 for n in sizes):
        return None
    if against != "params" and sizes == [r["params"] for r in group]:
        return None
    return sizes


def scaling_fits(
    records: Iterable[dict], confidence: float = CONFIDENCE, against: str = "params"
) -> list[ScalingFit]:
    """Every quantity that has two sizes or more in a series, fitted as ``c·N^k``, with N the
    records' ``against`` count (``N_CHOICES``); series without that count are left out."""
    fits = []
    groups = by_series(records)
    fitted = quantities(r for g in groups.values() for r in g)
    for series, group in groups.items():
        sizes = sizes_against(group, against)
        if sizes is None:
            continue
        for q in fitted:
            rows = [(n, q.measured(r), r) for n, r in zip(sizes, group, strict=True)]
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
            loose = sum((r["metrics"].get(q.name) or {}).get("settled") is False for *_, r in rows)
            fits.append(ScalingFit(series, q, fit, theory, points, loose, against))
    return fits
