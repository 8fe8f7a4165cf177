"""Whether two figures differ beyond their noise: the tests ``compare`` makes of each metric.

Unpaired, over raw samples (or, where both runs ran several processes, their per-process values):
two-sided Mann–Whitney U (``scipy.stats``); where only medians and IQRs were kept, a z-test on the
medians. Paired (the two sides of an A/B, process *i* beside process *i*): a one-sample t-test
of the per-pair log ratios, with a move every pair makes far beyond the rounds' noise counted
without it (``FAR_BEYOND``). What a p-value then means for the gate is ``analysis.compare``'s.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from scipy import stats

from scaling_bench.core.stats import is_finite


def mann_whitney_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value of the Mann–Whitney U test that ``a`` and ``b`` share a distribution.

    scipy's ``method="auto"``: exact where a side has 8 samples or fewer and nothing ties, else
    the normal approximation with the tie and continuity corrections (identical samples give 1).
    """
    return float(stats.mannwhitneyu(a, b, alternative="two-sided", method="auto").pvalue)


def summary_p(base: dict, current: dict) -> float | None:
    """Where only medians and IQRs were kept (pytest-benchmark without --benchmark-save-data, asv
    without --record-samples): a z-test on the medians, each median's standard error taken as that
    of a normal distribution with the same IQR (σ = IQR/1.349, SE = 1.2533·σ/√n)."""
    sides = (base, current)
    if not all(is_finite(m.get(k)) for m in sides for k in ("median", "iqr", "n")):
        return None
    if any(m["n"] < 2 for m in sides):
        return None
    se2 = sum((1.2533 * m["iqr"] / 1.349) ** 2 / m["n"] for m in sides)
    diff = current["median"] - base["median"]
    if se2 == 0:
        return 0.0 if diff else 1.0
    return float(2 * stats.norm.sf(abs(diff) / math.sqrt(se2)))


def process_values(metric: dict) -> list[float]:
    return [x for x in metric.get("process_values") or () if is_finite(x)]


def per_process(base: dict, current: dict) -> bool:
    """Whether both sides ran in several processes (``run --processes``): the test is then over
    the per-process values, which carry the run-to-run variation that samples of one process
    do not."""
    return len(process_values(base)) >= 2 and len(process_values(current)) >= 2


def smallest_p(n_base: int, n_current: int) -> float:
    """The smallest two-sided p the exact Mann–Whitney test can give for these counts: with 3
    processes a side it is 0.1, so such a gate can never flag at ``ALPHA``."""
    return min(1.0, 2 / math.comb(n_base + n_current, n_base))


def paired_log_ratios(base: dict, current: dict) -> list[float] | None:
    """``log(current_i / base_i)`` per pair of processes, where both sides hold the same number
    (at least two) of positive per-process values; else ``None`` (not pairable)."""
    b, c = process_values(base), process_values(current)
    if len(b) < 2 or len(b) != len(c) or min(b + c) <= 0:
        return None
    return [math.log(y / x) for x, y in zip(b, c, strict=True)]


def paired_test(logs: Sequence[float]) -> tuple[float, float]:
    """(geometric-mean ratio, two-sided p of the one-sample t-test that the mean log ratio is 0).
    Pairs that all agree exactly leave no spread: p is 0 for a move, 1 for none."""
    ratio = math.exp(statistics.fmean(logs))
    if max(logs) - min(logs) <= 1e-12 * max(1.0, max(abs(x) for x in logs)):
        return ratio, (1.0 if abs(statistics.fmean(logs)) <= 1e-12 else 0.0)
    return ratio, float(stats.ttest_1samp(logs, 0.0).pvalue)


#: How many times the machine's largest round-to-round spread a move must exceed, in every
#: pair, to count without the t-test: with 2 rounds (1 degree of freedom) the test misses even
#: a 100-fold slowdown whose pairs disagree, while such a move under pure noise is rarer than
#: ``ALPHA`` (0.3% of 2-round A/Bs of normal noise, 0.001% of 3-round ones, simulated).
FAR_BEYOND = 10.0


def far_beyond_noise(base: dict, current: dict, logs: Sequence[float], threshold: float) -> bool:
    """Whether every pair moved the same way beyond ``threshold`` by more than ``FAR_BEYOND``
    times the noise the machine showed: the larger log spread of either side's own rounds."""
    noise = max(math.log(max(v) / min(v)) for v in (process_values(base), process_values(current)))
    smallest = min(abs(x) for x in logs)
    same_way = all(x > 0 for x in logs) or all(x < 0 for x in logs)
    return same_way and smallest > math.log1p(threshold) and smallest > FAR_BEYOND * noise


def significance(base: dict, current: dict) -> float | None:
    """p-value that the two metrics differ; ``None`` where there is nothing to test."""
    if per_process(base, current):
        return mann_whitney_p(process_values(base), process_values(current))
    a = [x for x in base.get("samples") or () if is_finite(x)]
    b = [x for x in current.get("samples") or () if is_finite(x)]
    if a and b and len(a) + len(b) > 2:
        return mann_whitney_p(a, b)
    return summary_p(base, current)
