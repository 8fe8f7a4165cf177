"""Checkpoint workload: sizes against the theory, tied weights, exact round trips, cleanup."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from scaling_bench.config.case import Case
from scaling_bench.predict.checkpoint import (
    expected_checkpoint_bytes,
    predicted_checkpoint_bytes,
    storage_nbytes,
)
from scaling_bench.workloads import checkpoint
from scaling_bench.workloads.base import Context, get
from scaling_bench.workloads.checkpoint import RoundTripError, measure_checkpoint
from scaling_bench.workloads.setup import CaseSetup

safetensors_torch = pytest.importorskip("safetensors.torch")

TIMED = ("save_s", "load_s", "save_bytes_per_s", "load_bytes_per_s")


def mlp(width: int, depth: int, dtype: torch.dtype = torch.float32) -> nn.Sequential:
    return nn.Sequential(*[nn.Linear(width, width) for _ in range(depth)]).to(dtype)


class TiedPair(nn.Module):
    """Two projections sharing one weight, like a GPT's embedding and head."""

    def __init__(self, width: int = 256) -> None:
        super().__init__()
        self.encode = nn.Linear(width, width, bias=False)
        self.decode = nn.Linear(width, width, bias=False)
        self.decode.weight = self.encode.weight


def measure(
    model: nn.Module, directory: Path, optimizer: torch.optim.Optimizer | None = None, **kwargs
) -> dict[str, dict]:
    """The checkpoint workload's figures: measured, then the bandwidths it derives from them."""
    metrics = measure_checkpoint(model, optimizer, directory, **kwargs)
    return metrics | get("checkpoint").derive(metrics, None, None)


@pytest.mark.parametrize(("width", "depth"), [(512, 4), (32, 100), (4, 1)])
def test_torch_save_file_is_payload_plus_predicted_archive_overhead(
    tmp_path: Path, width: int, depth: int
) -> None:
    model = mlp(width, depth)
    actual = measure(model, tmp_path, repeats=1)["checkpoint_bytes"]["value"]
    payload = sum(p.numel() * 4 for p in model.parameters())
    assert actual > expected_checkpoint_bytes(model) == payload
    storages = storage_nbytes(model)
    assert abs(actual - predicted_checkpoint_bytes(storages)) <= 64 * len(storages)


def test_one_million_parameter_mlp_checkpoints_are_within_one_percent_of_its_weights(
    tmp_path: Path,
) -> None:
    model = mlp(512, 4)
    metrics = measure(model, tmp_path, repeats=1)
    payload = expected_checkpoint_bytes(model)
    assert payload == 4 * 1_050_624
    assert payload < metrics["checkpoint_bytes"]["value"] < 1.01 * payload
    assert payload < metrics["safetensors_bytes"]["value"] < 1.01 * payload


def test_tied_weights_are_stored_once_in_torch_save_and_safetensors(tmp_path: Path) -> None:
    model = TiedPair(256)
    one_weight = 256 * 256 * 4
    assert storage_nbytes(model) == [one_weight]
    metrics = measure(model, tmp_path, repeats=1)
    assert one_weight < metrics["checkpoint_bytes"]["value"] < one_weight + 4096
    assert one_weight < metrics["safetensors_bytes"]["value"] < one_weight + 4096


def test_expected_bytes_need_no_allocation_and_see_ties_on_the_meta_device() -> None:
    with torch.device("meta"):
        model = TiedPair(256)
    assert expected_checkpoint_bytes(model) == 256 * 256 * 4


def test_adam_checkpoint_after_one_step_is_about_three_times_the_weights(tmp_path: Path) -> None:
    model = mlp(256, 4)
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.randn(8, 256)).square().mean().backward()
    optimizer.step()
    metrics = measure(model, tmp_path, optimizer=optimizer, repeats=1)
    ratio = (
        metrics["checkpoint_bytes_with_optimizer"]["value"] / metrics["checkpoint_bytes"]["value"]
    )
    assert ratio == pytest.approx(3, rel=0.03)


def test_optimizer_bytes_are_absent_before_the_first_step(tmp_path: Path) -> None:
    model = mlp(16, 2)
    metrics = measure(model, tmp_path, optimizer=torch.optim.Adam(model.parameters()), repeats=1)
    assert "checkpoint_bytes_with_optimizer" not in metrics
    assert "checkpoint_bytes" in metrics


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_round_trip_is_exact_in_both_formats(tmp_path: Path, dtype: torch.dtype) -> None:
    metrics = measure(mlp(64, 3, dtype), tmp_path, repeats=2)
    assert metrics["checkpoint_load_s"]["n"] == metrics["safetensors_load_s"]["n"] == 2


