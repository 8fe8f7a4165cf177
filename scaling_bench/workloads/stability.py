"""Convergence stability from loss figures: spikes, divergence, LR sensitivity, best LR, curves.

Pure functions over floats (no torch), so each rule can be checked by hand and applied to records.

**Spike rule.** Step t is a spike when its loss stands more than ``z`` = 6 standard deviations
above the mean of the ``window`` = 20 losses before it: ``loss[t] − mean > z · max(std, 5% ·
|mean|)``. The first ``window`` steps are never spikes (no history), nor is a step whose window
or loss is non-finite (that is divergence). The floor on the standard deviation keeps a flat,
almost noiseless curve from turning rounding-level wiggles into spikes: a spike must also be at
least 30% above the recent mean. Mini-batch noise is inside the window's spread, so it does not
count; a decreasing curve never does. The window holds raw losses, spikes included, so one spike
widens the spread for the next ``window`` steps and a long excursion counts at its start.

**Divergence.** A run diverged when its loss became non-finite, or when its final loss is above
its initial loss (training made it worse).

**LR sensitivity** (Wortsman et al. 2023): over a (log-spaced) grid of learning rates, the mean
of ``min(final(lr), initial)`` minus the lowest final loss, both capped at the initial loss so a
diverged LR counts as "no progress", not as infinity. It is 0 when every LR reaches the same
loss, and at most ``initial − best``; it is 0 too when every LR diverges (``diverged_fraction``
tells those apart).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

SPIKE_WINDOW = 20
SPIKE_Z = 6.0
SPIKE_STD_FLOOR = 0.05  # share of |window mean|


def _finite_or_inf(x: float) -> float:
    """NaN and -inf sort as +inf: a non-finite loss is the worst loss, never the best."""
    return x if math.isfinite(x) else math.inf


def spike_steps(
    losses: Sequence[float], window: int = SPIKE_WINDOW, z: float = SPIKE_Z
) -> list[int]:
    """Indices of the losses that the spike rule (module docstring) flags."""
    flagged = []
    for t in range(window, len(losses)):
        recent = losses[t - window : t]
        if not (math.isfinite(losses[t]) and all(math.isfinite(v) for v in recent)):
            continue
        mean = math.fsum(recent) / window
        std = math.sqrt(math.fsum((v - mean) ** 2 for v in recent) / window)
        if losses[t] - mean > z * max(std, SPIKE_STD_FLOOR * abs(mean)):
            flagged.append(t)
    return flagged


def is_diverged(initial_loss: float, final_loss: float) -> bool:
    """Non-finite final loss, or a final loss above the initial one."""
    return not math.isfinite(final_loss) or final_loss > initial_loss


def best_lr(final_loss_by_lr: Mapping[float, float]) -> float:
    """The LR with the lowest final loss; non-finite losses lose, ties go to the smaller LR."""
    if not final_loss_by_lr:
        raise ValueError("best_lr of an empty grid")
    return min(sorted(final_loss_by_lr), key=lambda lr: _finite_or_inf(final_loss_by_lr[lr]))


def lr_sensitivity(final_loss_by_lr: Mapping[float, float], initial_loss: float) -> float:
    """Mean over the grid of min(final, initial) minus the lowest final loss (capped likewise)."""
    if not final_loss_by_lr:
        raise ValueError("lr_sensitivity of an empty grid")
    capped = [min(_finite_or_inf(v), initial_loss) for v in final_loss_by_lr.values()]
    return math.fsum(capped) / len(capped) - min(capped)


def downsample(losses: Sequence[float], max_points: int) -> list[list[float | None]]:
    """``[[step, mean loss], …]`` over at most ``max_points`` equal buckets of consecutive steps.

    Each point is the mean of its bucket, stamped with the bucket's last step (1-based: the step
    count after which the loss was seen). Bucket means keep the curve's level honest where picking
    every k-th loss would alias mini-batch noise; spikes are counted on the full curve first. A
    bucket holding a non-finite loss is ``None`` (JSON null), since JSON has no infinity.
    """
    if max_points < 1:
        raise ValueError("max_points must be at least 1")
    size = max(1, math.ceil(len(losses) / max_points))
    points: list[list[float | None]] = []
    for start in range(0, len(losses), size):
        bucket = losses[start : start + size]
        finite = all(math.isfinite(v) for v in bucket)
        points.append([start + len(bucket), math.fsum(bucket) / len(bucket) if finite else None])
    return points
