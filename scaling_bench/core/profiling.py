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

from torch._C._profiler import _ExtraFields_Allocation
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
        prof.__enter__()  # type: ignore[no-untyped-call]  # torch leaves it unannotated
    try:
        yield prof
    finally:
        with _stderr_silenced():
            prof.__exit__(None, None, None)  # type: ignore[no-untyped-call]  # as __enter__


def _allocations(prof: profile) -> Iterator[tuple[int, int, int]]:
    """(start ns, address, bytes) of every CPU allocator event in the profile's event tree."""
    results = prof.profiler.kineto_results if prof.profiler is not None else None
    assert results is not None, "a profile is read after it stopped"
    nodes = list(results.experimental_event_tree())
    while nodes:
        node = nodes.pop()
        nodes.extend(node.children)
        fields = node.extra_fields
        if isinstance(fields, _ExtraFields_Allocation) and fields.device.type == "cpu":
            yield node.start_time_ns, fields.ptr, fields.alloc_size


def cpu_memory_events(prof: profile) -> list[tuple[int, int]]:
    """(start ns, bytes: + allocated, − freed) of each CPU allocation in the profile and each free
    of a block allocated in it, in time order.

    A free of a block allocated before the profile started is left out, as its allocation is:
    the allocator reports the size of any block allocated under *some* profile, so without this
    a block an earlier profile saw allocated (an earlier test's model, collected now as garbage)
    came off the region's live bytes, and the measured peak fell short of the true one by
    whatever that was (64 B to 246 kB, by the process's history)."""
    events = []
    allocated: set[int] = set()
    for ns, ptr, nbytes in sorted(_allocations(prof), key=lambda e: (e[0], -e[2])):
        if nbytes > 0:
            allocated.add(ptr)
        elif ptr in allocated:
            allocated.discard(ptr)
        else:
            continue
        events.append((ns, nbytes))
    return events


def peak_above_start(events: list[tuple[int, int]]) -> tuple[int, int]:
    """(the running sum's maximum, its final value) over ``cpu_memory_events``: the peak bytes
    allocated above what was live when the profile started, and what is still live at its end."""
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak, live
