"""The memory bandwidth a bandwidth-bound figure (a decode step) is held against.

A GPU's figure is its data sheet's HBM/GDDR bandwidth. A CPU's is measured: a STREAM-style triad
``a = b + s·c`` over arrays four times the size of the last-level cache, counted as STREAM counts
it (three arrays of bytes per pass, the write-allocate read left out), the fastest pass of about
a second, measured once per machine and cached beside the measured GEMM peak. As with that peak,
a busy machine measures low, so ``refresh`` keeps the higher of the cached and the new figure.
"""

from __future__ import annotations

import math
import os
import re
import time

import torch

from scaling_bench.core.errors import UserError
from scaling_bench.hardware.peaks import cached_measurement, cpu_cache_key, parse_rate

BANDWIDTH_ENV = "SCALING_BENCH_MEMORY_BANDWIDTH"
#: Data-sheet memory bandwidth in bytes/s, keyed by a pattern searched in the device name; the
#: first match wins, so variants come before their family's plain name. Sources: NVIDIA data
#: sheets (H200 SXM/NVL, H100 SXM/PCIe/NVL, A100 40/80 GB SXM/PCIe, L40S, L4, A10, V100) and the
#: Ada/GA102 whitepapers (RTX 4090, RTX 3090).
_BANDWIDTH_TABLE: tuple[tuple[str, float], ...] = (
    (r"\bH200\b", 4.8e12),
    (r"\bH100\b.*\bPCIe\b", 2.0e12),
    (r"\bH100\b.*\bNVL\b", 3.9e12),
    (r"\bH100\b", 3.35e12),
    (r"\bA100\b.*80GB.*\bPCIe\b", 1.935e12),
    (r"\bA100\b.*80GB", 2.039e12),
    (r"\bA100\b", 1.555e12),
    (r"\bL40S\b", 8.64e11),
    (r"\bL4\b", 3.0e11),
    (r"\bA10\b", 6.0e11),
    (r"\bV100\b", 9.0e11),
    (r"\bRTX 4090\s*$", 1.008e12),
    (r"\bRTX 3090\s*$", 9.36e11),
)
#: Arrays this many times the last-level cache (32 MiB here) measure memory, not cache.
_STREAM_BYTES = 128 * 2**20
_STREAM_S = 1.0


def table_bandwidth(device_name: str) -> float | None:
    """Data-sheet bytes/s of a GPU by name; None where the table does not know it."""
    for pattern, bytes_per_s in _BANDWIDTH_TABLE:
        if re.search(pattern, device_name, re.IGNORECASE):
            return bytes_per_s
    return None


def parse_bandwidth(text: str, what: str = BANDWIDTH_ENV) -> float:
    """``4.8e12`` or ``4.8T``: a positive, finite bytes/s figure."""
    return parse_rate(text, what, "bytes/s", "4.8e12 or 4.8T", "kKMGT", "B/s")


def memory_bandwidth(
    device: torch.device | str, override: float | None = None
) -> tuple[float, str]:
    """Bytes/s of ``device``'s memory and where the figure came from: ``"override"``, ``"env"``
    (``$SCALING_BENCH_MEMORY_BANDWIDTH``), ``"table"`` (a GPU's data sheet) or ``"measured"``
    (a CPU's STREAM triad, cached). A GPU the table does not know is a ``UserError``."""
    if override is not None:
        if not (math.isfinite(override) and override > 0):
            raise UserError(f"memory bandwidth override {override!r} must be a positive number")
        return float(override), "override"
    if env_value := os.environ.get(BANDWIDTH_ENV):
        return parse_bandwidth(env_value), "env"
    device = torch.device(device)
    if device.type == "cpu":
        return measured_stream_bandwidth(), "measured"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    bandwidth = table_bandwidth(name)
    if bandwidth is None:
        raise UserError(
            f"no memory bandwidth for {name!r} in the table; set {BANDWIDTH_ENV} (e.g. 3.35T)"
        )
    return bandwidth, "table"


def _measure_triad(n_bytes: int = _STREAM_BYTES, seconds: float = _STREAM_S) -> float:
    """Fastest ``a = b + 3·c`` over float64 arrays of ``n_bytes`` each, in STREAM's bytes/s."""
    n = n_bytes // 8
    a, b, c = (torch.full((n,), v, dtype=torch.float64) for v in (0.0, 1.0, 2.0))
    torch.add(b, c, alpha=3.0, out=a)  # first pass: pages faulted in, threads started
    fastest_s, started = math.inf, time.perf_counter()
    while fastest_s == math.inf or time.perf_counter() - started < seconds:
        start = time.perf_counter()
        torch.add(b, c, alpha=3.0, out=a)
        fastest_s = min(fastest_s, time.perf_counter() - start)
    return 3 * n * 8 / fastest_s


def measured_stream_bandwidth(refresh: bool = False) -> float:
    """This CPU's STREAM-triad bytes/s, measured once per machine (CPU model, cores, torch
    threads, torch version) and cached in the measured-peak cache; ``refresh`` keeps the max."""
    return cached_measurement(cpu_cache_key("stream triad"), _measure_triad, refresh)
