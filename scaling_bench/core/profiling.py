"""The PyTorch profiler as the memory meters use it: the CPU allocator's events, without its log.

Each start and stop of the profiler makes kineto print a line on the process's stderr
(``USDT: … profiler_start``) that no log level silences (torch 2.14, ``KINETO_LOG_LEVEL``
included), and the memory replay's kernel probes start it hundreds of times in one plan.
``memory_profile`` silences file descriptor 2 for the start and the stop only, so whatever the
profiled code itself prints still shows.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from torch.profiler import ProfilerActivity, profile


@contextmanager
def _stderr_silenced() -> Iterator[None]:
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@contextmanager
def memory_profile() -> Iterator[profile]:
    """A CPU profile with the allocator's events (``profile_memory``) around the block."""
    prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    with _stderr_silenced():
        prof.__enter__()
    try:
        yield prof
    finally:
        with _stderr_silenced():
            prof.__exit__(None, None, None)


def cpu_memory_events(prof: profile) -> list[tuple[int, int]]:
    """(start ns, bytes: + allocated, − freed) of each CPU allocator event, in time order."""
    return sorted(
        (e.start_ns(), e.nbytes())
        for e in prof.profiler.kineto_results.events()
        if e.name() == "[memory]" and str(e.device_type()).endswith("CPU")
    )


def peak_above_start(events: list[tuple[int, int]]) -> tuple[int, int]:
    """(the running sum's maximum, its final value) over ``cpu_memory_events``: the peak bytes
    allocated above what was live when the profile started, and what is still live at its end."""
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak, live
