"""Convergence workload: it trains, records divergence instead of failing, and repeats exactly."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
from test_data import TINY, fake_cifar10

from scaling_bench.core.errors import UserError
from scaling_bench.models import gpt
from scaling_bench.workloads.convergence import (
    MIN_LR_FRACTION,
    ConvergenceSettings,
    lr_factor,
    run_convergence,
)
from scaling_bench.workloads.stability import lr_sensitivity

QUICK = ConvergenceSettings(
    steps=40, seeds=1, lrs=(3e-3,), batch_size=16, train_size=64, heldout_size=32, eval_every=20
)


@pytest.mark.parametrize(
    ("dataset", "family"),
    [
        ("synthetic", "mlp"),
        ("synthetic", "cnn"),
        ("synthetic", "resnet"),
        ("synthetic", "vit"),
        ("synthetic", "gpt"),
        ("digits", "mlp"),
        ("digits", "cnn"),
        ("text", "gpt"),
        ("cifar10", "mlp"),
    ],
)
def test_training_lowers_the_loss(
    dataset: str, family: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = str(fake_cifar10(tmp_path, monkeypatch, n_train=100)) if dataset == "cifar10" else None
    settings = replace(QUICK, dataset=dataset, data_root=root)
    metrics = run_convergence(family, TINY[family], settings)
    assert metrics["final_loss_mean"]["value"] < metrics["initial_loss"]["value"]
    assert metrics["diverged_fraction"]["value"] == 0


def test_every_metric_has_the_record_shape_and_the_documented_extras() -> None:
    settings = replace(QUICK, seeds=2, lrs=(1e-3, 1e-2), dataset="text")
    metrics = run_convergence("gpt", TINY["gpt"], settings)
    for name, metric in metrics.items():
        assert {"value", "unit", "n"} <= metric.keys(), name
    assert metrics["final_loss_mean"]["by_lr"].keys() == {"0.001", "0.01"}
    curves = metrics["final_loss_mean"]["curves"]
    assert curves.keys() == {f"lr={lr},seed={s}" for lr in ("0.001", "0.01") for s in (0, 1)}
    assert [step for step, _ in metrics["heldout_loss"]["curves"]["lr=0.01,seed=1"]] == [0, 20, 40]
    assert metrics["best_lr"]["value"] in (1e-3, 1e-2)
    assert metrics["max_attention_logit"]["value"] > 0
    by_lr = {float(lr): v for lr, v in metrics["final_loss_mean"]["by_lr"].items()}
    expected = lr_sensitivity(by_lr, metrics["initial_loss"]["value"])
    assert metrics["lr_sensitivity"]["value"] == pytest.approx(expected)
    assert metrics["final_loss_std"]["value"] > 0  # two seeds, two initialisations


def test_an_lr_of_ten_is_recorded_as_diverged_not_raised() -> None:
    metrics = run_convergence("mlp", TINY["mlp"], replace(QUICK, lrs=(1e-3, 10.0), seeds=2))
    assert metrics["diverged_fraction"]["by_lr"] == {"0.001": 0.0, "10": 1.0}
    assert metrics["diverged_fraction"]["value"] == 0.5
    assert metrics["best_lr"]["value"] == 1e-3


def test_the_same_case_and_seed_give_bitwise_identical_curves() -> None:
    settings = replace(QUICK, seeds=2, dataset="digits", label_noise=0.1)
    first, again = (run_convergence("cnn", TINY["cnn"], settings) for _ in range(2))
    for name in ("final_loss_mean", "heldout_loss"):
        assert first[name]["curves"] == again[name]["curves"]
    curves = first["final_loss_mean"]["curves"]
    assert curves["lr=0.003,seed=0"] != curves["lr=0.003,seed=1"]


def test_gpt_options_qk_layernorm_z_loss_clipping_and_a_cosine_schedule_train() -> None:
    cfg = replace(TINY["gpt"], qk_layernorm=True)
    settings = replace(
        QUICK, z_loss=1e-4, grad_clip=0.5, warmup_steps=5, schedule="cosine", weight_decay=0.1
    )
    metrics = run_convergence("gpt", cfg, settings)
    assert metrics["final_loss_mean"]["value"] < metrics["initial_loss"]["value"]
    # q and k are layer-normed: |q·k| / sqrt(hd) <= |γ_q||γ_k| sqrt(hd), near sqrt(hd) at init
    assert metrics["max_attention_logit"]["value"] < 2 * math.sqrt(cfg.head_dim)


def test_warm_up_ramps_linearly_and_cosine_ends_at_the_floor() -> None:
    settings = ConvergenceSettings(steps=110, warmup_steps=10, schedule="cosine")
    assert [lr_factor(s, settings) for s in (0, 4, 9, 10)] == pytest.approx([0.1, 0.5, 1, 1])
    assert lr_factor(110, settings) == pytest.approx(MIN_LR_FRACTION)
    assert lr_factor(60, settings) == pytest.approx((1 + MIN_LR_FRACTION) / 2)
    assert lr_factor(100, replace(settings, schedule="constant")) == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"lrs": ()}, "empty"),
        ({"lrs": (1e-3, 0.0)}, "positive"),
        ({"lrs": (-1e-3,)}, "positive"),
        ({"lrs": (math.nan,)}, "positive"),
        ({"steps": 0}, "steps=0"),
        ({"seeds": 0}, "seeds=0"),
        ({"dataset": "imagenet"}, "unknown dataset"),
        ({"optimizer": "lion"}, "unknown optimizer"),
        ({"schedule": "linear"}, "unknown schedule"),
        ({"label_noise": 1.0}, "label_noise"),
        ({"grad_clip": 0.0}, "grad_clip"),
    ],
)
def test_bad_settings_are_user_errors_naming_the_problem(change: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        ConvergenceSettings(**change)


def test_text_with_a_small_vocabulary_is_a_user_error_before_training() -> None:
    cfg = gpt.GPTConfig(n_layer=1, d_model=8, n_head=1, vocab_size=64, seq_len=8)
    with pytest.raises(UserError, match="vocab_size"):
        run_convergence("gpt", cfg, replace(QUICK, dataset="text"))


def test_the_cpu_quick_grid_evaluates_at_the_start_and_the_end_only_in_large_batches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from scaling_bench.config.grid import QUICK_CPU_CONVERGENCE
    from scaling_bench.workloads import convergence

    calls: list[tuple[int, int]] = []
    evaluate = convergence._evaluate

    def counted(model, inputs, targets, batch_size):
        calls.append((len(inputs), batch_size))
        return evaluate(model, inputs, targets, batch_size)

    monkeypatch.setattr(convergence, "_evaluate", counted)
    settings = ConvergenceSettings(**QUICK_CPU_CONVERGENCE, batch_size=16)
    metrics = run_convergence("mlp", TINY["mlp"], settings)

    held = metrics["heldout_loss"]["curves"]
    assert [[step for step, _ in curve] for curve in held.values()] == [[0, 8], [0, 8]]
    # two seeds x two evaluations x (training subset, held-out set), 128 samples each
    assert calls == [(128, convergence.EVAL_BATCH_FACTOR * 16)] * 8
    for name in ("initial_loss", "final_loss_mean", "heldout_loss", "generalization_gap"):
        assert math.isfinite(metrics[name]["value"]), name
    assert metrics["final_loss_std"]["n"] == 2
