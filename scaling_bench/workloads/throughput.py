"""Time a step under a memory meter and turn seconds per step into throughput, FLOP/s and MFU."""

from __future__ import annotations

from collections.abc import Callable

import torch

from scaling_bench.hardware import mfu
from scaling_bench.meters.memory import PeakMemory
from scaling_bench.meters.timing import Timing, measure
from scaling_bench.stats import scaled, single


def measure_step(
    prefix: str,
    step: Callable[[], object],
    device: torch.device,
    *,
    batch_size: int,
    flops_per_sample: int,
    tokens_per_sample: int | None,
    peak_flops: float,
    budget_s: float,
    baseline_rss_bytes: int | None = None,
) -> tuple[dict[str, dict], Timing]:
    """Metrics named ``{prefix}_…``: step time, samples/s, tokens/s, FLOP/s, MFU and peak memory.

    Every derived figure is the step-time metric scaled by a constant, so its samples and
    quantiles stay those of the measurement.
    """
    with PeakMemory(device, baseline_rss_bytes=baseline_rss_bytes) as memory:
        timing = measure(step, device, budget_s=budget_s)
    metrics = timing.metrics(prefix)
    step_s = metrics[f"{prefix}_step_s"]
    flops_per_step = flops_per_sample * batch_size
    metrics[f"{prefix}_samples_per_s"] = scaled(step_s, batch_size, "samples/s", invert=True)
    if tokens_per_sample:
        tokens = batch_size * tokens_per_sample
        metrics[f"{prefix}_tokens_per_s"] = scaled(step_s, tokens, "tokens/s", invert=True)
    metrics[f"{prefix}_flops_per_s"] = scaled(step_s, flops_per_step, "FLOP/s", invert=True)
    metrics[f"{prefix}_mfu"] = scaled(step_s, flops_per_step / peak_flops, "fraction", invert=True)
    # MFU above 1 is a bug in the peak or the FLOP count, not a figure: mfu() raises.
    mfu(metrics[f"{prefix}_flops_per_s"]["value"], peak_flops)
    metrics[f"{prefix}_timed_s"] = single(timing.timed_s, "s")
    metrics |= {f"{prefix}_{name}": m for name, m in memory.metrics().items()}
    return metrics, timing
