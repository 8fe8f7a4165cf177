"""Seconds per step: cold start apart, then repeated until the median is known well enough.

The first call pays for allocator growth, autotuning and compilation, so it is reported alone as
``cold_start_s`` and never mixed into the samples. Warm-up then runs until the step time is stable
(or, for a step that never is, up to a cap counted in blocks and in budgets, never in a share of
the budget that a slow first call could use up: a 0.15 s step whose AdamW state was still being
touched came out 25% unsettled after one warm-up call), and blocks of calls are timed until the
95% confidence half-width of the median is within ``rel_ci`` of it with at least ``MIN_SAMPLES``
samples (the figure is then ``settled``), ``SETTLE_BUDGETS`` budgets are spent once those
samples are in, or ``max_samples`` is reached. Steps shorter than ``MIN_BLOCK_S`` run several
to a block; a sample is the block's time divided by its calls.

On CUDA each block is bracketed by CUDA events and followed by one synchronise, so the figure is
the device's time for the work, not the host's time to launch it.

``BlockMeter``s (energy, device state) are read at the edges of each sampling block, outside the
timed interval; the timer knows nothing of what they read.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from scaling_bench.core.errors import UserError
from scaling_bench.core.stats import median_ci_halfwidth, quantile, single, summarize

#: Fewest samples of a settled figure, whatever the budget (DESIGN §4).
MIN_SAMPLES = 10
#: Warm-up is over when this many blocks agree within this share of their median.
STABLE_WINDOW = 3
STABLE_REL = 0.1
MAX_WARMUP_BLOCKS = 50
#: Warm-up that has not found a stable window stops after this many budgets (the cold start
#: apart), with at least ``STABLE_WINDOW`` blocks run; the figure says it was not stable.
WARMUP_BUDGETS = 1.0
#: The minimum sample count wins over the budget, up to this many budgets.
OVERRUN = 20
#: A figure with its minimum samples but a CI wider than its target samples on past the budget,
#: up to this many budgets: one that only needs more samples settles (a 0.15 s step jittering 7%
#: needs ~20, not 10), one that never will costs at most this much more.
SETTLE_BUDGETS = 3.0
MIN_BLOCK_S = 0.01
"""Shortest timed block. A sample averages the calls of its block, so a host's per-call jitter
(an interrupt, a descheduled thread: a 5 ms step read 4.2 to 7.5 ms on a 2-core CPU) averages out
instead of widening the median's interval, and the bookkeeping between blocks (the interval, the
meters) stays a small share of the time; the timer's own cost (microseconds on CUDA) is far below
it. Longer blocks cost more: at 20 ms, ten samples of a millisecond step took 0.2 s and more,
several seconds over the quick grid; 10 ms halves that."""
_TIMER_FLOOR_S = 1e-7
"""A warm-up step too fast for the timer to register is taken to last this long."""


@dataclass(frozen=True)
class Timing:
    """What one ``measure`` call saw; ``step_s`` holds the raw seconds-per-step samples.

    ``timed_s`` is the time inside timed regions, cold start and warm-up included, so the runner can
    report what share of its wall time was measurement.
    """

    cold_start_s: float
    step_s: list[float]
    steps_per_sample: int
    median_s: float
    ci_halfwidth_s: float
    converged: bool
    timed_s: float
    warmup_calls: int = 0
    warmup_s: float = 0.0
    warmup_stable: bool = True
    rel_ci: float = 0.02
    min_samples: int = MIN_SAMPLES

    def metrics(self, prefix: str) -> dict[str, dict]:
        """Record metrics ``{prefix}_step_s`` (median, spread, samples) and the cold start.

        The step metric also says whether the median's 95% CI reached the target width
        (``converged``), how wide it is and what the target was (``ci95_target``, relative to the
        median, beside ``min_samples``), so a reader can tell a settled figure from a noisy one;
        ``warmup_stable`` is false where warm-up stopped at its cap before the step time held.
        """
        step = summarize(self.step_s, "s") | {
            "ci95_halfwidth": self.ci_halfwidth_s if math.isfinite(self.ci_halfwidth_s) else None,
            "ci95_target": self.rel_ci,
            "min_samples": self.min_samples,
            "converged": self.converged,
            "settled": self.converged,
            "steps_per_sample": self.steps_per_sample,
            "warmup_calls": self.warmup_calls,
            "warmup_s": self.warmup_s,
            "warmup_stable": self.warmup_stable,
        }
        return {
            f"{prefix}_step_s": step,
            f"{prefix}_cold_start_s": single(self.cold_start_s, "s"),
        }


class BlockMeter:
    """Something read at the edges of each sampling block. ``block_in_flight`` comes while the
    block's work is still running where the device queues it (CUDA: after the launches, before
    the synchronise), else right after the block; ``block_ended`` after it has finished."""

    def block_started(self) -> None:
        """Before the block's first call."""

    def block_in_flight(self) -> None:
        """While the block's work runs, where the device allows."""

    def block_ended(self, block_s: float, calls: int) -> None:
        """After the block: it took ``block_s`` seconds for ``calls`` calls."""


