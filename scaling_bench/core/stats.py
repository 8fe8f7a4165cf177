"""Summaries of repeated measurements, in the record's metric shape.

A metric is ``{"value", "unit", "n", "median", "p10", "p90", "iqr", "samples"?}``; ``value`` is the
median for repeated measurements, so every consumer can read ``value`` without knowing how the
figure was taken.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy import stats

#: The quantiles a summary keeps: p10, the quartiles, the median, p90.
_SUMMARY_QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


def is_finite(value: object) -> bool:
    """A JSON metric value that is a real figure: not null, not NaN or infinite, not a string."""
    return isinstance(value, int | float) and math.isfinite(value)


def quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile (numpy's default method, the same as R's type 7)."""
    if not len(values):
        raise ValueError("quantile of no values")
    return float(np.quantile(values, q))


def median_ci_halfwidth(samples: Sequence[float], confidence: float = 0.95) -> float:
    """Half-width of a distribution-free confidence interval for the median.

    The exact binomial (sign-test) interval: the number of samples below the median is
    Binomial(n, ½), so the order statistics ``x₍ₖ₎`` and ``x₍ₙ₋ₖ₊₁₎`` with ``k`` its
    ``(1 - confidence)/2`` quantile bound the median with at least ``confidence``, whatever the
    shape of the timing distribution. ``inf`` until there are enough samples for any such ``k``
    (six at 95%).
    """
    n = len(samples)
    k = int(stats.binom.ppf((1 - confidence) / 2, n, 0.5)) if n else 0
    if k < 1:
        return math.inf
    xs = sorted(samples)
    return (xs[n - k] - xs[k - 1]) / 2


def quantiles(samples: Sequence[float], qs: Sequence[float]) -> list[float]:
    """``np.quantile(samples, qs)`` (its default, linear method) to the bit, in plain Python:
    ten times faster on the few dozen samples of a metric, which a reader of 100k records
    summarises 200k times. A NaN sample makes every quantile NaN, as in numpy."""
    xs = sorted(float(x) for x in samples)
    if any(math.isnan(x) for x in xs):
        return [math.nan] * len(qs)
    out = []
    for q in qs:
        at = q * (len(xs) - 1)
        lo = math.floor(at)
        a, b, t = xs[lo], xs[min(lo + 1, len(xs) - 1)], at - lo
        out.append(b - (b - a) * (1 - t) if t >= 0.5 else a + (b - a) * t)  # numpy's _lerp
    return out


def summarize(samples: Sequence[float], unit: str, keep_samples: bool = True) -> dict[str, Any]:
    """A metric from repeated measurements: median as ``value``, spread, and the raw samples."""
    p10, q1, med, q3, p90 = quantiles(samples, _SUMMARY_QUANTILES)
    out: dict[str, Any] = {
        "value": med,
        "unit": unit,
        "n": len(samples),
        "median": med,
        "p10": p10,
        "p90": p90,
        "iqr": q3 - q1,
    }
    if keep_samples:
        out["samples"] = [float(s) for s in samples]
    return out


def single(value: float | None, unit: str) -> dict[str, Any]:
    """A metric measured once (bytes on disk, a peak): no spread to report. ``None`` where the
    figure is not a finite number (JSON has no NaN: a diverged run's loss)."""
    return {"value": value, "unit": unit, "n": 1}


def scaled(
    metric: dict[str, Any], factor: float, unit: str, invert: bool = False
) -> dict[str, Any]:
    """A metric derived from another by a constant (seconds per step -> samples/s, FLOP/s, MFU).

    The value (and median) is the source's value transformed, so ``samples/s × step_s = batch``
    holds exactly. With raw samples the spread (p10, p90, IQR) is that of the transformed samples,
    which the metric keeps. Without them, ``factor * x`` scales the summary; ``factor / x`` maps
    the quantiles (p10 and p90 swap) and the IQR by the local slope at the median,
    ``factor / median**2``. Whether the source settled carries over: a derived figure is exactly
    as settled as the measurement it comes from.
    """
    settled = {"settled": metric["settled"]} if "settled" in metric else {}
    if "samples" in metric:
        fn: Callable[[float], float] = (lambda x: factor / x) if invert else (lambda x: factor * x)
        value = fn(metric["value"])
        return (
            summarize([fn(s) for s in metric["samples"]], unit)
            | {
                "value": value,
                "median": value,
            }
            | settled
        )
    if invert:
        out = {"value": factor / metric["value"], "unit": unit, "n": metric["n"]}
        if "median" in metric:
            out |= {
                "median": factor / metric["median"],
                "p10": factor / metric["p90"],
                "p90": factor / metric["p10"],
                "iqr": factor * metric["iqr"] / metric["median"] ** 2,
            }
        return out | settled
    out = {"value": factor * metric["value"], "unit": unit, "n": metric["n"]}
    for key in ("median", "p10", "p90", "iqr"):
        if key in metric:
            out[key] = abs(factor) * metric[key] if key == "iqr" else factor * metric[key]
    return out | settled
