"""The exact CPU tensor meter against allocations whose sizes are known."""

import pytest
import torch

from scaling_bench.meters.tensor_memory import TensorMemory, storage_bytes

pytestmark = pytest.mark.kernels  # what the CPU's kernels select: run under a second ISA too

MB = 1_000_000


def test_held_tensors_count_once_per_storage() -> None:
    weight = torch.empty(MB // 4)
    tied = [weight, weight.view(-1, 10), weight[:100]]
    assert storage_bytes([*tied, torch.empty(10)]) == MB + 40


def test_peak_is_the_baseline_plus_the_most_live_at_once_with_its_phase() -> None:
    held = torch.empty(MB // 4)
    with TensorMemory([held]) as meter:
        with meter.phase("first"):
            a = torch.empty(MB // 4)
            b = torch.empty(MB // 2)  # 3 MB live here, with ``held``
            del a, b
        with meter.phase("second"):
            c = torch.empty(MB // 4)
            del c
    assert meter.baseline_bytes == MB
    assert meter.peak_bytes == 4 * MB
    assert meter.peak_phase == "first"
    assert meter.phase_peaks == {"first": 4 * MB, "second": 2 * MB}
    figure = meter.metrics()["peak_cpu_tensor_bytes"]
    assert figure["value"] == 4 * MB and figure["phase"] == "first"
    assert meter.metrics()["tensor_meter_s"]["value"] >= 0


def test_a_region_that_allocates_nothing_peaks_at_its_baseline() -> None:
    held = torch.empty(1000)
    with TensorMemory([held]) as meter:
        pass
    assert meter.peak_bytes == 4000
    assert "phase" not in meter.metrics()["peak_cpu_tensor_bytes"]


def test_metrics_before_the_region_ends_is_a_programming_error() -> None:
    with pytest.raises(RuntimeError, match="before its region ended"):
        TensorMemory().metrics()
