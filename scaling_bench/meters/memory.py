"""Peak memory during a region: the GPU allocator's and the device's view, and the process's RSS.

``tracemalloc`` does not see tensor storage and ``ru_maxrss`` never goes down, so the CPU peak is
the kernel's RSS high-water mark, reset at region entry through ``/proc/self/clear_refs``; where
that is not permitted (not Linux, a locked-down container) a thread polls RSS instead, which can
miss a peak shorter than its interval. NVML's device figure sees what the caching allocator cannot
(CUDA context, other libraries); without a driver it is absent from the metrics, never zero.
RSS carries the allocator's and oneDNN's overhead, so on a CPU the memory prediction is held
against the live tensor bytes of ``tensor_memory`` instead, RSS beside it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from types import ModuleType, TracebackType

import psutil
import torch

from scaling_bench.core.stats import single
from scaling_bench.hardware.peaks import nvml

POLL_INTERVAL_S = 0.005
_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def baseline_rss() -> int:
    """Resident set size now, in bytes: a worker calls it right after its imports.

    Read from ``/proc/self``, which the kernel resolves to this process in any PID namespace;
    ``psutil.Process()`` looks up ``os.getpid()`` in ``/proc``, which under ``unshare --pid``
    (the host's ``/proc`` kept) is another process or none."""
    if _STATUS.exists():
        return _status_bytes("VmRSS")
    return psutil.Process().memory_info().rss


def _reset_rss_high_water_mark() -> bool:
    """Set the kernel's VmHWM to the current RSS; False where the kernel does not let us."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def _status_bytes(field: str) -> int:
    for line in _STATUS.read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in {_STATUS}")


def _rss_high_water_mark() -> int:
    return _status_bytes("VmHWM")


class _PeakPoller:
    """The largest value of ``read()``: at start, every ``interval_s`` in a thread, and at stop."""

    def __init__(self, read: Callable[[], int], interval_s: float) -> None:
        self._read = read
        self._interval_s = interval_s
        self._stopping = threading.Event()
        self.peak = read()
        self._thread = threading.Thread(target=self._run, name="peak-memory-poller", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopping.wait(self._interval_s):
            self.peak = max(self.peak, self._read())

    def stop(self) -> int:
        self._stopping.set()
        self._thread.join()
        self.peak = max(self.peak, self._read())
        return self.peak


def _nvml_used_bytes(lib: ModuleType, device: torch.device) -> Callable[[], int] | None:
    """A reader of NVML's used memory for the torch device; None if NVML does not know it.

    Matched by UUID, not index: NVML numbers all GPUs, torch only the visible ones.
    """
    uuid = f"GPU-{torch.cuda.get_device_properties(device).uuid}"
    try:
        handle = lib.nvmlDeviceGetHandleByUUID(uuid)
    except lib.NVMLError:
        return None
    return lambda: lib.nvmlDeviceGetMemoryInfo(handle).used


class PeakMemory:
    """Context manager for peak memory in a region; ``metrics()`` once it has ended.

    ``baseline_rss_bytes`` is the worker's post-import RSS (``baseline_rss()``); without it the
    baseline is the RSS at region entry (the figure above it is negative if the region peaked below
    an earlier baseline). ``rss_method`` says how the CPU peak was taken:
    ``"clear_refs"`` (exact) or ``"psutil_poll"``. The CPU figures are always reported; the GPU
    ones only for a CUDA device.
    """

    def __init__(
        self,
        device: torch.device | str,
        baseline_rss_bytes: int | None = None,
        *,
        poll_interval_s: float = POLL_INTERVAL_S,
    ) -> None:
        self.device = torch.device(device)
        self.baseline_rss_bytes = baseline_rss_bytes
        self.rss_method: str | None = None
        self._poll_interval_s = poll_interval_s
        self._stack = ExitStack()
        self._nvml_poller: _PeakPoller | None = None
        self._rss_poller: _PeakPoller | None = None
        self._metrics: dict[str, dict] | None = None

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            if self.device.index is None:
                self.device = torch.device("cuda", torch.cuda.current_device())
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            lib = self._stack.enter_context(nvml())
            read_used = None if lib is None else _nvml_used_bytes(lib, self.device)
            if read_used is not None:
                self._nvml_poller = _PeakPoller(read_used, self._poll_interval_s)
        if self.baseline_rss_bytes is None:
            self.baseline_rss_bytes = baseline_rss()
        if _reset_rss_high_water_mark():
            self.rss_method = "clear_refs"
        else:
            self.rss_method = "psutil_poll"
            self._rss_poller = _PeakPoller(baseline_rss, self._poll_interval_s)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with self._stack:
            if self.baseline_rss_bytes is None:
                raise RuntimeError("PeakMemory left a region it did not enter (no RSS baseline)")
            rss_peak = self._rss_poller.stop() if self._rss_poller else _rss_high_water_mark()
            method = {"method": self.rss_method}  # a polled peak can miss a short spike
            metrics = {
                "peak_cpu_rss_bytes": single(rss_peak, "bytes") | method,
                "peak_cpu_rss_above_baseline_bytes": single(
                    rss_peak - self.baseline_rss_bytes, "bytes"
                )
                | method,
            }
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
                metrics["peak_gpu_allocated_bytes"] = single(
                    torch.cuda.max_memory_allocated(self.device), "bytes"
                )
                metrics["peak_gpu_reserved_bytes"] = single(
                    torch.cuda.max_memory_reserved(self.device), "bytes"
                )
                if self._nvml_poller:
                    metrics["peak_gpu_nvml_bytes"] = single(self._nvml_poller.stop(), "bytes")
            self._metrics = metrics

    def metrics(self) -> dict[str, dict]:
        """The peaks as record metrics; the NVML figure only where NVML could be read."""
        if self._metrics is None:
            raise RuntimeError("PeakMemory.metrics() called before its region ended")
        return self._metrics
