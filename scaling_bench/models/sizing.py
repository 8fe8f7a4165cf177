"""Map a target parameter count to a config.

Every family's rule is a *ladder*: an ordered sequence of configs whose parameter counts never
decrease. The config for a target is the rung whose count is nearest to it, so a larger target
never gives fewer parameters. Families that scale in depth and width split the ladder into
segments, one per depth: depth ``L`` holds the counts between the widest config of depth ``L-1``
and the widest of depth ``L`` (``max_width(L)``, the family's aspect ratio). The widest of
depth ``L-1`` stays a candidate at the boundary, so the pick is never more than half a step
from the target. Within a segment only the width moves, so the steps stay fine (a fraction of
a percent to about 3% above 1e5).
"""

from __future__ import annotations

from collections.abc import Callable

from scaling_bench.core.errors import UserError


def _first_at_least(count: Callable[[int], int], value: float, lo: int, hi: int) -> int:
    """Smallest ``k`` in ``[lo, hi]`` with ``count(k) >= value`` (``hi`` if none)."""
    while lo < hi:
        mid = (lo + hi) // 2
        if count(mid) >= value:
            hi = mid
        else:
            lo = mid + 1
    return lo


def nearest_rung(count: Callable[[int], int], target: float, lo: int, hi: int) -> int:
    """The ``k`` in ``[lo, hi]`` with ``count(k)`` nearest to ``target``; ``count`` never decreases.

    Ties go to the smaller rung, so the choice is monotone in the target.
    """
    k = _first_at_least(count, target, lo, hi)
    if k > lo and abs(count(k - 1) - target) <= abs(count(k) - target):
        return k - 1
    return k


def fit_width(count: Callable[[int], int], target: float, lo: int = 1, hi: int = 1 << 24) -> int:
    """Width rung nearest to ``target`` for a family that scales in width only."""
    check_reachable(count(lo), count(hi), target)
    return nearest_rung(count, target, lo, hi)


def fit_depth_width(
    count: Callable[[int, int], int],
    target: float,
    max_width: Callable[[int], int],
    max_depth: int = 512,
    min_width: int = 1,
) -> tuple[int, int]:
    """(depth, width) rung nearest to ``target`` within the depth segment that holds it."""

    def widest(depth: int) -> int:
        return count(depth, max_width(depth))

    check_reachable(count(1, min_width), widest(max_depth), target)
    depth = _first_at_least(widest, target, 1, max_depth)
    at_depth = lambda width: count(depth, width)  # noqa: E731
    if depth == 1:
        return depth, nearest_rung(at_depth, target, min_width, max_width(depth))
    lo = _first_at_least(at_depth, widest(depth - 1) + 1, min_width, max_width(depth))
    width = nearest_rung(at_depth, target, lo, max_width(depth))
    if abs(widest(depth - 1) - target) <= abs(at_depth(width) - target):
        return depth - 1, max_width(depth - 1)
    return depth, width


def check_reachable(smallest: int, largest: int, target: float) -> None:
    """Refuse targets outside the family's ladder rather than silently clamping them."""
    if target < smallest:
        raise UserError(
            f"target {target:.3g} parameters is below this family's smallest config "
            f"({smallest:,} parameters)"
        )
    if target > largest:
        raise UserError(
            f"target {target:.3g} parameters is above this family's largest config "
            f"({largest:,} parameters)"
        )


def fit_free_knobs(
    count: Callable[[int, int], int],
    target: float,
    max_width: Callable[[int], int],
    *,
    depth_pinned: bool,
    width_pinned: bool,
    max_depth: int = 512,
) -> tuple[int, int]:
    """(depth, width) rungs nearest to ``target``, moving only the knobs the user did not pin.

    ``count`` must ignore a pinned knob's rung (the family's config builder applies the pinned
    value over it), so a pinned knob's rung is returned as 1.
    """
    if depth_pinned and width_pinned:
        return 1, 1
    if depth_pinned:
        return 1, fit_width(lambda width: count(1, width), target)
    if width_pinned:
        return fit_width(lambda depth: count(depth, 1), target, hi=max_depth), 1
    return fit_depth_width(count, target, max_width, max_depth=max_depth)
