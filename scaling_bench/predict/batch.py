"""The ``max`` batch size: the largest batch predicted to fit the memory a case may use.

A training step's predicted peak is affine in the batch size in each of its phases,
``fixed + per_sample · b`` (``predict.memory.affine_in_batch``, from replays at batch 1 and 2):
weights, gradients, optimizer state and weight copies do not depend on it, activations grow with
it. The largest batch whose peak stays within ``1 - MARGIN`` of the limit follows; the worker
then confirms it with a real step and backs off where it does not fit. A case that only runs
inference is planned from the training step too: an upper bound of what its forward holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from scaling_bench.core import precision as precisions
from scaling_bench.core.errors import UserError
from scaling_bench.core.optimizers import default_implementation
from scaling_bench.core.units import fmt_bytes
from scaling_bench.hardware.devices import free_memory_bytes
from scaling_bench.predict.memory import affine_in_batch
from scaling_bench.predict.plan import plan_for

if TYPE_CHECKING:
    from scaling_bench.config.case import Case

#: Share of the limit a ``max`` batch leaves free: allocator slack, the step's temporaries.
MARGIN = 0.1
#: No ``max`` batch is larger: beyond it a step is minutes long on a CPU and nothing is learned.
MAX_BATCH = 1 << 14
#: A CPU's "free memory" is the host's available RAM: filling tens of GiB with one batch would take
#: minutes a step and the machine with it, so a CPU ``max`` batch stays within this unless
#: ``--memory-limit`` says otherwise.
CPU_LIMIT_BYTES = 256 << 20


@dataclass(frozen=True)
class BatchFit:
    """How a ``max`` batch was predicted: the memory line at large batches and the limit."""

    batch_size: int
    fixed_bytes: int
    per_sample_bytes: int
    limit_bytes: int
    #: Whether more would fit: the batch is ``MAX_BATCH``, not the memory's largest.
    capped: bool = False


def memory_limit(case: Case, free_bytes: int | None = None) -> int:
    """What a ``max`` batch may use: the device's free memory (``free_bytes``, measured where
    None), or the case's ``--memory-limit`` where that is lower; on a CPU without a limit given,
    ``CPU_LIMIT_BYTES`` at most."""
    free = free_memory_bytes(case.device) if free_bytes is None else free_bytes
    limit = case.memory_limit_bytes or (CPU_LIMIT_BYTES if case.device == "cpu" else None)
    return min(free, limit) if limit else free


def max_batch(case: Case, limit_bytes: int | None = None) -> BatchFit:
    """``case``'s ``max`` batch within ``limit_bytes`` (``memory_limit(case)`` where None)."""
    limit = memory_limit(case) if limit_bytes is None else limit_bytes
    line = affine_in_batch(
        case.family,
        plan_for(case, 1).config,
        precisions.get(case.precision),
        case.optimizer,
        default_implementation(case.device),
        case.activation_checkpointing,
        case.device,
    )
    batch = line.largest_batch(int((1 - MARGIN) * limit))
    if batch < 1:
        raise UserError(
            f"--batch-sizes max: not even one sample of {case.case_id} fits in "
            f"{fmt_bytes(limit)} (predicted {fmt_bytes(line.bytes_at(1))} at batch 1)"
        )
    capped = batch > MAX_BATCH
    return BatchFit(min(batch, MAX_BATCH), line.fixed_bytes, line.per_sample_bytes, limit, capped)
