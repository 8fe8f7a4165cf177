import itertools
import time

import pytest
import torch

from scaling_bench.core.errors import UserError
from scaling_bench.meters.timing import MIN_BLOCK_S, SETTLE_BUDGETS, WARMUP_BUDGETS, measure

pytestmark = pytest.mark.kernels  # what the CPU's kernels select: run under a second ISA too


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
    assert timing.warmup_calls >= 2
    assert calls == 1 + timing.warmup_calls + timing.steps_per_sample * len(timing.step_s)


def test_a_noisy_step_stops_at_max_samples_unconverged():
    # Each call at least a block long, so its noise is not averaged away within a block.
    sleeps = itertools.cycle([MIN_BLOCK_S, 2 * MIN_BLOCK_S])
    timing = measure(lambda: time.sleep(next(sleeps)), "cpu", min_samples=10, max_samples=20)

    assert not timing.converged
    assert len(timing.step_s) == 20
    assert timing.ci_halfwidth_s > 0.02 * timing.median_s


def test_the_minimum_sample_count_wins_over_the_budget():
    # 10 ms a call: a 0.05 s budget would hold 4 samples; the minimum of 10 is taken regardless.
    timing = measure(lambda: time.sleep(0.01), "cpu", budget_s=0.05, min_samples=10)

    assert len(timing.step_s) == 10


def test_the_minimum_gives_way_only_past_its_overrun_of_the_budget_and_is_unsettled():
    # 10 ms a call, 0.01 s budget: OVERRUN budgets (0.2 s) hold fewer than the 50 asked for.
    timing = measure(lambda: time.sleep(0.01), "cpu", budget_s=0.01, min_samples=50)

    assert not timing.converged
    assert 1 <= len(timing.step_s) < 50
    assert timing.metrics("x")["x_step_s"]["settled"] is False


def test_a_figure_short_of_its_ci_target_samples_past_the_budget_up_to_its_cap():
    # 10 and 20 ms calls in turn never settle to 2%: the budget alone would stop at ~13 samples.
    sleeps = itertools.cycle([MIN_BLOCK_S, 2 * MIN_BLOCK_S])
    budget_s = 0.2
    timing = measure(lambda: time.sleep(next(sleeps)), "cpu", budget_s=budget_s, max_samples=1000)

    assert not timing.converged
    assert budget_s < sum(timing.step_s) <= SETTLE_BUDGETS * budget_s


def test_warm_up_runs_until_the_step_time_is_stable():
    # A step that slows down the first calls (allocator growth, autotuning), then settles.
    sleeps = itertools.chain([0.05, 0.04, 0.03, 0.02, 0.01], itertools.repeat(0.002))
    timing = measure(lambda: time.sleep(next(sleeps)), "cpu", min_samples=6, max_samples=10)

    assert timing.warmup_calls >= 4 + 3  # past the slow calls, then a stable window
    assert max(timing.step_s) < 0.005


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


def test_warm_up_is_not_cut_by_a_slow_cold_start_eating_the_budget():
    # Cold start and slow first calls take 0.12 s of a 0.2 s budget: warm-up still runs on until
    # the step holds (the first warm-up rule stopped at half the budget, two calls in).
    sleeps = itertools.chain([0.05, 0.04, 0.03], itertools.repeat(MIN_BLOCK_S * 1.05))
    timing = measure(lambda: time.sleep(next(sleeps)), "cpu", budget_s=0.2, min_samples=6,
                     max_samples=10)  # fmt: skip

    assert timing.warmup_stable
    assert timing.warmup_calls >= 2 + 3  # past the slow calls, then a stable window
    assert max(timing.step_s) < 0.03
    assert timing.metrics("x")["x_step_s"]["warmup_stable"] is True


def test_a_step_that_never_holds_stops_warming_after_its_warm_up_budget_and_says_so():
    sleeps = itertools.cycle([MIN_BLOCK_S, 2 * MIN_BLOCK_S])
    budget_s = 0.1
    timing = measure(lambda: time.sleep(next(sleeps)), "cpu", budget_s=budget_s, min_samples=6,
                     max_samples=6)  # fmt: skip

    assert not timing.warmup_stable
    # At most the blocks that fit WARMUP_BUDGETS budgets, plus the one that crossed it.
    assert 3 <= timing.warmup_calls <= WARMUP_BUDGETS * budget_s / MIN_BLOCK_S + 1
    assert timing.metrics("x")["x_step_s"]["warmup_stable"] is False


def test_a_short_step_is_averaged_over_a_block_of_at_least_min_block_s():
    # A 1 ms sleep lasts less than 2 ms: a block of MIN_BLOCK_S holds at least that many calls.
    timing = measure(lambda: time.sleep(0.001), "cpu", min_samples=6, max_samples=6)

    assert timing.steps_per_sample >= MIN_BLOCK_S / 0.002


def test_the_record_keeps_the_confidence_target_the_figure_was_held_to():
    timing = measure(lambda: time.sleep(0.001), "cpu", rel_ci=0.05, min_samples=6, max_samples=8)

    step = timing.metrics("x")["x_step_s"]
    assert step["ci95_target"] == 0.05
    assert step["min_samples"] == 6
    assert step["settled"] is timing.converged
