"""Throughput, FLOP/s and MFU derived from a step-time metric."""

from __future__ import annotations

import pytest

from scaling_bench.core.stats import summarize
from scaling_bench.workloads.timed import derived_metrics

STEP = summarize([0.10, 0.11, 0.09, 0.10, 0.12], "s")


def derive(peak_flops: float, tokens: int | None = None, devices: int = 1) -> dict[str, dict]:
    return derived_metrics(
        "train",
        STEP,
        batch_size=8,
        flops_per_sample=10**9,
        tokens_per_sample=tokens,
        peak_flops=peak_flops,
        devices=devices,
    )


def test_throughput_and_mfu_are_the_step_time_scaled() -> None:
    m = derive(peak_flops=1e12, tokens=64)
    assert m["train_samples_per_s"]["value"] == pytest.approx(80)
    assert m["train_tokens_per_s"]["value"] == pytest.approx(80 * 64)
    assert m["train_flops_per_s"]["value"] == pytest.approx(8e10)
    assert m["train_mfu"]["value"] == pytest.approx(0.08)
    assert sorted(m["train_samples_per_s"]["samples"]) == pytest.approx(
        sorted(8 / s for s in STEP["samples"])
    )


def test_mfu_is_over_every_device_of_the_run() -> None:
    assert derive(peak_flops=1e11, devices=2)["train_mfu"]["value"] == pytest.approx(0.4)


def test_mfu_above_one_is_left_out_with_the_reason_never_reported() -> None:
    m = derive(peak_flops=1e10)
    assert "train_mfu" not in m
    assert "above the peak" in m["train_flops_per_s"]["mfu_left_out"]
    assert m["train_samples_per_s"]["value"] == pytest.approx(80), "the measurement is kept"


def test_a_derived_metric_is_the_step_value_inverted_with_the_spread_of_its_samples() -> None:
    m = derive(peak_flops=1e12)["train_samples_per_s"]
    assert m["value"] == m["median"] == 8 / STEP["value"]
    own = summarize(m["samples"], "samples/s")
    assert (m["p10"], m["p90"], m["iqr"]) == (own["p10"], own["p90"], own["iqr"])