def test_nan_stored_in_a_buffer_round_trips(tmp_path: Path) -> None:
    model = mlp(8, 1)
    model.register_buffer("scratch", torch.full((4,), float("nan")))
    measure(model, tmp_path, repeats=1)


def perturbed(load):
    """A loader whose first floating tensor comes back changed by one step."""

    def wrapper(*args, **kwargs):
        loaded = load(*args, **kwargs)
        name = next(n for n, t in loaded.items() if t.is_floating_point())
        loaded[name] = loaded[name] + 1
        return loaded

    return wrapper


@pytest.mark.parametrize(("module", "name"), [(torch, "load"), (safetensors_torch, "load_file")])
def test_corrupt_round_trip_raises_and_leaves_no_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, module, name: str
) -> None:
    monkeypatch.setattr(module, name, perturbed(getattr(module, name)))
    with pytest.raises(RoundTripError, match="differs after save and load"):
        measure(TiedPair(16), tmp_path, repeats=1)
    assert list(tmp_path.iterdir()) == []


def failing_after_partial_write(*args, **kwargs) -> None:
    """A save that writes part of its file, then fails like a full disk."""
    path = next(a for a in args if isinstance(a, str | Path))
    Path(path).write_bytes(b"PK\x03\x04 half a checkpoint")
    raise OSError(28, "No space left on device")


@pytest.mark.parametrize(("module", "name"), [(torch, "save"), (safetensors_torch, "save_model")])
def test_failed_save_leaves_no_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, module, name: str
) -> None:
    monkeypatch.setattr(module, name, failing_after_partial_write)
    with pytest.raises(OSError, match="No space left"):
        measure(mlp(16, 2), tmp_path, repeats=1)
    assert list(tmp_path.iterdir()) == []


def test_temporary_files_are_removed_after_success(tmp_path: Path) -> None:
    measure(mlp(16, 2), tmp_path, repeats=2)
    assert list(tmp_path.iterdir()) == []


def test_metrics_have_the_record_shape_with_raw_samples_for_timed_ones(tmp_path: Path) -> None:
    metrics = measure(mlp(32, 2), tmp_path, repeats=3)
    for prefix in ("checkpoint", "safetensors"):
        size = metrics[f"{prefix}_bytes"]
        assert size == {"value": size["value"], "unit": "bytes", "n": 1}
        for suffix in TIMED:
            metric = metrics[f"{prefix}_{suffix}"]
            shape = {"value", "unit", "n", "median", "p10", "p90", "iqr", "samples", "settled"}
            assert metric.keys() == shape
            assert metric["n"] == len(metric["samples"]) == 3
            assert metric["p10"] <= metric["value"] == metric["median"] <= metric["p90"]
            assert metric["unit"] == ("bytes/s" if "bytes" in suffix else "s")
        save_s = metrics[f"{prefix}_save_s"]["samples"]
        bandwidths = metrics[f"{prefix}_save_bytes_per_s"]["samples"]
        assert bandwidths == pytest.approx([size["value"] / s for s in save_s])


def test_spent_budget_still_measures_each_format_once(tmp_path: Path) -> None:
    metrics = measure(mlp(16, 2), tmp_path, repeats=5, budget_s=0)
    assert metrics["checkpoint_save_s"]["n"] == metrics["safetensors_load_s"]["n"] == 1


def test_without_safetensors_its_metrics_are_absent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(checkpoint, "HAS_SAFETENSORS", False)
    metrics = measure(mlp(16, 2), tmp_path, repeats=1)
    assert not any(name.startswith("safetensors") for name in metrics)
    assert "checkpoint_load_s" in metrics


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_round_trip_on_cuda_loads_onto_the_models_device(tmp_path: Path) -> None:
    metrics = measure(TiedPair(64).cuda(), tmp_path, repeats=2)
    assert metrics["checkpoint_load_s"]["n"] == metrics["safetensors_load_s"]["n"] == 2


def test_the_workload_counts_every_timed_save_and_load_as_its_timed_seconds() -> None:
    setup = CaseSetup.build(Case("mlp", 1e4, budget_s=0.01))
    setup.ensure_training_state()
    ctx = Context(peak_flops=1e12, baseline_rss_bytes=0)
    metrics = get("checkpoint").measure(setup, ctx)
    names = [f"{fmt}_{op}_s" for fmt in ("checkpoint", "safetensors") for op in ("save", "load")]
    assert metrics["checkpoint_timed_s"] == {
        "value": pytest.approx(sum(sum(metrics[name]["samples"]) for name in names)),
        "unit": "s",
        "n": 1,
    }
