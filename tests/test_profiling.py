"""The profiler as the memory meters use it: exact allocator events, and no kineto log lines."""

from __future__ import annotations

import os
import sys

import pytest
import torch

from scaling_bench.config.recipe import Recipe
from scaling_bench.core.profiling import cpu_memory_events, memory_profile, peak_above_start
from scaling_bench.models import family
from scaling_bench.predict import cpu_kernels
from scaling_bench.predict.memory import step_peak

pytestmark = pytest.mark.kernels  # what the CPU's kernels select: run under a second ISA too


def test_a_known_allocation_is_the_peak_and_freed_by_the_end() -> None:
    with memory_profile() as prof:
        block = torch.empty(1 << 20, dtype=torch.uint8)
        del block
    assert peak_above_start(cpu_memory_events(prof)) == (1 << 20, 0)


def test_a_block_an_earlier_profile_allocated_does_not_come_off_a_later_region() -> None:
    """The allocator reports the size of a block allocated under any profile when it is freed:
    an earlier test's tensors, collected as garbage inside a meter's region, once took their
    bytes off the region's live count (a step's peak measured 64 B to 246 kB short)."""
    earlier: list[torch.Tensor] = []
    with memory_profile():
        earlier.append(torch.empty(1 << 16, dtype=torch.uint8))
    with memory_profile() as prof:
        earlier.clear()
        block = torch.empty(1 << 10, dtype=torch.uint8)
        del block
    assert peak_above_start(cpu_memory_events(prof)) == (1 << 10, 0)


def test_the_profilers_start_and_stop_lines_are_silenced_not_what_runs_inside(capfd) -> None:
    with memory_profile():
        print("from the profiled code", file=sys.stderr, flush=True)
    err = capfd.readouterr().err
    assert "from the profiled code" in err
    assert "profiler_start" not in err and "profiler_stop" not in err


def test_kernel_scratch_is_measured_once_per_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """A replay keeps its kernels' scratch on disk; a fresh process (a new cache object) reads
    it back instead of running the kernels again."""
    cfg = family("cnn").config_for(3e4)
    recipe = Recipe("cpu", batch_size=16)
    first = step_peak("cnn", cfg, recipe)
    fresh = cpu_kernels._Measured()
    monkeypatch.setattr(cpu_kernels, "_measured", fresh)
    monkeypatch.setattr(cpu_kernels, "_scratch_of_call", lambda *a: pytest.fail("ran a kernel"))
    again = step_peak("cnn", cfg, recipe)
    assert again.peak_bytes == first.peak_bytes
    assert fresh.bytes


@pytest.mark.parametrize(
    ("variable", "values"),
    [("ONEDNN_MAX_CPU_ISA", ("AVX2", "SSE41")), ("ATEN_CPU_CAPABILITY", ("default", "avx2"))],
)
def test_kernel_scratch_of_another_isa_is_measured_afresh(
    monkeypatch: pytest.MonkeyPatch, variable: str, values: tuple[str, str]
) -> None:
    """The scratch is keyed by what selects the kernel: a process under another ISA cap finds
    nothing cached by this one (under AVX2 a bf16 conv's scratch is 4.7x this CPU's AVX-512 one),
    and runs the kernels itself."""
    cfg = family("cnn").config_for(3e4)
    recipe = Recipe("cpu", batch_size=16)
    step_peak("cnn", cfg, recipe)
    monkeypatch.setenv(variable, next(v for v in values if v != os.environ.get(variable)))
    monkeypatch.setattr(cpu_kernels, "_measured", cpu_kernels._Measured())
    ran = []
    monkeypatch.setattr(cpu_kernels, "_scratch_of_call", lambda *a: ran.append(a) or 0)
    step_peak("cnn", cfg, recipe)
    assert ran
