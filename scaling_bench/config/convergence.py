"""What a convergence case trains: steps, seeds, the LR grid, the data set and its schedule.

These are the ``convergence`` axis of a grid (one table in a grid file, ``--steps``, ``--lrs`` and
``--convergence KEY=VALUE`` on the command line). They are validated where they are born, so a
mistake is a one-line error before any worker starts. The case's own batch size and optimizer
axes fill ``batch_size`` and ``optimizer``; a grid cannot set them here too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from scaling_bench.core.errors import UserError
from scaling_bench.core.optimizers import optimizer_slots

if TYPE_CHECKING:
    from scaling_bench.config.case import Case

SCHEDULES = ("constant", "cosine")
#: Convergence settings that come from the case's own axes, not from ``--steps`` and the like.
CASE_AXES_IN_CONVERGENCE = ("batch_size", "optimizer")
#: A data set is built whole in memory: more samples than this on either side is a typo. The
#: campaign also holds each case's data set against the host's memory before building it.
MAX_SAMPLES = 10**9


@dataclass(frozen=True)
class ConvergenceSettings:
    """What a convergence case trains; ``batch_size=None`` takes the family's default.

    ``tokens`` is a token budget for sequence families: when given, a run trains
    ``ceil(tokens / tokens per step)`` steps (``steps`` is then unused) and its cosine schedule
    spans them, as a compute-optimal study trains each size for the tokens its budget allows.
    """

    steps: int = 200
    tokens: int | None = None
    seeds: int = 3
    lrs: tuple[float, ...] = (1e-3,)
    batch_size: int | None = None
    optimizer: str = "adamw"
    warmup_steps: int = 0
    schedule: str = "constant"
    weight_decay: float = 0.0
    grad_clip: float | None = None
    label_noise: float = 0.0
    train_size: int = 1024
    heldout_size: int = 512
    dataset: str = "synthetic"
    eval_every: int = 50
    z_loss: float = 0.0
    data_root: str | None = None
    download: bool = False

    def __post_init__(self) -> None:
        lrs = tuple(self.lrs)
        if not lrs:
            raise UserError("the learning-rate grid is empty")
        if not all(isinstance(lr, int | float) and math.isfinite(lr) and lr > 0 for lr in lrs):
            raise UserError(f"learning rates must be positive numbers, not {list(lrs)}")
        object.__setattr__(self, "lrs", tuple(sorted({float(lr) for lr in lrs})))
        for name in ("steps", "seeds", "train_size", "heldout_size", "eval_every"):
            if getattr(self, name) < 1:
                raise UserError(f"convergence {name}={getattr(self, name)} must be at least 1")
        for name in ("train_size", "heldout_size"):
            if getattr(self, name) > MAX_SAMPLES:
                raise UserError(
                    f"convergence {name}={getattr(self, name)} is more than {MAX_SAMPLES:,} "
                    "samples, all of which would be held in memory"
                )
        if self.tokens is not None and self.tokens < 1:
            raise UserError(f"convergence tokens={self.tokens} must be at least 1 (or absent)")
        if self.batch_size is not None and self.batch_size < 1:
            raise UserError(f"batch_size={self.batch_size} must be at least 1")
        optimizer_slots(self.optimizer)
        if self.schedule not in SCHEDULES:
            raise UserError(
                f"unknown schedule {self.schedule!r}; choose from {', '.join(SCHEDULES)}"
            )
        from scaling_bench.models.datasets import DATASETS  # torch: not for --help or a reader

        if self.dataset not in DATASETS:
            raise UserError(f"unknown dataset {self.dataset!r}; choose from {', '.join(DATASETS)}")
        for name in ("warmup_steps", "weight_decay", "z_loss"):
            if not getattr(self, name) >= 0:
                raise UserError(f"{name}={getattr(self, name)} must not be negative")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise UserError(f"grad_clip={self.grad_clip} must be positive (or absent)")
        if not 0.0 <= self.label_noise < 1.0:
            raise UserError(f"label_noise={self.label_noise} must be in [0, 1)")


def settings_for(case: Case) -> ConvergenceSettings:
    """The convergence workload's settings: the grid's, with the case's batch and optimizer (a
    ``max`` batch is the timed workloads' own: convergence trains at the family's batch)."""
    batch_size = case.batch_size if isinstance(case.batch_size, int) else None
    return ConvergenceSettings(
        **dict(case.convergence), batch_size=batch_size, optimizer=case.optimizer
    )
