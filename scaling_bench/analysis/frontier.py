"""Compute-optimal fits: how large a model, on how many tokens, for a compute or a time budget.

The runs are an IsoFLOP design (``engine.frontier``): for each compute budget C, several sizes N,
each trained on D = C / (6N) tokens with a cosine schedule sized to the run. Two of Hoffmann et
al.'s (2022, "Chinchilla") three approaches are fitted to their held-out losses:

- **Approach 2**, per budget: the loss against ln N is a parabola; its vertex is that budget's
  N_opt, and D_opt = C / (6 N_opt). A budget whose vertex is not inside its sizes (or whose
  parabola opens downwards) is reported with the reason and left out, never extrapolated. Over
  the budgets, ln N_opt against ln C is a line of slope ``a`` (N_opt ∝ C^a), and b = 1 − a.
- **Approach 3**, over every run: L(N, D) = E + A/N^α + B/D^β, fitted as Hoffmann et al. do it:
  the Huber loss (δ = 10⁻³) of LSE(a − α ln N, b − β ln D, e) − ln L, with A = eᵃ, B = eᵇ,
  E = eᵉ, minimised by L-BFGS from their grid of starting points (α, β ∈ {0, 0.5, …, 2},
  e ∈ {−1, −0.5, …, 1}, a, b ∈ {0, 5, …, 25}). The 4,500 points are evaluated at once and
  L-BFGS runs from the ``STARTS`` best (a run from each is ~10 ms here, all of them a minute).
  Then N_opt(C) = G·(C/6)^a and D_opt(C) = (C/6)^b / G with a = β/(α+β), b = α/(α+β),
  G = (αA / βB)^(1/(α+β)).

Intervals are percentile bootstrap intervals at ``CONFIDENCE``: approach 3 resamples runs with
replacement and refits from the full fit's optimum; approach 2 resamples each budget's parabola
residuals (scaled by √(n/(n−3)) for the three fitted coefficients), so a budget needs four sizes
for an interval. A replicate is seeded: the same runs give the same intervals.

**Counting.** N is every parameter of the model as its family counts it (``record["params"]``):
for gpt the tied token embedding once and the position table, as Chinchilla counts (Kaplan et
al. left embeddings out, which Pearce & Song 2024 show biases small-scale exponents). D is the
tokens trained, steps × batch × tokens per sample; C = 6·N·D. The loss is the held-out loss
after the last step (the runs see each training sample at most once, as Chinchilla's do).

**Time on this machine.** With the train workload's tokens/s measured against N (same device,
precision, batch and sequence length), a wall-clock budget T buys D(N) = T · tokens/s(N) tokens
at size N; the time-optimal N minimises L(N, D(N)) over the measured sizes (interpolated on
log–log axes, never extrapolated). The time to reach a held-out loss L* at size N is
D*(N) / tokens/s(N), with D*(N) = (B / (L* − E − A/N^α))^(1/β) where L* is above the size's
floor E + A/N^α. Its interval is the bootstrap's over the laws; the throughput's own noise is
not in it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from scipy.optimize import minimize
from threadpoolctl import threadpool_limits

from scaling_bench.config.case import Case
from scaling_bench.config.convergence import settings_for
from scaling_bench.core.errors import UserError
from scaling_bench.engine.frontier import Throughput, record_case, setting_of, throughput_of
from scaling_bench.models import family, tokens_per_sample

CONFIDENCE = 0.95
HUBER_DELTA = 1e-3
#: L-BFGS starts from this many of the best points of Hoffmann et al.'s grid.
STARTS = 16
BOOTSTRAP = 200
#: Consecutive runs whose C differ by more than this factor belong to different budgets.
BUDGET_GAP = 1.5
#: A parametric fit needs more runs than its five parameters.
MIN_RUNS_PARAMETRIC = 6
LOSS_METRIC = "heldout_loss"
COUNTING = (
    "N counts every parameter (the tied token embedding once, the position table too), as "
    "Chinchilla does; D is the tokens trained; C = 6·N·D"
)
#: Hoffmann et al.'s grid of starting points, columns (a, b, e, alpha, beta).
GRID = np.array(
    list(
        itertools.product(
            np.arange(0, 26, 5.0),
            np.arange(0, 26, 5.0),
            np.arange(-1, 1.01, 0.5),
            np.arange(0, 2.01, 0.5),
            np.arange(0, 2.01, 0.5),
        )
    )
)
#: Bounds that keep L-BFGS out of the degenerate corners (negative exponents, infinite terms).
_BOUNDS = ((-20.0, 60.0), (-20.0, 60.0), (-10.0, 5.0), (0.0, 5.0), (0.0, 5.0))


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
    """A point estimate and its bootstrap interval (``None`` where it cannot be had)."""

    value: float
    low: float | None = None
    high: float | None = None

    def contains(self, x: float) -> bool:
        return self.low is not None and self.high is not None and self.low <= x <= self.high

    def to_dict(self) -> dict:
        return {"value": _finite(self.value), "low": _finite(self.low), "high": _finite(self.high)}


def _finite(x: float | None) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def _interval(value: float, replicates: Sequence[float], confidence: float) -> Interval:
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


# Approach 2 ---------------------------------------------------------------------------------


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
            "loss_opt": _finite(self.loss_opt),
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


def fit_isoflop(
    runs: Sequence[Run], rng: np.random.Generator, bootstrap: int, confidence: float
) -> tuple[IsoFlopFit, np.ndarray]:
    """One budget's fit, and its bootstrap vertices (ln N; NaN where a replicate has none)."""
    flops = _geometric_mean(r.flops for r in runs)
    x = np.log([r.params for r in runs])
    y = np.array([r.loss for r in runs])
    if len(set(x.tolist())) < 3:
        reason = f"{len(set(x.tolist()))} distinct sizes: a parabola needs three"
        return IsoFlopFit(flops, tuple(runs), reason=reason), np.full(bootstrap, math.nan)
    coefficients = np.polyfit(x, y, 2)
    fit = IsoFlopFit(flops, tuple(runs), tuple(float(c) for c in coefficients))
    if reason := _why_not_interior(x, coefficients):
        return replace(fit, reason=reason), np.full(bootstrap, math.nan)
    vertices = np.full(bootstrap, math.nan)
    dof = len(x) - 3
    if dof > 0:
        fitted = np.polyval(coefficients, x)
        residuals = (y - fitted) * math.sqrt(len(x) / dof)
        for i in range(bootstrap):
            y_star = fitted + rng.choice(residuals, size=len(x), replace=True)
            vertices[i] = _vertex(np.polyfit(x, y_star, 2))
    vertex = _vertex(coefficients)
    n_reps = np.exp(vertices)
    n_opt = _interval(math.exp(vertex), n_reps, confidence)
    d_opt = _interval(flops / (6 * n_opt.value), flops / (6 * n_reps), confidence)
    ratio = _interval(d_opt.value / n_opt.value, flops / (6 * n_reps**2), confidence)
    loss = float(np.polyval(coefficients, vertex))
    return IsoFlopFit(flops, tuple(runs), fit.coefficients, n_opt, d_opt, ratio, loss), vertices


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


