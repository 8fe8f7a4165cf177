import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pynvml
import pytest
import torch

from scaling_bench.hardware import peaks as hardware
from scaling_bench.meters import memory
from scaling_bench.meters.memory import PeakMemory

MB = 1e6

# Runs in a fresh interpreter: RSS in the test process carries whatever earlier tests allocated.
_WORKER = """
import json, torch
from scaling_bench.meters import memory

baseline = memory.baseline_rss()
with memory.PeakMemory("cpu", baseline) as allocating:
    x = torch.ones(50_000_000)  # 200 MB of float32, every page written
del x
with memory.PeakMemory("cpu", baseline) as idle:
    pass
memory._CLEAR_REFS = memory._CLEAR_REFS / "not-writable"
with memory.PeakMemory("cpu") as polled:
    y = torch.ones(50_000_000)
print(json.dumps({
    name: {"method": m.rss_method} | {k: v["value"] for k, v in m.metrics().items()}
    for name, m in [("allocating", allocating), ("idle", idle), ("polled", polled)]
}))
"""


@pytest.fixture(scope="module")
def worker_regions():
    done = subprocess.run(
        [sys.executable, "-c", _WORKER], capture_output=True, text=True, timeout=120, check=True
    )
    return json.loads(done.stdout)


def test_a_200_mb_allocation_is_seen_above_the_post_import_baseline(worker_regions):
    region = worker_regions["allocating"]

    assert 200 * MB <= region["peak_cpu_rss_above_baseline_bytes"] < 250 * MB
    assert region["peak_cpu_rss_bytes"] > region["peak_cpu_rss_above_baseline_bytes"]
    assert not any(key.startswith("peak_gpu") for key in region)


def test_a_region_that_allocates_nothing_is_near_zero_above_baseline(worker_regions):
    assert abs(worker_regions["idle"]["peak_cpu_rss_above_baseline_bytes"]) < 20 * MB


def test_without_clear_refs_a_polling_thread_sees_the_peak_above_entry(worker_regions):
    region = worker_regions["polled"]

    assert region["method"] == "psutil_poll"
    assert 200 * MB <= region["peak_cpu_rss_above_baseline_bytes"] < 250 * MB


def test_rss_is_this_process_even_where_its_pid_names_another_in_proc(monkeypatch):
    """Under ``unshare --pid`` with the host's /proc, ``os.getpid()`` names another process or
    none (a case crashed with psutil.NoSuchProcess): the meter reads /proc/self instead."""
    here = memory.baseline_rss()
    monkeypatch.setattr(os, "getpid", lambda: 4_194_303)  # above any pid_max: no such process
    elsewhere = memory.baseline_rss()
    assert elsewhere > 0 and abs(elsewhere - here) < 16 * MB


def test_metrics_before_the_region_ends_is_an_error():
    with pytest.raises(RuntimeError, match="before"), PeakMemory("cpu") as mem:
        mem.metrics()


@pytest.fixture
def fake_cuda(monkeypatch):
    """The allocator calls PeakMemory makes, answered without a GPU."""
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 123)
    monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda device=None: 456)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda d: SimpleNamespace(uuid="0"))


def _driver_not_loaded():
    raise pynvml.NVMLError(pynvml.NVML_ERROR_DRIVER_NOT_LOADED)


def test_without_an_nvml_driver_the_nvml_peak_is_absent_not_zero(fake_cuda, monkeypatch):
    monkeypatch.setattr(pynvml, "nvmlInit", _driver_not_loaded)

    with PeakMemory("cuda:0") as mem:
        pass

    metrics = mem.metrics()
    assert "peak_gpu_nvml_bytes" not in metrics
    assert metrics["peak_gpu_allocated_bytes"]["value"] == 123
    assert metrics["peak_gpu_reserved_bytes"]["value"] == 456


def test_without_the_pynvml_module_the_nvml_peak_is_absent(fake_cuda, monkeypatch):
    monkeypatch.setattr(hardware, "pynvml", None)

    with PeakMemory("cuda:0") as mem:
        pass

    assert "peak_gpu_nvml_bytes" not in mem.metrics()


def test_nvml_peak_is_the_largest_used_memory_seen_in_the_region(fake_cuda, monkeypatch):
    readings = iter([100, 300])
    fake_nvml = SimpleNamespace(
        NVMLError=pynvml.NVMLError,
        nvmlInit=lambda: None,
        nvmlShutdown=lambda: None,
        nvmlDeviceGetHandleByUUID=lambda uuid: uuid,
        nvmlDeviceGetMemoryInfo=lambda handle: SimpleNamespace(used=next(readings, 200)),
    )
    monkeypatch.setattr(hardware, "pynvml", fake_nvml)

    with PeakMemory("cuda:0") as mem:
        pass

    assert mem.metrics()["peak_gpu_nvml_bytes"] == {"value": 300, "unit": "bytes", "n": 1}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_200_mb_gpu_allocation_is_seen_by_the_allocator_and_nvml():
    with PeakMemory("cuda") as mem:
        x = torch.ones(50_000_000, device="cuda")
    del x

    peaks = {key: metric["value"] for key, metric in mem.metrics().items()}
    assert peaks["peak_gpu_allocated_bytes"] >= 200 * MB
    assert peaks["peak_gpu_reserved_bytes"] >= peaks["peak_gpu_allocated_bytes"]
    if "peak_gpu_nvml_bytes" in peaks:  # absent where the container has no NVML
        assert peaks["peak_gpu_nvml_bytes"] >= 200 * MB
