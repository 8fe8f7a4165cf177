"""Chinchilla's approach 2: per compute budget a parabola in ln N, over the budgets a line.

The runs are an IsoFLOP design (``frontier.design``): for each compute budget C, several sizes
N, each trained on D = C / (6N) tokens. Per budget (Hoffmann et al. 2022, "Chinchilla"), the
loss against ln N is a parabola; its vertex is that budget's N_opt, and D_opt = C / (6 N_opt). A
budget whose vertex is not inside its sizes (or whose parabola opens downwards) is reported with
the reason and left out, never extrapolated. Over the budgets, ln N_opt against ln C is a line of
slope ``a`` (N_opt ∝ C^a), and b = 1 − a.

Intervals are at ``CONFIDENCE``. A budget's N_opt interval is Fieller's for the vertex
−c₁/(2c₂): the sizes where the fitted slope 2c₂·ln N + c₁ is within t standard errors of zero,
t on n − 3 degrees of freedom, so a budget needs four sizes for an interval; where that set is
unbounded (the curvature is not clearly positive at this noise) there is none. D_opt's and the
tokens per parameter's follow from it. The exponent's is the t interval of the line's slope on
(budgets − 2) degrees of freedom, from the scatter of the vertices about it (three budgets for an
interval). On synthetic designs (``studies/frontier_coverage.py``: four budgets of five sizes,
Chinchilla's law, 100 replicates) they held the truth in 96% (N_opt, pooled over the budgets)
and 93% (a) of replicates at 0.3% loss noise, 94% and 94% at 2%, where 44% of the N_opt
intervals were unbounded (counted as holding it); the percentile bootstrap of the parabola's
residuals they replace held N_opt in 82% and 77%.
``Run`` and ``Interval`` are the terms of every fit of the package (approach 3 is
``frontier.law``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
BOOTSTRAP = 200
#: Consecutive runs whose C differ by more than this factor belong to different budgets.
BUDGET_GAP = 1.5


@dataclass(frozen=True)
class Run:
    """One training run of the design: its size, its tokens and its held-out loss."""

    case_id: str
    params: int
    tokens: int
    loss: float
    duration_s: float | None = None

    @property
    def flops(self) -> float:
        return 6.0 * self.params * self.tokens


@dataclass(frozen=True)
class Interval:
    """A point estimate and its interval (``None`` where it cannot be had)."""

    value: float
    low: float | None = None
    high: float | None = None

    def contains(self, x: float) -> bool:
        return self.low is not None and self.high is not None and self.low <= x <= self.high

    def to_dict(self) -> dict:
        return {"value": finite(self.value), "low": finite(self.low), "high": finite(self.high)}


def finite(x: float | None) -> float | None:
    """``x`` as a float, None where it is absent or not finite (JSON has no infinity)."""
    return float(x) if x is not None and math.isfinite(x) else None


def bootstrap_interval(value: float, replicates: Sequence[float], confidence: float) -> Interval:
    reps = [r for r in replicates if math.isfinite(r)]
    if len(reps) < 2:
        return Interval(value)
    tail = (1 - confidence) / 2
    low, high = np.quantile(reps, [tail, 1 - tail])
    return Interval(value, float(low), float(high))


def budget_groups(runs: Iterable[Run]) -> list[list[Run]]:
    """Runs grouped by compute budget: sorted by C, a new budget where C jumps by more than
    ``BUDGET_GAP`` (a design's budgets are further apart; rounding to whole steps is not)."""
    groups: list[list[Run]] = []
    for run in sorted(runs, key=lambda r: (r.flops, r.params)):
        if groups and run.flops <= BUDGET_GAP * groups[-1][0].flops:
            groups[-1].append(run)
        else:
            groups.append([run])
    return [sorted(g, key=lambda r: r.params) for g in groups]


@dataclass(frozen=True)
class IsoFlopFit:
    """One budget's parabola in ln N; ``reason`` says why it has no optimum, else None."""

    flops: float
    runs: tuple[Run, ...]
    coefficients: tuple[float, float, float] | None = None
    n_opt: Interval | None = None
    d_opt: Interval | None = None
    tokens_per_param: Interval | None = None
    loss_opt: float | None = None
    reason: str | None = None

    @property
    def fitted(self) -> bool:
        return self.n_opt is not None

    def to_dict(self) -> dict:
        return {
            "flops": self.flops,
            "sizes": [r.params for r in self.runs],
            "losses": [r.loss for r in self.runs],
            "coefficients": list(self.coefficients) if self.coefficients else None,
            "n_opt": _maybe(self.n_opt),
            "d_opt": _maybe(self.d_opt),
            "tokens_per_param": _maybe(self.tokens_per_param),
            "loss_opt": finite(self.loss_opt),
            "reason": self.reason,
        }


def _maybe(interval: Interval | None) -> dict | None:
    return interval.to_dict() if interval is not None else None


def _vertex(coefficients: np.ndarray) -> float:
    """ln N at the parabola's minimum; NaN where it opens downwards (no minimum)."""
    c2, c1, _ = coefficients
    return -c1 / (2 * c2) if c2 > 0 else math.nan


def _why_not_interior(x: np.ndarray, coefficients: np.ndarray) -> str | None:
    vertex = _vertex(coefficients)
    if math.isnan(vertex):
        return "the loss is not convex in ln N over these sizes: no minimum to take"
    if vertex <= x.min():
        return "the minimum lies below the smallest size: the sizes were too narrow, add smaller"
    if vertex >= x.max():
        return "the minimum lies above the largest size: the sizes were too narrow, add larger"
    return None


def _geometric_mean(values: Iterable[float]) -> float:
    logs = [math.log(v) for v in values]
    return math.exp(sum(logs) / len(logs))


def fieller(c2: float, c1: float, cov: np.ndarray, t: float) -> tuple[float, float] | None:
    """Fieller's interval for the vertex u = −c1/(2·c2): the u where the slope 2·c2·u + c1 is
    within ``t`` standard errors of zero (``cov`` of (c2, c1)); None where that set is unbounded
    (c2 not clearly above zero: the parabola may have no minimum)."""
    qa = 4 * (c2 * c2 - t * t * cov[0, 0])
    qb = 4 * (c2 * c1 - t * t * cov[0, 1])
    qc = c1 * c1 - t * t * cov[1, 1]
    disc = qb * qb - 4 * qa * qc
    if not (qa > 0 and disc > 0):
        return None
    root = math.sqrt(disc)
    return (-qb - root) / (2 * qa), (-qb + root) / (2 * qa)


def fit_isoflop(runs: Sequence[Run], confidence: float) -> IsoFlopFit:
    """One budget's parabola and its Fieller interval for N_opt (module docstring)."""
    flops = _geometric_mean(r.flops for r in runs)
    x = np.log([r.params for r in runs])
    y = np.array([r.loss for r in runs])
    if len(set(x.tolist())) < 3:
        reason = f"{len(set(x.tolist()))} distinct sizes: a parabola needs three"
        return IsoFlopFit(flops, tuple(runs), reason=reason)
    coefficients = np.polyfit(x, y, 2)
    quadratic, linear, constant = (float(c) for c in coefficients)
    fit = IsoFlopFit(flops, tuple(runs), (quadratic, linear, constant))
    if why := _why_not_interior(x, coefficients):
        return replace(fit, reason=why)
    vertex = _vertex(coefficients)
    bounds = None
    dof = len(x) - 3
    if dof > 0:
        centre = x.mean()  # centred, the (c2, c1) covariance is well conditioned
        design = np.vander(x - centre, 3)
        (c2, c1, _), rss, *_ = np.linalg.lstsq(design, y, rcond=None)
        cov = float(rss[0]) / dof * np.linalg.inv(design.T @ design)
        t = float(stats.t.ppf((1 + confidence) / 2, dof))
        bounds = fieller(float(c2), float(c1), cov[:2, :2], t)
    n = math.exp(vertex)
    if bounds is None:
        n_opt, d_opt, ratio = Interval(n), Interval(flops / (6 * n)), Interval(flops / (6 * n * n))
    else:
        low, high = (math.exp(centre + u) for u in bounds)
        n_opt = Interval(n, low, high)
        d_opt = Interval(flops / (6 * n), flops / (6 * high), flops / (6 * low))
        ratio = Interval(flops / (6 * n * n), flops / (6 * high * high), flops / (6 * low * low))
    loss = float(np.polyval(coefficients, vertex))
    return IsoFlopFit(flops, tuple(runs), fit.coefficients, n_opt, d_opt, ratio, loss)


@dataclass(frozen=True)
class Approach2:
    """Every budget's parabola, and N_opt ∝ C^a, D_opt ∝ C^b over the budgets with an optimum."""

    budgets: tuple[IsoFlopFit, ...]
    a: Interval | None = None
    b: Interval | None = None
    #: ln N_opt = a·ln C + intercept.
    intercept: float | None = None
    reason: str | None = None

    def n_opt(self, flops: float) -> float | None:
        if self.a is None or self.intercept is None:
            return None
        return math.exp(self.intercept + self.a.value * math.log(flops))

    def to_dict(self) -> dict:
        return {
            "budgets": [b.to_dict() for b in self.budgets],
            "a": _maybe(self.a),
            "b": _maybe(self.b),
            "intercept": self.intercept,
            "reason": self.reason,
        }


def approach2(runs: Sequence[Run], confidence: float = CONFIDENCE) -> Approach2:
    """Chinchilla's approach 2 (module docstring): a parabola per budget, a line over them."""
    fits = [fit_isoflop(group, confidence) for group in budget_groups(runs)]
    good = [(f.flops, f.n_opt.value) for f in fits if f.n_opt is not None]
    if len(good) < 2:
        reason = f"{len(good)} budget(s) with an interior minimum: the exponent needs two"
        return Approach2(tuple(fits), reason=reason)
    log_c = np.log([flops for flops, _ in good])
    log_n = np.log([n_opt for _, n_opt in good])
    (slope, intercept), rss, *_ = np.linalg.lstsq(np.vander(log_c, 2), log_n, rcond=None)
    dof = len(good) - 2
    if dof > 0:
        spread = float(((log_c - log_c.mean()) ** 2).sum())
        half = float(stats.t.ppf((1 + confidence) / 2, dof)) * math.sqrt(rss[0] / dof / spread)
        low, high = float(slope) - half, float(slope) + half
        a, b = Interval(float(slope), low, high), Interval(1 - float(slope), 1 - high, 1 - low)
    else:
        a, b = Interval(float(slope)), Interval(1 - float(slope))
    return Approach2(tuple(fits), a, b, float(intercept))
