"""Shards: one grid split into N parts that SLURM job arrays, Kubernetes indexed jobs or several
hosts run apart, to be joined again by ``scaling-bench merge``.

``--shard K/N`` takes the K-th of N parts, K counted from 1 (as ``SLURM_ARRAY_TASK_ID`` in
``--array=1-N``; a 0-based index such as Kubernetes' ``JOB_COMPLETION_INDEX`` is passed as
``$((INDEX+1))/N``). The rule depends only on the set of cases, never on the order in which the
flags, a grid file or a dict listed them, so every host computes the same split:

1. the cases are ordered by target size, then by their case-id tokens (family, dtype, device, …,
   each axis's token in ``AXES`` order), then by case id;
2. shard K takes every N-th case of that order, starting at the K-th (round-robin).

Ordering by size first deals each size out over the shards, so every shard gets its share of the
expensive large cases and the shards' case counts differ by at most one. A shard keeps its cases
in the grid's own run order. A grid and the same grid under ``--strategy`` split alike: the
strategy's token is the last one, the same for every case of the grid.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from scaling_bench.config.axes import AXES
from scaling_bench.core.errors import UserError

_SHARD = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")


@dataclass(frozen=True)
class Shard:
    """The ``index``-th (from 1) of ``count`` parts of a grid."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 1 <= self.index <= self.count:
            raise UserError(
                f"--shard {self}: need 1 <= K <= N in K/N (K counts from 1), got K={self.index}, "
                f"N={self.count}"
            )

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def select(self, cases: Sequence[Any]) -> list[Any]:
        """This shard's cases, in the order ``cases`` gives them. A grid of fewer cases than
        shards is refused, so that no shard is empty."""
        if len(cases) < self.count:
            raise UserError(
                f"--shard {self}: the grid has {len(cases)} case{'s' * (len(cases) != 1)}, fewer "
                f"than {self.count} shards; use at most {len(cases)} shards"
            )
        order = sorted(range(len(cases)), key=lambda i: shard_key(cases[i]))
        mine = set(order[self.index - 1 :: self.count])
        return [case for i, case in enumerate(cases) if i in mine]


def shard_key(case: Any) -> tuple[Any, ...]:
    """Where a case stands in the order the shards are dealt from (see the module's rule)."""
    tokens = tuple(axis.token(case) or "" for axis in AXES if axis.token is not None)
    return (float(case.target_params), tokens, case.case_id)


def parse_shard(text: str) -> Shard:
    """``"2/4"`` -> ``Shard(2, 4)``; anything but ``K/N`` with 1 <= K <= N is a UserError."""
    match = _SHARD.fullmatch(text)
    if not match:
        raise UserError(f"--shard {text!r}: expected K/N, e.g. 1/4 (K counts from 1 to N)")
    return Shard(int(match.group(1)), int(match.group(2)))


def split(cases: Sequence[Any], count: int) -> list[list[Any]]:
    """All ``count`` shards of ``cases``, first to last."""
    return [Shard(k, count).select(cases) for k in range(1, count + 1)]
