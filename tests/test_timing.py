import itertools
import time

import pytest
import torch

from scaling_bench.core.errors import UserError
from scaling_bench.meters.timing import measure


def test_sleep_of_20_ms_is_recovered_within_5_percent():
    timing = measure(lambda: time.sleep(0.02), "cpu", min_samples=6, max_samples=12)

    assert timing.median_s == pytest.approx(0.02, rel=0.05)
    assert timing.steps_per_sample == 1
    assert 6 <= len(timing.step_s) <= 12


def test_cold_start_is_reported_apart_and_kept_out_of_the_samples():
    sleeps = itertools.chain([0.2], itertools.repeat(0.002))
    timing = measure(lambda: time.sleep(next(sleeps)), "cpu", min_samples=6, max_samples=10)

    assert timing.cold_start_s >= 0.2
    assert max(timing.step_s) < 0.1
    assert timing.timed_s >= timing.cold_start_s + sum(timing.step_s)


def test_a_very_short_step_is_timed_in_blocks_of_several_calls():
    calls = 0

    def step():
        nonlocal calls
        calls += 1

    timing = measure(step, "cpu", warmup_steps=3, max_samples=20)

    assert timing.steps_per_sample > 1
    assert calls == 3 + timing.steps_per_sample * len(timing.step_s)


def test_a_noisy_step_stops_at_max_samples_unconverged():
    sleeps = itertools.cycle([0.001, 0.004])
    timing = measure(lambda: time.sleep(next(sleeps)), "cpu", min_samples=10, max_samples=20)

    assert not timing.converged
    assert len(timing.step_s) == 20
    assert timing.ci_halfwidth_s > 0.02 * timing.median_s


def test_the_budget_stops_measurement_before_min_samples():
    # Calls of at least 10 ms: after the cold start and one warm-up, 8 samples at most fit in 0.1 s.
    timing = measure(lambda: time.sleep(0.01), "cpu", budget_s=0.1, min_samples=50)

    assert not timing.converged
    assert 1 <= len(timing.step_s) <= 8


def test_metrics_are_the_median_step_with_samples_and_the_cold_start():
    timing = measure(lambda: time.sleep(0.001), "cpu", min_samples=6, max_samples=8)

    metrics = timing.metrics("train")

    assert metrics["train_step_s"]["value"] == timing.median_s
    assert metrics["train_step_s"]["samples"] == timing.step_s
    assert metrics["train_step_s"]["unit"] == "s"
    assert metrics["train_cold_start_s"] == {"value": timing.cold_start_s, "unit": "s", "n": 1}


def test_a_device_without_a_timer_is_a_user_error():
    with pytest.raises(UserError, match="meta"):
        measure(lambda: None, "meta")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_events_time_device_work_not_kernel_launches():
    a = torch.randn(4096, 4096, device="cuda")
    launch_s = []

    def step():
        start = time.perf_counter()
        a @ a
        launch_s.append(time.perf_counter() - start)

    timing = measure(step, "cuda", max_samples=20)

    assert timing.steps_per_sample == 1
    # An fp32 4096^3 product takes milliseconds on any GPU; launching it takes microseconds.
    assert timing.median_s > 10 * sorted(launch_s)[len(launch_s) // 2]
