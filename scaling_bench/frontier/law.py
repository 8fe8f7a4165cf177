"""Chinchilla's approach 3: L(N, D) = E + A/N^α + B/D^β over every run of a design.

Fitted as Hoffmann et al. (2022) do it: the Huber loss (δ = 10⁻³) of
LSE(a − α ln N, b − β ln D, e) − ln L, with A = eᵃ, B = eᵇ, E = eᵉ, minimised by L-BFGS from their
grid of starting points (α, β ∈ {0, 0.5, …, 2}, e ∈ {−1, −0.5, …, 1}, a, b ∈ {0, 5, …, 25}). The
4,500 points are evaluated at once and L-BFGS runs from the ``STARTS`` best (a run from each is
~10 ms here, all of them a minute). Then N_opt(C) = G·(C/6)^a and D_opt(C) = (C/6)^b / G with
a = β/(α+β), b = α/(α+β), G = (αA / βB)^(1/(α+β)).

Intervals are percentile bootstrap intervals: the runs are resampled with replacement and each
replicate refitted from the full fit's optimum and from its own ``REPLICATE_STARTS`` best grid
points, seeded, so the same runs give the same intervals. On synthetic designs
(``studies/frontier_coverage.py``: four budgets of five sizes, Chinchilla's law) they held the
truth in 96–99% of 100 replicates (E, A, B, α, β, a and N_opt at the largest budget, at 0.3%
and 2% loss noise, 50 resamples each); refitted from the optimum alone, E's held it in 65% at 2%
noise (100 replicates): a fit with E at its bound has a nil gradient in E there.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import overload

import numpy as np
from scipy.optimize import minimize
from threadpoolctl import threadpool_limits

from scaling_bench.frontier.fit import (
    BOOTSTRAP,
    CONFIDENCE,
    Interval,
    Run,
    bootstrap_interval,
    finite,
)

HUBER_DELTA = 1e-3
#: L-BFGS starts from this many of the best points of Hoffmann et al.'s grid.
STARTS = 16
#: A bootstrap replicate starts from the full fit's optimum and from its own best grid points:
#: from the optimum alone, a replicate of a fit with E at its bound stays there (E's gradient is
#: then nil), and E's interval shrank to a point (65% coverage at 2% noise).
REPLICATE_STARTS = 3
#: A parametric fit needs more runs than its five parameters.
MIN_RUNS_PARAMETRIC = 6
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
class LossLaw:
    """L(N, D) = E + A/N^α + B/D^β."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float

    @overload
    def loss(self, n: float, d: float) -> float: ...
    @overload
    def loss(self, n: np.ndarray, d: float | np.ndarray) -> np.ndarray: ...
    @overload
    def loss(self, n: float, d: np.ndarray) -> np.ndarray: ...
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
        return {k: finite(v) for k, v in self.__dict__.items()}


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


def _fit(x: np.ndarray, y: np.ndarray, t: np.ndarray, starts: int, *more: np.ndarray):
    """The best L-BFGS run from the ``starts`` best grid points and from ``more``."""
    grid = GRID[np.argsort(_grid_objective(x, y, t))[:starts]]
    return min((_lbfgs(s, x, y, t) for s in (*grid, *more)), key=lambda r: r.fun)


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
            name: bootstrap_interval(point[i], [r[i] for r in reps], self.confidence)
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
        best = _fit(x, y, t, STARTS)
        rng = np.random.default_rng(seed)
        replicates = []
        for _ in range(bootstrap):
            pick = rng.integers(0, len(runs), len(runs))
            replicates.append(_law(_fit(x[pick], y[pick], t[pick], REPLICATE_STARTS, best.x).x))
    law = _law(best.x)

    def values(fit: LossLaw) -> dict[str, float]:
        return fit.to_dict() | {"a": fit.a, "b": fit.b}

    reps = [values(r) for r in replicates]
    intervals = {
        name: bootstrap_interval(v, [r[name] for r in reps], confidence)
        for name, v in values(law).items()
    }
    return Approach3(law, tuple(replicates), intervals, confidence)
