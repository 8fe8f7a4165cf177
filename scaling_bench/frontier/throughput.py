"""Training tokens/s against N on this machine, from the train workload's records.

The design turns a time budget into FLOPs with it (``frontier.design``), and the time-optimal
answer turns the fitted law into seconds with it (``frontier.machine``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol, overload

import numpy as np

from scaling_bench.frontier.records import record_case, setting_of
from scaling_bench.workloads.catalog import TRAIN

TOKENS_PER_S = f"{TRAIN.name}_tokens_per_s"


class TokenRate(Protocol):
    """Training tokens/s at size ``n``: what a design plans with, a measured ``Throughput`` or a
    bound (the peak FLOP/s'), or a stand-in where the design does not depend on it."""

    def __call__(self, n: float, /) -> float: ...


@dataclass(frozen=True)
class Throughput:
    """Training tokens/s against N, measured; log–log interpolation inside the measured sizes."""

    params: tuple[float, ...]
    tokens_per_s: tuple[float, ...]

    def __post_init__(self) -> None:
        order = sorted(range(len(self.params)), key=lambda i: self.params[i])
        object.__setattr__(self, "params", tuple(float(self.params[i]) for i in order))
        object.__setattr__(self, "tokens_per_s", tuple(float(self.tokens_per_s[i]) for i in order))

    @overload
    def __call__(self, n: float, /) -> float: ...
    @overload
    def __call__(self, n: np.ndarray, /) -> np.ndarray: ...
    def __call__(self, n: float | np.ndarray, /) -> float | np.ndarray:
        """Tokens/s at ``n``; beyond the measured sizes the end segments' slopes continue, but
        never rising with N (a noisy end segment must not make smaller models slower). Only
        ``frontier.design`` extrapolates; the time-optimal search stays inside."""
        logs_n, logs_t = np.log(self.params), np.log(self.tokens_per_s)
        ln = np.log(n)
        inside = np.interp(ln, logs_n, logs_t)
        if len(logs_n) < 2:
            return np.exp(inside)
        first = min(0.0, (logs_t[1] - logs_t[0]) / (logs_n[1] - logs_n[0]))
        last = min(0.0, (logs_t[-1] - logs_t[-2]) / (logs_n[-1] - logs_n[-2]))
        low = logs_t[0] + (ln - logs_n[0]) * first
        high = logs_t[-1] + (ln - logs_n[-1]) * last
        return np.exp(np.where(ln < logs_n[0], low, np.where(ln > logs_n[-1], high, inside)))

    def to_dict(self) -> dict:
        return {"params": list(self.params), "tokens_per_s": list(self.tokens_per_s)}


def throughput_of(records: Iterable[dict], settings: set[tuple] | None = None) -> Throughput:
    """Training tokens/s against N from the train workload's records, of the ``settings``
    (``setting_of``) where given; the best figure per size (contention only ever slows)."""
    best: dict[int, float] = {}
    for r in records:
        case = record_case(r)
        metric = (r.get("metrics") or {}).get(TOKENS_PER_S)
        if case is None or r.get("status") != "ok" or not isinstance(metric, dict):
            continue
        if settings is not None and setting_of(case) not in settings:
            continue
        value = metric.get("value")
        if isinstance(value, int | float) and value > 0 and r.get("params"):
            best[int(r["params"])] = max(best.get(int(r["params"]), 0.0), float(value))
    return Throughput(tuple(best), tuple(best.values()))
