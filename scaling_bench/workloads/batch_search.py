"""A ``max`` batch confirmed by a real steady step, and backed off where it does not fit.

The predicted batch (``predict.batch``) is tried with one step of the case's largest workload
(a training step where the case trains) on the eager module, so a compiled case still compiles
cold in its workloads. A training step is measured after a warm-up step, as the prediction is
made: the optimizer's state exists, as in every step but the first (a first step peaks lower by
the state it creates). The step does not fit when it runs out of memory (CUDA raises) or when
its measured peak passes the limit (a CPU does not raise: it swaps, or the kernel kills the
process): the peak of allocated bytes on CUDA, of live tensor bytes on a CPU. Then the batch
shrinks by the measured overshoot, or by ``BACKOFF`` after an error, and is tried again. The
record keeps each figure of the search.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import torch

from scaling_bench.core.errors import UserError
from scaling_bench.core.stats import single
from scaling_bench.meters.memory import PeakMemory
from scaling_bench.meters.tensor_memory import storage_bytes
from scaling_bench.predict.batch import MAX_BATCH, BatchFit
from scaling_bench.workloads.base import ordered
from scaling_bench.workloads.steps import forward_step, train_step

if TYPE_CHECKING:
    from scaling_bench.workloads.setup import CaseSetup

#: After an out-of-memory error (no measured peak to scale by), the next batch tried.
BACKOFF = 0.75
MAX_TRIES = 8


def _cpu_peak_bytes(step: Callable[[], object], resident: int) -> int:
    """Peak live tensor bytes of a CPU step: the allocations the profiler saw during it (their
    running sum's maximum) on top of the tensors that existed before. RSS would not do: it keeps
    the allocator's freed memory, so a smaller batch after a larger one shows the larger peak."""
    from scaling_bench.core.profiling import cpu_memory_events, memory_profile, peak_above_start

    with memory_profile() as prof:
        step()
    peak, _ = peak_above_start(cpu_memory_events(prof))
    return resident + peak


def release_memory(device: torch.device) -> None:
    """Hand CUDA's cached blocks back, so the next attempt's peak is its own."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def try_step(
    step: Callable[[], object], device: torch.device, resident: Iterable[torch.Tensor]
) -> int | None:
    """The step's peak bytes (allocated on CUDA, live tensors on a CPU), None when it ran out
    of memory; ``resident``: the tensors that exist before it (weights, optimizer state; a
    quantized weight's bytes are its inner tensors', ``storage_bytes``)."""
    release_memory(device)
    try:
        if device.type != "cuda":
            return _cpu_peak_bytes(step, storage_bytes(resident))
        with PeakMemory(device) as peaks:
            step()
    except (torch.OutOfMemoryError, MemoryError):
        return None
    return peaks.metrics()["peak_gpu_allocated_bytes"]["value"]


def _warmed_up(step: Callable[[], object]) -> bool:
    """Run ``step`` once, so the optimizer's state exists; False where it ran out of memory."""
    try:
        step()
    except (torch.OutOfMemoryError, MemoryError):
        return False
    return True


def search(fit: BatchFit, attempt: Callable[[int], int | None]) -> tuple[int, int, int]:
    """From the predicted batch down: the first batch whose ``attempt`` (its peak bytes, None
    for out of memory) stays within the limit; (batch, back-offs, its peak bytes)."""
    batch = fit.batch_size
    for backoffs in range(MAX_TRIES):
        peak = attempt(batch)
        if peak is not None and peak <= fit.limit_bytes:
            return batch, backoffs, peak
        scale = BACKOFF if peak is None else fit.limit_bytes / peak
        batch = min(batch - 1, int(batch * scale))
        if batch < 1:
            break
    raise UserError(
        f"--batch-sizes max: no batch from {fit.batch_size} down fits in "
        f"{fit.limit_bytes:,} bytes after {MAX_TRIES} tries"
    )


def confirm(setup: CaseSetup, fit: BatchFit) -> dict[str, dict]:
    """Settle ``setup`` on the largest batch that fits, from ``fit``; the search's figures."""
    trains = any(w.trains for w in ordered(setup.case.workloads))

    def attempt(batch: int) -> int | None:
        if batch != setup.plan.batch_size:
            setup.with_batch_size(batch)
        if trains:
            step = train_step(
                setup.model, setup.optimizer, setup.batch, setup.precision, setup.scaler
            )
        else:
            step = forward_step(setup.model, setup.batch[0], precision=setup.precision)
        if trains and not _warmed_up(step):
            return None
        setup.optimizer.zero_grad(set_to_none=True)  # the meter sees only frees of its own
        state = [
            t for v in setup.optimizer.state.values() for t in v.values() if torch.is_tensor(t)
        ]
        return try_step(step, setup.device, [*setup.model.parameters(), *state, *setup.batch])

    batch, backoffs, peak = search(fit, attempt)
    capped = {"capped_at": MAX_BATCH} if fit.capped else {}
    setup.optimizer.zero_grad(set_to_none=True)
    return {
        "max_batch_predicted": single(fit.batch_size, "samples") | capped,
        "max_batch_size": single(batch, "samples"),
        "max_batch_backoffs": single(backoffs, "steps"),
        "max_batch_limit_bytes": single(fit.limit_bytes, "bytes"),
        "max_batch_step_peak_bytes": single(peak, "bytes"),
    }
