"""Seconds per call, one timer per call: the latency of single requests, and its tail.

``meters.timing`` divides a block of calls by their count, which is right for throughput and
hides the tail; a server's user sees one call. Here every call has its own timer (on CUDA a pair
of events around the call, then a synchronise, so the figure is the device's time for that
request), and the samples are the calls themselves: p50, p90, p95 and p99 are their quantiles.

The first call is the cold start, reported apart. Warm-up then runs ``warmup_calls`` calls (at
least one, at most a tenth of the budget). Calls are timed until there are ``MIN_CALLS`` of them
and the median's 95% confidence half-width is within ``rel_ci`` of it (``settled``), or the
budget is spent once ``timing.MIN_SAMPLES`` are in, or ``max_calls`` is reached. ``MIN_CALLS`` is
300 because a distribution-free 95% confidence interval of p99 needs that many samples before it
has an upper bound (0.99³⁰⁰ < 0.05): with fewer, p99 is close to the largest sample alone, and a
figure is marked unsettled.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from scaling_bench.core.errors import UserError
from scaling_bench.core.stats import median_ci_halfwidth, quantile, single, summarize
from scaling_bench.meters.specs import PERCENTILES, WITHIN_ONE_PROCESS
from scaling_bench.meters.timing import MIN_SAMPLES, OVERRUN

#: Those that keep the raw samples (and so can be tested by ``compare``): the median and the tail.
GATED = ("p50", "p99")
MIN_CALLS = 300


@dataclass(frozen=True)
class Latency:
    """What one ``measure_calls`` saw: every call's seconds, in order."""

    cold_start_s: float
    call_s: list[float]
    settled: bool
    timed_s: float
    warmup_calls: int

    def quantile(self, q: float) -> float:
        return quantile(sorted(self.call_s), q)

    def metrics(self, prefix: str) -> dict[str, dict]:
        """``{prefix}_latency_{p50,p90,p95,p99}_s``: the value is that quantile of the calls;
        p50 and p99 keep the raw samples, every one says whether it settled and from how many
        calls it comes."""
        summary = summarize(self.call_s, "s")
        out = {}
        for name, q in PERCENTILES.items():
            value = self.quantile(q)
            if name in GATED:
                metric = summary | {"value": value, "warmup_calls": self.warmup_calls}
            else:
                metric = single(value, "s") | {"n": len(self.call_s)}
            out[f"{prefix}_latency_{name}_s"] = metric | {
                "settled": self.settled,
                "settled_within": WITHIN_ONE_PROCESS,
            }
        out[f"{prefix}_cold_start_s"] = single(self.cold_start_s, "s")
        out[f"{prefix}_timed_s"] = single(self.timed_s, "s")
        return out


def _call_timer(device: torch.device) -> Callable[[Callable[[], object]], float]:
    """A function that runs ``call`` once and returns the seconds it took, to its end."""
    if device.type == "cpu":

        def run_cpu(call: Callable[[], object]) -> float:
            start = time.perf_counter()
            call()
            return time.perf_counter() - start

        return run_cpu
    if device.type == "cuda":
        stream = torch.cuda.current_stream(device)
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)

        def run_cuda(call: Callable[[], object]) -> float:
            start.record(stream)
            call()
            end.record(stream)
            end.synchronize()
            return start.elapsed_time(end) / 1e3

        return run_cuda
    raise UserError(f"timing on device type {device.type!r} is not supported (cpu or cuda)")


def measure_calls(
    call: Callable[[], object],
    device: torch.device | str,
    *,
    budget_s: float = 10.0,
    warmup_calls: int = 3,
    min_calls: int = MIN_CALLS,
    max_calls: int = 1000,
    rel_ci: float = 0.02,
) -> Latency:
    """Time each call of ``call`` on ``device`` (module docstring: warm-up, when it stops)."""
    if not 1 <= min_calls <= max_calls:
        raise ValueError(f"need 1 <= min_calls ({min_calls}) <= max_calls ({max_calls})")
    run = _call_timer(torch.device(device))
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()  # as meters.timing: a collection is the interpreter's pause, not the call's
    try:
        started = time.perf_counter()
        cold_start_s = run(call)
        warm = 0
        while warm < max(1, warmup_calls) and time.perf_counter() - started < budget_s / 10:
            run(call)
            warm += 1
        samples: list[float] = []
        while True:
            samples.append(run(call))
            n = len(samples)
            settled = n >= min_calls and _median_within(samples, rel_ci)
            elapsed = time.perf_counter() - started
            spent = (
                n >= max_calls
                or (n >= MIN_SAMPLES and elapsed > budget_s)
                or elapsed > OVERRUN * budget_s
            )
            if settled or spent:
                break
    finally:
        if was_enabled:
            gc.enable()
    return Latency(cold_start_s, samples, settled, time.perf_counter() - started, warm)


def _median_within(samples: list[float], rel_ci: float) -> bool:
    """Whether the median's 95% confidence half-width is within ``rel_ci`` of it."""
    half = median_ci_halfwidth(samples)
    return math.isfinite(half) and half <= rel_ci * quantile(sorted(samples), 0.5)
