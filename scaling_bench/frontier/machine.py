"""Time on this machine: the size a wall-clock budget buys the lowest loss at, and the time a
loss takes per size.

With the train workload's tokens/s measured against N (same device, precision, batch and
sequence length), a wall-clock budget T buys D(N) = T · tokens/s(N) tokens at size N; the
time-optimal N minimises L(N, D(N)) over the measured sizes (interpolated on log–log axes, never
extrapolated). The time to reach a held-out loss L* at size N is D*(N) / tokens/s(N), with
D*(N) = (B / (L* − E − A/N^α))^(1/β) where L* is above the size's floor E + A/N^α. Its interval
is the bootstrap's over the laws; the throughput's own noise is not in it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from scaling_bench.frontier.fit import CONFIDENCE, Interval, bootstrap_interval, finite
from scaling_bench.frontier.law import Approach3, LossLaw
from scaling_bench.frontier.throughput import Throughput

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
        bootstrap_interval(n, [r[0] for r in reps], confidence),
        bootstrap_interval(d, [r[1] for r in reps], confidence),
        bootstrap_interval(d / n, [r[1] / r[0] for r in reps], confidence),
        bootstrap_interval(loss, [r[2] for r in reps], confidence),
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
        reachable = math.isfinite(tokens)
        rows.append(
            {
                "params": n,
                "tokens_per_s": rate,
                "floor": finite(fit.law.floor(n)),
                "tokens": tokens if reachable else None,
                "seconds": tokens / rate if reachable else None,
            }
        )
    return rows