def approach2(
    runs: Sequence[Run],
    bootstrap: int = BOOTSTRAP,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> Approach2:
    """Chinchilla's approach 2 (module docstring): a parabola per budget, a line over them."""
    rng = np.random.default_rng(seed)
    fits, vertices = [], []
    for group in budget_groups(runs):
        fit, reps = fit_isoflop(group, rng, bootstrap, confidence)
        fits.append(fit)
        vertices.append(reps)
    good = [(f, v) for f, v in zip(fits, vertices, strict=True) if f.fitted]
    if len(good) < 2:
        reason = f"{len(good)} budget(s) with an interior minimum: the exponent needs two"
        return Approach2(tuple(fits), reason=reason)
    log_c = np.log([f.flops for f, _ in good])
    log_n = np.log([f.n_opt.value for f, _ in good])
    slope, intercept = np.polyfit(log_c, log_n, 1)
    slopes = []
    reps = np.array([v for _, v in good])  # (budgets, bootstrap)
    for column in reps.T:
        if np.all(np.isfinite(column)):
            slopes.append(float(np.polyfit(log_c, column, 1)[0]))
    a = _interval(float(slope), slopes, confidence)
    b = _interval(1 - a.value, [1 - s for s in slopes], confidence)
    return Approach2(tuple(fits), a, b, float(intercept))


# Approach 3 ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LossLaw:
    """L(N, D) = E + A/N^α + B/D^β."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float

    def loss(self, n: float | np.ndarray, d: float | np.ndarray) -> float | np.ndarray:
        return self.E + self.A / np.power(n, self.alpha) + self.B / np.power(d, self.beta)

    @property
    def a(self) -> float:
        return self.beta / (self.alpha + self.beta)

    @property
    def b(self) -> float:
        return self.alpha / (self.alpha + self.beta)

    @property
    def _g(self) -> float:
        return (self.alpha * self.A / (self.beta * self.B)) ** (1 / (self.alpha + self.beta))

    def n_opt(self, flops: float) -> float:
        """The size that minimises L at C = 6·N·D (the Lagrangian's closed form)."""
        if not (self.alpha > 0 and self.beta > 0):
            return math.nan
        return self._g * (flops / 6) ** self.a

    def d_opt(self, flops: float) -> float:
        if not (self.alpha > 0 and self.beta > 0):
            return math.nan
        return (flops / 6) ** self.b / self._g

    def floor(self, n: float) -> float:
        """The loss at size ``n`` with unlimited tokens."""
        return self.E + self.A / n**self.alpha

    def tokens_to_reach(self, n: float, target: float) -> float:
        """Tokens size ``n`` needs to reach ``target``; infinite at or below its floor."""
        gap = target - self.floor(n)
        if not gap > 0 or not self.beta > 0:
            return math.inf
        return (self.B / gap) ** (1 / self.beta)

    def to_dict(self) -> dict:
        return {k: _finite(v) for k, v in self.__dict__.items()}


def _objective(theta: np.ndarray, x: np.ndarray, y: np.ndarray, t: np.ndarray):
    """Hoffmann et al.'s Huber objective divided by δ (same minimum, gradients of order one)."""
    a, b, e, alpha, beta = theta
    z = np.stack([a - alpha * x, b - beta * y, np.full_like(x, e)])
    top = z.max(axis=0)
    s = np.exp(z - top)
    total = s.sum(axis=0)
    p = s / total
    r = top + np.log(total) - t
    size = np.abs(r)
    huber = np.where(size <= HUBER_DELTA, 0.5 * r * r, HUBER_DELTA * (size - 0.5 * HUBER_DELTA))
    w = np.clip(r, -HUBER_DELTA, HUBER_DELTA) / HUBER_DELTA
    grad = np.array(
        [
            (w * p[0]).sum(),
            (w * p[1]).sum(),
            (w * p[2]).sum(),
            -(w * p[0] * x).sum(),
            -(w * p[1] * y).sum(),
        ]
    )
    return huber.sum() / HUBER_DELTA, grad


def _grid_objective(x: np.ndarray, y: np.ndarray, t: np.ndarray) -> np.ndarray:
    """The objective at every point of ``GRID`` at once."""
    a, b, e, alpha, beta = (c[:, None] for c in GRID.T)
    lse = np.logaddexp(np.logaddexp(a - alpha * x, b - beta * y), e + 0 * x)
    r = np.abs(lse - t)
    return np.where(r <= HUBER_DELTA, 0.5 * r * r, HUBER_DELTA * (r - 0.5 * HUBER_DELTA)).sum(1)


def _lbfgs(start: np.ndarray, x: np.ndarray, y: np.ndarray, t: np.ndarray):
    return minimize(
        _objective, start, args=(x, y, t), jac=True, method="L-BFGS-B", bounds=_BOUNDS,
        options={"maxiter": 2000},
    )  # fmt: skip


def _law(theta: np.ndarray) -> LossLaw:
    a, b, e, alpha, beta = (float(v) for v in theta)
    return LossLaw(math.exp(e), math.exp(a), math.exp(b), alpha, beta)


def _logs(runs: Sequence[Run]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (
        np.log([r.params for r in runs]),
        np.log([r.tokens for r in runs]),
        np.log([r.loss for r in runs]),
    )


@dataclass(frozen=True)
class Approach3:
    """The parametric fit, its bootstrap replicates and the intervals of its parameters."""

    law: LossLaw | None
    replicates: tuple[LossLaw, ...] = ()
    intervals: dict[str, Interval] = field(default_factory=dict)
    confidence: float = CONFIDENCE
    reason: str | None = None

    def at(self, flops: float) -> dict[str, Interval]:
        """N_opt, D_opt, tokens per parameter and the loss at compute ``flops``."""
        if self.law is None:
            return {}

        def figures(law: LossLaw) -> tuple[float, float, float, float]:
            n, d = law.n_opt(flops), law.d_opt(flops)
            return n, d, d / n, float(law.loss(n, d))

        point = figures(self.law)
        reps = [figures(law) for law in self.replicates]
        names = ("n_opt", "d_opt", "tokens_per_param", "loss")
        return {
            name: _interval(point[i], [r[i] for r in reps], self.confidence)
            for i, name in enumerate(names)
        }

    def to_dict(self) -> dict:
        return {
            "law": self.law.to_dict() if self.law else None,
            "intervals": {k: v.to_dict() for k, v in self.intervals.items()},
            "bootstrap": len(self.replicates),
            "reason": self.reason,
        }


def approach3(
    runs: Sequence[Run],
    bootstrap: int = BOOTSTRAP,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> Approach3:
    """Chinchilla's approach 3 (module docstring), with case-resampling bootstrap intervals."""
    if len(runs) < MIN_RUNS_PARAMETRIC:
        return Approach3(None, reason=f"{len(runs)} runs: five parameters need at least six")
    x, y, t = _logs(runs)
    # One BLAS thread: L-BFGS-B's small products are 20x slower when BLAS threads contend.
    with threadpool_limits(1):
        starts = GRID[np.argsort(_grid_objective(x, y, t))[:STARTS]]
        best = min((_lbfgs(s, x, y, t) for s in starts), key=lambda r: r.fun)
        rng = np.random.default_rng(seed)
        replicates = []
        for _ in range(bootstrap):
            pick = rng.integers(0, len(runs), len(runs))
            replicates.append(_law(_lbfgs(best.x, x[pick], y[pick], t[pick]).x))
    law = _law(best.x)

    def values(fit: LossLaw) -> dict[str, float]:
        return fit.to_dict() | {"a": fit.a, "b": fit.b}

    reps = [values(r) for r in replicates]
    intervals = {
        name: _interval(v, [r[name] for r in reps], confidence) for name, v in values(law).items()
    }
    return Approach3(law, tuple(replicates), intervals, confidence)


# Time on this machine -----------------------------------------------------------------------


#: Sizes the time-optimal search tries between the smallest and largest measured.
SEARCH_POINTS = 400


@dataclass(frozen=True)
class TimeOptimal:
    """The loss-optimal size and tokens for ``seconds`` of training on this machine."""

    seconds: float
    params: Interval
    tokens: Interval
    tokens_per_param: Interval
    loss: Interval
    #: Set where the optimum is at the edge of the measured sizes: the sizes to measure.
    edge: str | None = None

    @property
    def flops(self) -> float:
        return 6 * self.params.value * self.tokens.value

    def to_dict(self) -> dict:
        return {
            "seconds": self.seconds,
            "params": self.params.to_dict(),
            "tokens": self.tokens.to_dict(),
            "tokens_per_param": self.tokens_per_param.to_dict(),
            "loss": self.loss.to_dict(),
            "flops": self.flops,
            "edge": self.edge,
        }


def _best_for_time(
    law: LossLaw, throughput: Throughput, seconds: float
) -> tuple[float, float, float]:
    grid = np.geomspace(throughput.params[0], throughput.params[-1], SEARCH_POINTS)
    tokens = seconds * throughput(grid)
    losses = law.loss(grid, tokens)
    i = int(np.nanargmin(losses))
    return float(grid[i]), float(tokens[i]), float(losses[i])


def time_optimal(
    fit: Approach3, throughput: Throughput, seconds: float, confidence: float = CONFIDENCE
) -> TimeOptimal | None:
    """The time-optimal N and D for ``seconds`` (module docstring); None without a law or with
    fewer than two measured sizes."""
    if fit.law is None or len(throughput.params) < 2:
        return None
    n, d, loss = _best_for_time(fit.law, throughput, seconds)
    reps = [_best_for_time(law, throughput, seconds) for law in fit.replicates]
    edge = None
    if n <= throughput.params[0] * (1 + 1e-9):
        edge = "the smallest measured size: measure the throughput of smaller ones"
    elif n >= throughput.params[-1] * (1 - 1e-9):
        edge = "the largest measured size: measure the throughput of larger ones"
    return TimeOptimal(
        seconds,
        _interval(n, [r[0] for r in reps], confidence),
        _interval(d, [r[1] for r in reps], confidence),
        _interval(d / n, [r[1] / r[0] for r in reps], confidence),
        _interval(loss, [r[2] for r in reps], confidence),
        edge,
    )


def time_to_loss(fit: Approach3, throughput: Throughput, target: float) -> list[dict]:
    """Per measured size: tokens/s, the tokens and seconds to reach ``target`` (None where the
    size's floor is at or above it)."""
    if fit.law is None:
        return []
    rows = []
    for n, rate in zip(throughput.params, throughput.tokens_per_s, strict=True):
        tokens = fit.law.tokens_to_reach(n, target)
        finite = math.isfinite(tokens)
        rows.append(
            {
                "params": n,
                "tokens_per_s": rate,
                "floor": _finite(fit.law.floor(n)),
                "tokens": tokens if finite else None,
                "seconds": tokens / rate if finite else None,
            }
        )
    return rows


# From records ---------------------------------------------------------------------------------


def _measured_loss(record: dict) -> float | None:
    metric = (record.get("metrics") or {}).get(LOSS_METRIC)
    value = metric.get("value") if isinstance(metric, dict) else None
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def trained_tokens(record: dict) -> int | None:
    """Tokens a convergence record with a token budget trained (steps × batch × tokens per
    sample); None for a record without a token budget."""
    case = record_case(record)
    if case is None or not record.get("config") or _token_budget(case) is None:
        return None
    try:
        settings = settings_for(case)
    except (TypeError, UserError):  # settings this version does not know
        return None
    fam = family(case.family)
    per_sample = tokens_per_sample(case.family, fam.Config(**record["config"]))
    if not per_sample:
        return None
    batch = settings.batch_size or fam.DEFAULT_BATCH_SIZE
    from scaling_bench.workloads.convergence import steps_for  # torch, as the family has

    return steps_for(settings, batch, per_sample) * batch * per_sample


def frontier_runs(records: Iterable[dict]) -> list[Run]:
    """The finished runs of a design: convergence records with a token budget and a held-out
    loss (a diverged run has none: it is left out)."""
    runs = []
    for r in records:
        if r.get("status") != "ok" or not r.get("params"):
            continue
        tokens, loss = trained_tokens(r), _measured_loss(r)
        if tokens is not None and loss is not None:
            runs.append(Run(r["case_id"], int(r["params"]), tokens, loss, r.get("duration_s")))
    return runs


def _token_budget(case: Case) -> object:
    return dict(case.convergence).get("tokens")


def is_frontier_record(record: dict) -> bool:
    """Whether ``record`` is one of a design's training runs: a case with a token budget. Each
    trains its own D, so its N is not the only axis that moves: it belongs to the frontier's
    figures, never to a scaling series against N."""
    case = record_case(record)
    return case is not None and bool(_token_budget(case))


def frontier_records(records: Iterable[dict]) -> list[dict]:
    """The records of a design's training runs (``is_frontier_record``), any status."""
    return [r for r in records if is_frontier_record(r)]


# Everything ---------------------------------------------------------------------------------


def envelope(runs: Sequence[Run]) -> list[Run]:
    """The frontier's lower envelope: runs with a lower loss than every run of less compute."""
    out: list[Run] = []
    for run in sorted(runs, key=lambda r: (r.flops, r.loss)):
        if not out or run.loss < out[-1].loss:
            out.append(run)
    return out


@dataclass(frozen=True)
class FrontierAnalysis:
    """Both approaches, N_opt/D_opt per budget, and the time-optimal answer for this machine."""

    runs: tuple[Run, ...]
    approach2: Approach2
    approach3: Approach3
    throughput: Throughput
    time_optimal: TimeOptimal | None
    target_loss: float | None
    time_to_target: list[dict]
    excluded: int = 0

    @property
    def budgets(self) -> list[float]:
        return [b.flops for b in self.approach2.budgets]

    @property
    def time_optimal_reason(self) -> str | None:
        """Why there is no time-optimal answer; None where there is one."""
        if self.time_optimal is not None:
            return None
        if self.approach3.law is None:
            return f"no fitted law ({self.approach3.reason})"
        if len(self.throughput.params) < 2:
            return (
                f"the train workload measured tokens/s at {len(self.throughput.params)} size(s) "
                "of the runs' setting, two are needed: run it at the design's sizes"
            )
        return "no training time (the runs record no duration): give frontier --optimal-for"

    def to_dict(self) -> dict:
        per_budget = [
            {"flops": c} | {k: v.to_dict() for k, v in self.approach3.at(c).items()}
            for c in self.budgets
        ]
        on_envelope = set(envelope(self.runs))
        return {
            "counting": COUNTING,
            "confidence": self.approach3.confidence,
            "runs": [
                r.__dict__ | {"flops": r.flops, "on_envelope": r in on_envelope} for r in self.runs
            ],
            "excluded_runs": self.excluded,
            "approach2": self.approach2.to_dict(),
            "approach3": self.approach3.to_dict() | {"per_budget": per_budget},
            "throughput": self.throughput.to_dict(),
            "time_optimal": self.time_optimal.to_dict() if self.time_optimal else None,
            "time_optimal_reason": self.time_optimal_reason,
            "target_loss": self.target_loss,
            "time_to_target": self.time_to_target,
        }


def analyse(
    records: Sequence[dict],
    seconds: float | None = None,
    target_loss: float | None = None,
    bootstrap: int = BOOTSTRAP,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> FrontierAnalysis | None:
    """The frontier of a results folder's records; None where it holds no design's runs.

    ``seconds`` is the wall-clock training budget for the time-optimal answer (default: the
    summed durations of the design's runs); ``target_loss`` the held-out loss whose time per
    size is given (default: the loss of the time-optimal answer)."""
    design = frontier_records(records)
    runs = frontier_runs(design)
    if not runs:
        return None
    a2 = approach2(runs, bootstrap, confidence, seed)
    a3 = approach3(runs, bootstrap, confidence, seed)
    throughput = throughput_of(records, {setting_of(c) for r in design if (c := record_case(r))})
    if seconds is None:
        seconds = sum(r.duration_s or 0.0 for r in runs) or None
    best = time_optimal(a3, throughput, seconds, confidence) if seconds else None
    if target_loss is None and best is not None:
        target_loss = best.loss.value
    table = time_to_loss(a3, throughput, target_loss) if target_loss is not None else []
    return FrontierAnalysis(
        tuple(runs), a2, a3, throughput, best, target_loss, table, len(design) - len(runs)
    )
