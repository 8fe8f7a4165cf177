"""The ``max`` batch size: the largest batch whose predicted steady peak fits the memory limit.

A training step's predicted peak (``predict.memory``: the steady step, after a warm-up step made
the optimizer's state) is nearly affine in the batch size in each phase: weights, gradients,
optimizer state and weight copies do not depend on it, activations grow with it, and a CPU
kernel's scratch follows oneDNN's blocking, which is not quite linear. So the line through
replays at two batches (``affine_in_batch``, at ``FIT_BATCHES``) gives only a first guess; the
batch is then searched on the prediction itself, a replay at each batch tried
(``largest_fitting``), for the largest batch whose predicted peak is within the limit where the
next one's is not. No margin is taken off
the limit: on a CPU the prediction equals the exact tensor meter, so the worker's confirming
step (``workloads.batch_search``) fits with what the allocator and the process hold beside the
tensors as the only slack. A case that only runs inference is planned from the training step
too: an upper bound of what its forward holds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from scaling_bench.core.errors import UserError
from scaling_bench.core.units import fmt_bytes
from scaling_bench.hardware.devices import free_memory_bytes
from scaling_bench.models import family
from scaling_bench.predict.memory import affine_in_batch, step_peak

if TYPE_CHECKING:
    from scaling_bench.config.case import Case
    from scaling_bench.config.recipe import Recipe

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
    #: The predicted steady peak at ``batch_size`` (a replay at that batch).
    predicted_bytes: int = 0


def memory_limit(case: Case, free_bytes: int | None = None) -> int:
    """What a ``max`` batch may use: the device's free memory (``free_bytes``, measured where
    None), or the case's ``--memory-limit`` where that is lower; on a CPU without a limit given,
    ``CPU_LIMIT_BYTES`` at most."""
    free = free_memory_bytes(case.device) if free_bytes is None else free_bytes
    limit = case.memory_limit_bytes or (CPU_LIMIT_BYTES if case.device == "cpu" else None)
    return min(free, limit) if limit else free


def largest_fitting(
    peak: Callable[[int], int], limit: int, guess: int, slope: int, top: int
) -> int:
    """The largest batch in 1..``top`` whose ``peak`` is within ``limit`` (``peak`` grows with
    the batch), 0 if none. Each step moves by what the limit leaves over ``slope`` bytes a
    sample, at least one batch; a step that leaves the bracket found so far bisects it instead.
    A replay at a large batch takes seconds (the kernel-scratch probe runs its ops), so the
    line's slope, close to the local one, finds it in two or three replays."""
    lo, hi = 0, top + 1  # batch lo fits (none at all), batch hi is not asked
    batch = min(max(guess, 1), top)
    while hi - lo > 1:
        left = limit - peak(batch)
        if left >= 0:
            lo, nxt = batch, batch + max(1, left // max(slope, 1))
        else:
            hi, nxt = batch, batch + min(-1, left // max(slope, 1))
        batch = nxt if lo < nxt < hi else (lo + hi) // 2
    return lo


def max_batch(case: Case, recipe: Recipe, limit_bytes: int | None = None) -> BatchFit:
    """``case``'s ``max`` batch in its ``recipe`` within ``limit_bytes`` (``memory_limit(case)``
    where None)."""
    limit = memory_limit(case) if limit_bytes is None else limit_bytes
    config = family(case.family).config_for(case.target_params, **dict(case.overrides))
    line = affine_in_batch(case.family, config, recipe)
    peaks: dict[int, int] = {}

    def peak(batch: int) -> int:
        peaks[batch] = step_peak(case.family, config, recipe.with_batch(batch)).peak_bytes
        return peaks[batch]

    guess = line.largest_batch(limit, MAX_BATCH)
    batch = largest_fitting(peak, limit, guess, line.per_sample_bytes, MAX_BATCH)
    if batch < 1:
        raise UserError(
            f"--batch-sizes max: not even one sample of {case.case_id} fits in "
            f"{fmt_bytes(limit)} (predicted {fmt_bytes(peaks[1])} at batch 1)"
        )
    return BatchFit(
        batch, line.fixed_bytes, line.per_sample_bytes, limit, batch == MAX_BATCH, peaks[batch]
    )
