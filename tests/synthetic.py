"""Synthetic runs with known exponents and known noise, for the analysis, report and compare tests.

Importable as ``synthetic`` (pytest puts ``tests/`` on the path). Metrics are built with the same
``stats`` helpers the workloads use, so they have the record's real shape.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path

from scaling_bench.config.sizes import format_size
from scaling_bench.core.stats import scaled, single, summarize
from scaling_bench.store.records import RESULTS_FILE, append_record, make_record

BATCH = 32
ENV = {"cpu_model": "Synthetic CPU", "hostname": "ci", "torch_version": "2.5.0"}
#: Seconds per FLOP of the synthetic machine: it runs at 100 GFLOP/s, half its peak.
S_PER_FLOP = 1e-11
PEAK_FLOPS_PER_S = 2e11


def timing(median: float, noise: float, rng: random.Random, n: int = 30) -> list[float]:
    """Step times around ``median`` with multiplicative Gaussian noise (relative size ``noise``)."""
    return [median * (1 + rng.gauss(0, noise)) for _ in range(n)]


def record(
    family: str,
    target: float,
    *,
    rng: random.Random,
    slowdown: float = 1.0,
    noise: float = 0.02,
    checkpoint_factor: float = 1.0,
    status: str = "ok",
    env: dict | None = None,
    extra_metrics: dict | None = None,
) -> dict:
    """One case whose time per sample is exactly ∝ FLOPs ∝ N (times ``slowdown``), whose
    checkpoint is 4 bytes per parameter and whose training memory is 16 bytes per parameter."""
    params = round(target * 1.01)
    case_id = f"{family}-{format_size(target)}-fp32-cpu"
    case = {"family": family, "target_params": target, "dtype": "fp32", "device": "cpu"}
    predicted = {
        "forward_flops_per_sample": single(2 * params, "FLOP"),
        "train_flops_per_sample": single(6 * params, "FLOP"),
        "checkpoint_bytes": single(4 * params + 1000, "bytes"),
        "train_peak_cpu_rss_above_baseline_bytes": single(16 * params, "bytes"),
    }
    metrics = {}
    if status == "ok":
        for workload, flops in (("forward", 2 * params), ("train", 6 * params)):
            median = flops * BATCH * S_PER_FLOP * slowdown
            step = summarize(timing(median, noise, rng), "s")
            metrics[f"{workload}_step_s"] = step
            metrics[f"{workload}_samples_per_s"] = scaled(step, BATCH, "samples/s", invert=True)
            mfu_factor = flops * BATCH / PEAK_FLOPS_PER_S
            metrics[f"{workload}_mfu"] = scaled(step, mfu_factor, "fraction", invert=True)
        metrics["checkpoint_bytes"] = single(
            round(checkpoint_factor * (4 * params + 1000)), "bytes"
        )
        metrics["train_peak_cpu_rss_above_baseline_bytes"] = single(16 * params, "bytes")
        metrics |= extra_metrics or {}
    return make_record(
        case_id,
        case,
        status,
        env=env or ENV,
        started_at=datetime(2025, 1, 1, tzinfo=UTC),
        duration_s=1.0,
        error=None if status == "ok" else "synthetic failure",
        params=params,
        metrics=metrics,
        predicted=predicted,
    )


def run(
    families: tuple[str, ...] = ("mlp", "gpt"),
    sizes: tuple[float, ...] = (1e4, 1e5, 1e6),
    seed: int = 0,
    **kwargs,
) -> list[dict]:
    rng = random.Random(seed)
    return [record(f, n, rng=rng, **kwargs) for f in families for n in sizes]


def write(directory: Path, records: list[dict]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for r in records:
        append_record(directory / RESULTS_FILE, r)
    return directory
