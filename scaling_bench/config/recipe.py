"""A case's recipe: how it computes and trains, resolved once from its ``Case``.

A case names its recipe by words (``--precision amp-bf16``, ``--optimizer adamw``); the planner,
the memory replay, the ``max`` batch search and the worker's setup all need the same things as
objects: the ``Precision`` (not its name, looked up again at each use), the optimizer and how it
steps, the compile mode, the checkpointing policy, the batch size, the device. ``Recipe.of``
reads them off the case once; everything below the front-ends passes the ``Recipe`` instead of
the loose values. Importing it loads no torch (the optimizer's default implementation asks torch
for the device's type when a recipe is made).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

from scaling_bench.core import precision as precisions
from scaling_bench.core.optimizers import IMPLEMENTATIONS, default_implementation, optimizer_slots
from scaling_bench.core.precision import Precision

if TYPE_CHECKING:
    from scaling_bench.config.case import Case


@dataclass(frozen=True)
class Recipe:
    """``device``: the resolved device (``cpu``, ``cuda:0``); ``batch_size``: the case's batch
    (``max`` until the search resolves it, None for the family's default, which the planner
    knows); ``optimizer_implementation``: a key of ``core.optimizers.IMPLEMENTATIONS``."""

    device: str
    precision: Precision = precisions.PRECISIONS["fp32"]
    optimizer: str = "adamw"
    optimizer_implementation: str = ""
    compile: str = "eager"
    activation_checkpointing: str = "none"
    batch_size: int | Literal["max"] | None = None

    def __post_init__(self) -> None:
        optimizer_slots(self.optimizer)  # an unknown optimizer is the user's mistake, said once
        if not self.optimizer_implementation:  # PyTorch's own choice for the device
            default = default_implementation(self.device)
            object.__setattr__(self, "optimizer_implementation", default)
        if self.optimizer_implementation not in IMPLEMENTATIONS:
            raise ValueError(f"unknown optimizer implementation {self.optimizer_implementation!r}")

    @classmethod
    def of(cls, case: Case) -> Recipe:
        """The case's recipe: its precision looked up, its optimizer's implementation chosen."""
        return cls(
            device=case.device,
            precision=precisions.get(case.precision),
            optimizer=case.optimizer,
            compile=case.compile,
            activation_checkpointing=case.activation_checkpointing,
            batch_size=case.batch_size,
        )

    @property
    def batch(self) -> int:
        """The batch size, once resolved (a ``max`` or default batch is the planner's to set)."""
        if not isinstance(self.batch_size, int):
            raise ValueError(f"batch size {self.batch_size!r} is not resolved to a number yet")
        return self.batch_size

    def with_batch(self, batch_size: int) -> Recipe:
        """The recipe at ``batch_size`` (a ``max`` batch found, a replay at another batch)."""
        return replace(self, batch_size=batch_size)
