"""glibc's heap held steady while a case runs: memory a step frees is kept for the next step.

By default glibc hands the free top of its heap back to the OS and serves blocks above a
threshold with fresh mappings, a threshold it moves as blocks are freed (``mallopt(3)``). A CPU
step then faults its activations' pages in again on every call, by an amount that depends on
what ran before it in the process: on this project's 2-core VM a vit 1e6 forward step took
153-157 ms, and once 119-188 ms within one run, against 119-130 ms with the heap held, and ten
samples could not settle its median to 5%. The CUDA caching allocator keeps freed blocks for
the same reason, and PyTorch's own CPU launcher (``torch.backends.xeon.run_cpu``) preloads
tcmalloc by default. ``steady`` holds glibc's heap instead (nothing to install): no trimming,
no mappings, so after warm-up a step reuses the pages it had. ``default`` measures glibc as it
ships. Elsewhere than glibc nothing is changed and the record says ``default``.

This module imports neither torch nor rich: the worker applies it before the case's imports.
"""

from __future__ import annotations

import ctypes
import platform

MODES = ("steady", "default")
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
#: The largest free top of the heap kept (``mallopt`` takes an int): 1 GiB.
_KEEP_BYTES = 1 << 30


def in_effect(mode: str) -> str:
    """The mode a worker of this machine runs under when asked for ``mode``."""
    return mode if platform.libc_ver()[0] == "glibc" else "default"


def apply(mode: str) -> None:
    """Set this process's heap to ``mode`` (the worker's first step: it holds for the case)."""
    if in_effect(mode) == "steady":
        libc = ctypes.CDLL(None)
        libc.mallopt(_M_TRIM_THRESHOLD, _KEEP_BYTES)
        libc.mallopt(_M_MMAP_MAX, 0)
