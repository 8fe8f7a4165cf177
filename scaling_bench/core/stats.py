"""Summaries of repeated measurements, in the record's metric shape.

A metric is ``{"value", "unit", "n", "median", "p10", "p90", "iqr", "samples"?}``; ``value`` is the
median for repeated measurements, so every consumer can read ``value`` without knowing how the
figure was taken.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def quantile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile of already sorted values (numpy's default method)."""
    if not sorted_values:
        raise ValueError("quantile of no values")
    pos = (len(sorted_values) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def median_ci_halfwidth(samples: Sequence[float], z: float = 1.96) -> float:
    """Half-width of a distribution-free confidence interval for the median.

    Uses the order statistics ``n/2 ± z·sqrt(n)/2`` (the binomial interval), so it needs no
    assumption about the shape of the timing distribution; ``inf`` until there are enough samples.
    """
    n = len(samples)
    if n < 6:
        return math.inf
    xs = sorted(samples)
    half = z * math.sqrt(n) / 2
    lo = max(0, math.floor(n / 2 - half))
    hi = min(n - 1, math.ceil(n / 2 + half) - 1)
    return (xs[hi] - xs[lo]) / 2


def summarize(samples: Sequence[float], unit: str, keep_samples: bool = True) -> dict:
    """A metric from repeated measurements: median as ``value``, spread, and the raw samples."""
    xs = sorted(float(s) for s in samples)
    med = quantile(xs, 0.5)
    out = {
        "value": med,
        "unit": unit,
        "n": len(xs),
        "median": med,
        "p10": quantile(xs, 0.1),
        "p90": quantile(xs, 0.9),
        "iqr": quantile(xs, 0.75) - quantile(xs, 0.25),
    }
    if keep_samples:
        out["samples"] = [float(s) for s in samples]
    return out


def single(value: float, unit: str) -> dict:
    """A metric measured once (bytes on disk, a peak): no spread to report."""
    return {"value": value, "unit": unit, "n": 1}


def scaled(metric: dict, factor: float, unit: str, invert: bool = False) -> dict:
    """A metric derived from another by a constant (seconds per step -> samples/s, FLOP/s, MFU).

    The value (and median) is the source's value transformed, so ``samples/s × step_s = batch``
    holds exactly. With raw samples the spread (p10, p90, IQR) is that of the transformed samples,
    which the metric keeps. Without them, ``factor * x`` scales the summary; ``factor / x`` maps
    the quantiles (p10 and p90 swap) and the IQR by the local slope at the median,
    ``factor / median**2``.
    """
    if "samples" in metric:
        fn = (lambda x: factor / x) if invert else (lambda x: factor * x)
        value = fn(metric["value"])
        return summarize([fn(s) for s in metric["samples"]], unit) | {
            "value": value,
            "median": value,
        }
    if invert:
        out = {"value": factor / metric["value"], "unit": unit, "n": metric["n"]}
        if "median" in metric:
            out |= {
                "median": factor / metric["median"],
                "p10": factor / metric["p90"],
                "p90": factor / metric["p10"],
                "iqr": factor * metric["iqr"] / metric["median"] ** 2,
            }
        return out
    out = {"value": factor * metric["value"], "unit": unit, "n": metric["n"]}
    for key in ("median", "p10", "p90", "iqr"):
        if key in metric:
            out[key] = abs(factor) * metric[key] if key == "iqr" else factor * metric[key]
    return out
