"""Peak live tensor bytes during a region, exactly, from the CPU allocator's own reports.

RSS carries the allocator's, oneDNN's and the runtime's overhead (1.5–10× the tensors here), so
it cannot check a memory prediction. The PyTorch profiler with ``profile_memory`` reports every
allocation and free of the CPU allocator with its size; summed in time order they give the
live bytes allocated in the region at each instant, and their maximum the region's peak above
what was live at entry. What was live at entry is counted from the tensors the caller says it
holds (unique storages, each once): the profiler only sees frees of blocks allocated while it
runs, so a region must not free what it did not allocate (free gradients before entering).

Phases are marked with ``phase(name)`` (a ``record_function`` range); the peak of each phase is
kept, and the phase the region's peak fell in. Recording every op costs time (measured beside
the figure: ``tensor_meter_s``), so a workload runs it in a pass of its own, never in timed
samples. On CUDA the caching allocator's ``max_memory_allocated`` plays this role (``memory``).
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractContextManager, ExitStack
from types import TracebackType

import torch
from torch.autograd.profiler import record_function
from torch.profiler import profile
from torch.utils._python_dispatch import is_traceable_wrapper_subclass

from scaling_bench.core.profiling import cpu_memory_events, memory_profile
from scaling_bench.core.stats import single

_PHASE = "phase:"


def _plain(tensors: Iterable[torch.Tensor]) -> Iterable[torch.Tensor]:
    """The plain tensors that hold ``tensors``' data: a wrapper subclass (an FSDP rank's DTensor
    shard, a float8 or quantized weight) has no storage of its own, only its inner tensors."""
    for t in tensors:
        if is_traceable_wrapper_subclass(t):
            names, _ = t.__tensor_flatten__()
            inner = (getattr(t, name) for name in names)
            yield from _plain(i for i in inner if isinstance(i, torch.Tensor))
        else:
            yield t


def storage_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes of the distinct CPU storages behind ``tensors`` (views and ties counted once)."""
    seen: dict[int, int] = {}
    for t in _plain(tensors):
        if t.device.type == "cpu":
            storage = t.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


class TensorMemory:
    """Context manager for the peak of live CPU tensor bytes in a region (``metrics()`` after).

    ``held``: the tensors live at entry that the region may use (weights, optimizer state, the
    batch); ``baseline_bytes`` is their storage bytes, and every figure includes it."""

    def __init__(self, held: Iterable[torch.Tensor] = ()) -> None:
        self.baseline_bytes = storage_bytes(held)
        self._stack = ExitStack()
        self._profile: profile | None = None
        self.peak_bytes: int | None = None
        self.peak_phase: str | None = None
        self.phase_peaks: dict[str, int] = {}
        self.region_s: float | None = None

    def __enter__(self) -> TensorMemory:
        self._profile = self._stack.enter_context(memory_profile())
        return self

    def phase(self, name: str) -> AbstractContextManager:
        """A range of the region named ``name``: its own peak is kept."""
        return record_function(f"{_PHASE}{name}")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stack.close()
        prof = self._profile
        if prof is None or prof.profiler is None or prof.profiler.kineto_results is None:
            raise RuntimeError("TensorMemory left a region it did not enter (no profile to read)")
        events = prof.profiler.kineto_results.events()
        memory = cpu_memory_events(prof)
        ranges = sorted(
            (e.start_ns(), e.end_ns(), e.name().removeprefix(_PHASE))
            for e in events
            if e.name().startswith(_PHASE)
        )
        live = peak = self.baseline_bytes
        for ns, nbytes in memory:
            live += nbytes
            name = next((n for s, e, n in ranges if s <= ns <= e), None)
            if name is not None:
                self.phase_peaks[name] = max(self.phase_peaks.get(name, 0), live)
            if live > peak:
                peak, self.peak_phase = live, name
        self.peak_bytes = peak
        ops = [(e.start_ns(), e.end_ns()) for e in events if e.name() != "[memory]"]
        self.region_s = (max(e for _, e in ops) - min(s for s, _ in ops)) / 1e9 if ops else 0.0

    def metrics(self) -> dict[str, dict]:
        """The peak, with the baseline, the phase it fell in and each phase's peak beside it."""
        if self.peak_bytes is None or self.region_s is None:
            raise RuntimeError("TensorMemory.metrics() called before its region ended")
        extra = {"baseline_bytes": self.baseline_bytes, "phase_peaks": self.phase_peaks}
        if self.peak_phase is not None:
            extra["phase"] = self.peak_phase
        return {
            "peak_cpu_tensor_bytes": single(self.peak_bytes, "bytes") | extra,
            "tensor_meter_s": single(self.region_s, "s"),
        }