def _block_timer(
    device: torch.device, in_flight: Callable[[], object] = lambda: None
) -> Callable[[Callable[[], object], int], float]:
    """A function that runs ``step`` ``calls`` times and returns the seconds the block took;
    ``in_flight`` is called once the work is queued, before waiting for it."""
    if device.type == "cpu":

        def run_cpu(step: Callable[[], object], calls: int) -> float:
            start = time.perf_counter()
            for _ in range(calls):
                step()
            elapsed = time.perf_counter() - start
            in_flight()
            return elapsed

        return run_cpu
    if device.type == "cuda":
        stream = torch.cuda.current_stream(device)
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)

        def run_cuda(step: Callable[[], object], calls: int) -> float:
            start.record(stream)
            for _ in range(calls):
                step()
            end.record(stream)
            in_flight()
            torch.cuda.synchronize(device)
            return start.elapsed_time(end) / 1e3

        return run_cuda
    raise UserError(f"timing on device type {device.type!r} is not supported (cpu or cuda)")


def _stable(times: list[float], window: int, rel: float) -> bool:
    """The last ``window`` warm-up times agree within ``rel`` of their median."""
    last = sorted(times[-window:])
    return len(last) == window and last[-1] - last[0] <= rel * last[len(last) // 2]


def measure(
    step: Callable[[], object],
    device: torch.device | str,
    *,
    budget_s: float = 10.0,
    warmup_steps: int = 2,
    min_samples: int = MIN_SAMPLES,
    max_samples: int = 200,
    rel_ci: float = 0.02,
    agree: Callable[[list[float], str], list[float]] | None = None,
    meters: Sequence[BlockMeter] = (),
) -> Timing:
    """Time ``step`` on ``device``; the first call is the cold start.

    Warm-up runs until the step time is stable (``STABLE_WINDOW`` blocks within ``STABLE_REL``),
    at least ``warmup_steps`` calls in all; a step that does not settle stops warming after
    ``MAX_WARMUP_BLOCKS`` blocks, or after ``WARMUP_BUDGETS`` budgets once ``STABLE_WINDOW``
    blocks have run (``warmup_stable`` false). Sampling then runs until the median's 95% CI
    half-width is within ``rel_ci`` of it with at least ``min_samples`` samples (``converged``:
    the figure is settled). The budget ends sampling only once ``min_samples`` are in: the
    minimum wins over the budget, up to ``OVERRUN`` times the budget (the case's timeout bounds
    the rest); the CI target wins up to ``SETTLE_BUDGETS`` budgets. A figure that stopped short
    of either target is unsettled, and says so.

    ``agree(values, "min" | "max")`` reduces this process's figures with its peers' (an all-reduce
    across ranks): a step holding collectives must run as often on every rank, so the block size
    and the decisions to stop are taken together. Alone, every value is its own agreement.
    ``meters`` are read at the edges of every sampling block (not the warm-up's).
    """
    if warmup_steps < 1:
        raise ValueError(f"warmup_steps={warmup_steps} must be at least 1 (the cold start)")
    if not 1 <= min_samples <= max_samples:
        raise ValueError(f"need 1 <= min_samples ({min_samples}) <= max_samples ({max_samples})")

    def meters_in_flight() -> None:
        for m in meters:
            m.block_in_flight()

    run_block = _block_timer(torch.device(device))
    metered = _block_timer(torch.device(device), meters_in_flight)

    def run_sample(step: Callable[[], object], calls: int) -> float:
        for m in meters:
            m.block_started()
        block_s = metered(step, calls)
        for m in meters:
            m.block_ended(block_s, calls)
        return block_s

    agree = agree or (lambda values, op: values)
    with _gc_paused():
        return _measure(step, run_block, run_sample, agree, budget_s, warmup_steps,
                        min_samples, max_samples, rel_ci)  # fmt: skip


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Python's cyclic collector off while timing, as ``timeit`` and ``torch.utils.benchmark``
    do: a collection that lands in a block is a pause of the interpreter, not the step's cost
    (it made a ViT step read 25% slower than ``torch.utils.benchmark``'s)."""
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _measure(
    step: Callable[[], object],
    run_block: Callable[[Callable[[], object], int], float],
    run_sample: Callable[[Callable[[], object], int], float],
    agree: Callable[[list[float], str], list[float]],
    budget_s: float,
    warmup_steps: int,
    min_samples: int,
    max_samples: int,
    rel_ci: float,
) -> Timing:
    started = time.perf_counter()

    cold_start_s = run_block(step, 1)
    timed_s = cold_start_s
    (estimate_s,) = agree([max(cold_start_s, _TIMER_FLOOR_S)], "min")
    warm: list[float] = []
    warm_calls = 0
    warm_from = time.perf_counter()
    while True:  # blocks sized from the fastest call so far: the cold start overstates a call
        calls = max(1, math.ceil(MIN_BLOCK_S / estimate_s))
        block_s = run_block(step, calls)
        timed_s += block_s
        warm_calls += calls
        warm.append(block_s / calls)
        done = 1 + warm_calls >= warmup_steps
        enough = done and _stable(warm, STABLE_WINDOW, STABLE_REL)
        spent = time.perf_counter() - warm_from > WARMUP_BUDGETS * budget_s
        over = len(warm) >= MAX_WARMUP_BLOCKS or (spent and len(warm) >= STABLE_WINDOW)
        unstable, stop = agree([float(not enough), float(over)], "max")
        (estimate_s,) = agree([max(min(warm), _TIMER_FLOOR_S)], "min")
        if stop or not unstable:
            break
    warmed = not unstable
    calls = max(1, math.ceil(MIN_BLOCK_S / estimate_s))
    sampling_from = time.perf_counter()

    samples: list[float] = []
    while True:
        block_s = run_sample(step, calls)
        timed_s += block_s
        samples.append(block_s / calls)
        halfwidth = median_ci_halfwidth(samples)
        median = quantile(sorted(samples), 0.5)
        converged = len(samples) >= min_samples and halfwidth <= rel_ci * median
        elapsed = time.perf_counter() - started + block_s
        spent = (
            len(samples) >= max_samples
            or (len(samples) >= min_samples and elapsed > SETTLE_BUDGETS * budget_s)
            or elapsed > OVERRUN * budget_s
        )
        unsettled, stop = agree([float(not converged), float(spent)], "max")
        if stop or not unsettled:
            break

    return Timing(
        cold_start_s=cold_start_s,
        step_s=samples,
        steps_per_sample=calls,
        median_s=median,
        ci_halfwidth_s=halfwidth,
        converged=not unsettled,
        timed_s=timed_s,
        warmup_calls=warm_calls,
        warmup_s=sampling_from - started - cold_start_s,
        warmup_stable=warmed,
        rel_ci=rel_ci,
        min_samples=min_samples,
    )
