"""Time a step under a memory meter and turn seconds per step into throughput, FLOP/s and MFU."""

from __future__ import annotations

from collections.abc import Callable

import torch

from scaling_bench.core.stats import scaled, single
from scaling_bench.meters.memory import PeakMemory
from scaling_bench.meters.timing import Timing, measure


def derived_metrics(
    prefix: str,
    step_s: dict,
    *,
    batch_size: int,
    flops_per_sample: int,
    tokens_per_sample: int | None,
    peak_flops: float,
    devices: int = 1,
) -> dict[str, dict]:
    """``{prefix}_samples_per_s``, ``_tokens_per_s``, ``_flops_per_s`` and ``_mfu`` from the
    step-time metric of ``batch_size`` samples on ``devices`` devices of ``peak_flops`` each.

    Each is the step time scaled by a constant, so its samples are the measurement's. MFU above 1
    means the peak is too low (a CPU peak measured on a busy machine, a wrong override) or the
    FLOP count too high: it is left out, with the reason on the FLOP/s metric, rather than
    reported or allowed to throw away the case's measurements.
    """
    flops_per_step = flops_per_sample * batch_size
    out = {f"{prefix}_samples_per_s": scaled(step_s, batch_size, "samples/s", invert=True)}
    if tokens_per_sample:
        tokens = batch_size * tokens_per_sample
        out[f"{prefix}_tokens_per_s"] = scaled(step_s, tokens, "tokens/s", invert=True)
    flops = out[f"{prefix}_flops_per_s"] = scaled(step_s, flops_per_step, "FLOP/s", invert=True)
    peak = devices * peak_flops
    if flops["value"] <= peak:
        out[f"{prefix}_mfu"] = scaled(step_s, flops_per_step / peak, "fraction", invert=True)
    else:
        flops["mfu_left_out"] = (
            f"achieved {flops['value']:.4g} FLOP/s is above the peak of {peak:.4g}: "
            "the peak is too low or the FLOP count too high"
        )
    return out


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
    """Metrics named ``{prefix}_…``: step time, throughput, FLOP/s, MFU and peak memory."""
    with PeakMemory(device, baseline_rss_bytes=baseline_rss_bytes) as memory:
        timing = measure(step, device, budget_s=budget_s)
    metrics = timing.metrics(prefix)
    metrics |= derived_metrics(
        prefix,
        metrics[f"{prefix}_step_s"],
        batch_size=batch_size,
        flops_per_sample=flops_per_sample,
        tokens_per_sample=tokens_per_sample,
        peak_flops=peak_flops,
    )
    metrics[f"{prefix}_timed_s"] = single(timing.timed_s, "s")
    metrics |= {f"{prefix}_{name}": m for name, m in memory.metrics().items()}
    return metrics, timing
