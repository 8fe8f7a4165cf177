"""A run's figures as ``compare`` holds them: each only as big as what the comparison reads.

A reader of two runs of 100k cases holds every figure the comparison can select; held as parsed
(Python floats in lists, a fresh string for every key) they would take gigabytes.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Callable
from typing import Any

from scaling_bench.core.stats import scaled

#: What a comparison never reads of a figure: its spread's outer quantiles (the report's).
_UNCOMPARED_KEYS = frozenset(("p10", "p90"))
#: A figure's lists of numbers, held as arrays of doubles (8 bytes a number, not 32); a missing
#: number (null) is NaN there, which every test leaves out as it leaves out null.
_NUMBER_LISTS = ("samples", "process_values")


def compact_metric(metric: dict[str, Any], strings: dict[str, str]) -> dict[str, Any]:
    """A figure as a comparison holds it: without what it never reads, its samples as an
    ``array("d")``, its keys and unit the same string objects as every other figure's."""
    out = {}
    for key, value in metric.items():
        if key in _UNCOMPARED_KEYS:
            continue
        if key in _NUMBER_LISTS and isinstance(value, list):
            value = array("d", (math.nan if x is None else x for x in value))
        elif isinstance(value, str):
            value = strings.setdefault(value, value)
        out[strings.setdefault(key, key)] = value
    return out


def per_sample(
    metrics: dict[str, dict[str, Any]], keep: Callable[[str], bool] | None = None
) -> dict[str, dict[str, Any]]:
    """The metrics with seconds per sample beside samples per second, as asv times them; only
    those ``keep`` selects, where it is given."""
    inverted = {}
    for name, m in metrics.items():
        inverse = name.removesuffix("_samples_per_s") + "_sample_s"
        if name.endswith("_samples_per_s") and m.get("value") and (keep is None or keep(inverse)):
            inverted[inverse] = scaled(m, 1.0, "s", invert=True)
    out = metrics | inverted
    return out if keep is None else {n: m for n, m in out.items() if keep(n)}


def held_metrics(
    metrics: dict[str, dict[str, Any]], keep: Callable[[str], bool] | None, strings: dict[str, str]
) -> dict[str, dict[str, Any]]:
    """A record's metrics as its run holds them: beside each samples/s its seconds per sample
    (``per_sample``); with ``keep``, only those it selects, each compact (``compact_metric``)."""
    metrics = per_sample(metrics, keep)
    if keep is None:
        return metrics
    return {strings.setdefault(n, n): compact_metric(m, strings) for n, m in metrics.items()}
