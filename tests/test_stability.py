"""Stability rules by hand: spikes, divergence, LR sensitivity, best LR, curve downsampling."""

from __future__ import annotations

import math
import random

import pytest

from scaling_bench.workloads.stability import (
    SPIKE_WINDOW,
    best_lr,
    downsample,
    is_diverged,
    lr_sensitivity,
    spike_steps,
)


def noisy_decay(steps: int = 400, noise: float = 0.02, seed: int = 0) -> list[float]:
    """A training curve: exponential decay to a floor, with multiplicative mini-batch noise."""
    rng = random.Random(seed)
    return [(0.3 + 2.0 * math.exp(-t / 80)) * (1 + rng.gauss(0, noise)) for t in range(steps)]


def test_a_smooth_decreasing_curve_has_no_spikes() -> None:
    assert spike_steps([2.0 * math.exp(-t / 50) + 0.1 for t in range(500)]) == []


def test_mini_batch_noise_is_not_a_spike() -> None:
    for seed in range(5):
        assert spike_steps(noisy_decay(seed=seed)) == []


def test_an_injected_spike_is_flagged_at_its_step_and_nowhere_else() -> None:
    losses = noisy_decay()
    losses[250] *= 3
    assert spike_steps(losses) == [250]


def test_a_flat_curve_does_not_turn_rounding_wiggles_into_spikes() -> None:
    losses = [1.0] * 50 + [1.0 + 1e-6] + [1.0] * 10
    assert spike_steps(losses) == []


def test_the_first_window_has_no_history_and_is_never_a_spike() -> None:
    losses = [1.0] * SPIKE_WINDOW
    losses[5] = 100.0
    assert spike_steps(losses) == []


def test_non_finite_losses_are_divergence_not_spikes() -> None:
    losses = [1.0] * 30 + [math.nan, 1.0, math.inf] + [1.0] * 30
    assert spike_steps(losses) == []


@pytest.mark.parametrize(
    ("initial", "final", "diverged"),
    [(2.3, 0.5, False), (2.3, 2.3, False), (2.3, 2.4, True), (2.3, math.nan, True)],
)
def test_diverged_means_non_finite_or_worse_than_the_start(
    initial: float, final: float, diverged: bool
) -> None:
    assert is_diverged(initial, final) is diverged


def test_lr_sensitivity_matches_a_hand_computed_example() -> None:
    # min(final, 2.3) = 2.0, 1.0, 2.3 (the infinite loss is capped); mean 5.3/3, best 1.0
    final = {1e-3: 2.0, 1e-2: 1.0, 1e-1: math.inf}
    assert lr_sensitivity(final, initial_loss=2.3) == pytest.approx(5.3 / 3 - 1.0)


def test_lr_sensitivity_is_zero_when_every_lr_reaches_the_same_loss() -> None:
    assert lr_sensitivity({1e-3: 0.7, 1e-2: 0.7}, initial_loss=2.3) == 0


def test_lr_sensitivity_caps_a_nan_at_the_initial_loss() -> None:
    assert lr_sensitivity({1e-3: 1.3, 1.0: math.nan}, initial_loss=2.3) == pytest.approx(0.5)


def test_best_lr_is_the_lowest_final_loss_and_never_a_diverged_one() -> None:
    assert best_lr({1e-3: 1.5, 1e-2: 0.9, 1e-1: math.nan}) == 1e-2
    assert best_lr({1e-3: math.inf, 1e-2: math.nan}) == 1e-3  # ties go to the smaller LR


def test_downsample_keeps_bucket_means_at_the_bucket_end_and_nulls_non_finite() -> None:
    assert downsample([1, 3, 5, 7, 9], max_points=3) == [[2, 2.0], [4, 6.0], [5, 9.0]]
    assert downsample([1.0, math.nan, 2.0], max_points=3) == [[1, 1.0], [2, None], [3, 2.0]]
    assert len(downsample(list(range(1000)), max_points=100)) == 100
