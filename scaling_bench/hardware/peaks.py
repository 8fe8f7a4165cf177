"""The machine a result came from, and the peak FLOP/s its MFU is measured against.

GPU peaks come from a table of vendor data-sheet figures, always the dense ones (the sheets print
the 2:4 sparsity figures, twice as high, in the headline). A CPU has no such sheet that plain
PyTorch reaches, so its peak is the best square GEMM measured once per machine and cached. A GPU
gets such a measured peak too, beside its table figure: the best of a short search over large
square and rectangular GEMMs per dtype, cached per device, which is what MFU can reach there.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import ModuleType

import psutil
import torch

from scaling_bench.core.errors import UserError
from scaling_bench.hardware.cache import CACHE_DIR_ENV as CACHE_DIR_ENV  # re-exported
from scaling_bench.hardware.cache import cache_file as cache_file  # re-exported
from scaling_bench.hardware.cache import measured_cache_path as _cache_path
from scaling_bench.hardware.cache import read_cache as _read_cache
from scaling_bench.hardware.kernels import cpu_model, kernel_env, kernel_key

try:
    import pynvml  # from nvidia-ml-py
except ImportError:  # a broken install must not stop CPU runs; NVML figures are then absent
    pynvml = None

PEAK_FLOPS_ENV = "SCALING_BENCH_PEAK_FLOPS"

# Dense TFLOP/s by precision, keyed by a pattern searched in torch.cuda.get_device_name(); None
# where the chip has no such tensor-core mode. The first match wins, so variants come before their
# family's plain name. Sources: NVIDIA data sheets (A100, H100 SXM/PCIe/NVL, H200 SXM/NVL, GH200,
# L4, A10, V100) and architecture whitepapers (Ada for the RTX 4090, GA102 for the RTX 3090). Where
# a sheet prints only the 2:4 sparsity figure (marked * there), it is halved here. GeForce fp16 and
# bf16 figures are with fp32 accumulation, which is what cuBLAS uses under PyTorch.
_Row = tuple[str, float, float | None, float | None, float, float | None]
_PEAK_TABLE_TFLOPS: tuple[_Row, ...] = (
    # pattern                fp32   tf32   bf16   fp16   fp8 (e4m3, dense, fp32 accumulate)
    (r"\bH100\b.*\bPCIe\b", 51.2, 378.0, 756.0, 756.0, 1513.0),
    (r"\bH100\b.*\bNVL\b", 60.0, 417.5, 835.5, 835.5, 1670.5),
    (r"\bH100\b", 67.0, 494.7, 989.4, 989.4, 1978.9),
    (r"\bH200\b.*\bNVL\b", 60.0, 417.5, 835.5, 835.5, 1670.5),
    (r"\bG?H200\b", 67.0, 494.7, 989.4, 989.4, 1978.9),
    (r"\bA100\b", 19.5, 156.0, 312.0, 312.0, None),
    (r"\bL4\b", 30.3, 60.0, 121.0, 121.0, 242.5),
    (r"\bA10\b", 31.2, 62.5, 125.0, 125.0, None),
    (r"\bV100S\b", 16.4, None, None, 130.0, None),
    (r"\bV100-PCIE\b", 14.0, None, None, 112.0, None),
    (r"\bV100\b", 15.7, None, None, 125.0, None),
    (r"\bRTX 4090\s*$", 82.6, 82.6, 165.2, 165.2, 165.2),
    (r"\bRTX 3090\s*$", 35.6, 35.6, 71.0, 71.0, None),
)
_TABLE_PRECISIONS = ("fp32", "tf32", "bf16", "fp16", "fp8")

_PRECISION = {
    torch.float32: "fp32",
    torch.bfloat16: "bf16",
    torch.float16: "fp16",
    torch.float8_e4m3fn: "fp8",
}
_SI_PREFIX = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15}

_GEMM_SIZES = (256, 512, 1024, 2048, 4096)
_GEMM_SIZE_S = 0.4
"""Seconds spent repeating each GEMM size: the fastest repeat counts, so a busy moment does not.
A size is not tried when one product is predicted (8x the last size's) to take longer."""
_GEMM_REFRESH_S = 0.1
"""Seconds per size when a cached figure is refreshed: the same sizes, fewer repeats. A refresh
only ever raises the figure, so a shorter one cannot make it worse; it ran before every run
and took 1.7 s of the quick grid's start at the full time."""


@contextmanager
def nvml() -> Iterator[ModuleType | None]:
    """``pynvml``, initialised for the block; None where NVML is missing (no package, no driver)."""
    lib = pynvml
    if lib is not None:
        try:
            lib.nvmlInit()
        except lib.NVMLError:
            lib = None
    try:
        yield lib
    finally:
        if lib is not None:
            lib.nvmlShutdown()


def _git(repo_dir: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(repo_dir), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def fingerprint(repo_dir: Path | None = None) -> dict:
    """Flat description of this machine and checkout, stored with every record.

    The git commit is that of the scaling-bench checkout doing the measuring (``repo_dir``
    defaults to it), not of whatever folder the command was started from.

    Keys that cannot be known here are absent, never null: no GPU keys without a usable GPU, no
    driver version without NVML, no git keys outside a git checkout. ``git_dirty`` ignores untracked
    files, since results written into the checkout would otherwise always mark it dirty.
    """
    env = {
        "cpu_model": cpu_model(),
        "cpu_physical_cores": psutil.cpu_count(logical=False),
        "cpu_logical_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "ram_bytes": psutil.virtual_memory().total,
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python_version": platform.python_version(),
        "torch_version": torch.__version__,
        "torch_cuda_version": torch.version.cuda,
        **kernel_env(),
    }
    if torch.cuda.is_available():
        env |= {
            "gpu_name": torch.cuda.get_device_name(0),
            "gpu_count": torch.cuda.device_count(),
            "gpu_memory_bytes": torch.cuda.get_device_properties(0).total_memory,
        }
        with nvml() as lib:
            if lib is not None:
                env["gpu_driver_version"] = lib.nvmlSystemGetDriverVersion()
    repo = repo_dir or Path(__file__).resolve().parents[1]
    commit = _git(repo, "rev-parse", "HEAD")
    status = _git(repo, "status", "--porcelain", "--untracked-files=no")
    if commit is not None and status is not None:
        env |= {"git_commit": commit, "git_dirty": bool(status)}
    return {key: value for key, value in env.items() if value is not None}


def table_peak_flops(device_name: str, precision: str) -> float | None:
    """Dense peak FLOP/s of a GPU by name and ``fp32|tf32|bf16|fp16|fp8``; None if not listed."""
    if precision not in _TABLE_PRECISIONS:
        return None
    for pattern, *tflops in _PEAK_TABLE_TFLOPS:
        if re.search(pattern, device_name, re.IGNORECASE):
            peak = tflops[_TABLE_PRECISIONS.index(precision)]
            return None if peak is None else peak * 1e12
    return None


def matmul_tf32_enabled() -> bool:
    """Whether fp32 matmuls on CUDA may run as TF32 (then the TF32 peak is the honest one).

    Reads the new ``fp32_precision`` API where torch has it: the legacy ``allow_tf32`` raises there
    once a user has mixed the two.
    """
    precision = getattr(torch.backends.cuda.matmul, "fp32_precision", None)
    if precision is not None:
        return precision == "tf32"
    return bool(torch.backends.cuda.matmul.allow_tf32)


def parse_flops(text: str, what: str = PEAK_FLOPS_ENV) -> float:
    """``989.4e12`` or ``989.4T``: a positive, finite FLOP/s figure."""
    return parse_rate(text, what, "FLOP/s", "989.4e12 or 989.4T", "kKMGTP", "")


def parse_rate(text: str, what: str, unit: str, example: str, prefixes: str, suffix: str) -> float:
    """A positive, finite figure with an optional SI prefix (of ``prefixes``) and an optional
    ``suffix`` (its unit), else a one-line ``UserError`` naming ``what``."""
    tail = f"({re.escape(suffix)})?" if suffix else ""
    match = re.fullmatch(rf"(.+?)\s*([{prefixes}]?){tail}", text.strip())
    try:
        value = float(match[1]) * _SI_PREFIX[match[2]] if match else math.nan
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise UserError(f"{what} {text!r} is not a positive {unit} figure (e.g. {example})")
    return value


def peak_flops(
    device: torch.device | str,
    dtype: torch.dtype,
    override: float | None = None,
    *,
    tf32: bool | None = None,
) -> tuple[float, str]:
    """Peak FLOP/s for ``dtype`` on ``device`` and where it came from.

    Source order: ``override``, then ``$SCALING_BENCH_PEAK_FLOPS``, then the table (GPU) or a
    measured GEMM (CPU); the source is ``"override"``, ``"env"``, ``"table"`` or ``"measured"``.
    For fp32 on a GPU the TF32 peak applies when ``tf32`` is true; None follows the cuBLAS matmul
    setting.
    """
    if override is not None:
        if not (math.isfinite(override) and override > 0):
            raise UserError(f"peak FLOP/s override {override!r} must be a positive number")
        return float(override), "override"
    if env_value := os.environ.get(PEAK_FLOPS_ENV):
        return parse_flops(env_value), "env"
    device = torch.device(device)
    if device.type == "cpu":
        return measured_gemm_peak(dtype), "measured"
    if device.type != "cuda":
        raise UserError(f"no peak FLOP/s known for {device.type}; set {PEAK_FLOPS_ENV}")
    name = torch.cuda.get_device_name(device)
    precision = _PRECISION.get(dtype, str(dtype).removeprefix("torch."))
    use_tf32 = matmul_tf32_enabled() if tf32 is None else tf32
    if precision == "fp32" and use_tf32 and table_peak_flops(name, "tf32") is not None:
        precision = "tf32"  # chips without TF32 (V100) run fp32 as fp32 whatever the setting
    peak = table_peak_flops(name, precision)
    if peak is None:
        raise UserError(
            f"no dense {precision} peak FLOP/s for {name!r} in the table; "
            f"pass it as an override or set {PEAK_FLOPS_ENV} (e.g. 989.4T)"
        )
    return peak, "table"


def _measure_gemm_flops(dtype: torch.dtype, size_s: float | None = None) -> float:
    """Best FLOP/s of square ``a @ b`` over growing sizes, each repeated for ``size_s``
    (``_GEMM_SIZE_S`` by default), stopping before one gets slow (by ``_GEMM_SIZE_S`` always,
    so that a short refresh tries the same sizes)."""
    size_s = _GEMM_SIZE_S if size_s is None else size_s
    best = 0.0
    for n in _GEMM_SIZES:
        a = torch.randn(n, n, dtype=dtype)
        b = torch.randn(n, n, dtype=dtype)
        started = time.perf_counter()
        a @ b  # the first product of a shape pays for kernel selection and thread start-up
        fastest_s = math.inf
        while fastest_s == math.inf or time.perf_counter() - started < size_s:
            start = time.perf_counter()
            a @ b
            fastest_s = min(fastest_s, time.perf_counter() - start)
        best = max(best, 2 * n**3 / fastest_s)
        if 8 * fastest_s > _GEMM_SIZE_S:
            break
    return best


#: (m, k, n) of the GPU search: square and rectangular, large enough to fill an H200's SMs.
_GPU_GEMM_SHAPES = (
    (4096, 4096, 4096),
    (8192, 8192, 8192),
    (16384, 16384, 16384),
    (16384, 8192, 16384),
    (8192, 16384, 8192),
    (32768, 4096, 8192),
)
_GPU_GEMM_SHAPE_S = 0.25
_GPU_GEMM_REPEATS = 5


def _measure_gpu_gemm_flops(dtype: torch.dtype, device: torch.device) -> float:
    """Best FLOP/s of ``a @ b`` over ``_GPU_GEMM_SHAPES``, each timed with CUDA events over
    blocks of products (the fastest block counts) for about ``_GPU_GEMM_SHAPE_S``."""
    best = 0.0
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for m, k, n in _GPU_GEMM_SHAPES:
        a = torch.randn(m, k, dtype=dtype, device=device)
        b = torch.randn(k, n, dtype=dtype, device=device)
        a @ b  # cuBLAS picks its kernel on the first product of a shape
        torch.cuda.synchronize(device)
        started, fastest_s = time.perf_counter(), math.inf
        while fastest_s == math.inf or time.perf_counter() - started < _GPU_GEMM_SHAPE_S:
            start.record()
            for _ in range(_GPU_GEMM_REPEATS):
                a @ b
            end.record()
            end.synchronize()
            fastest_s = min(fastest_s, start.elapsed_time(end) / 1e3 / _GPU_GEMM_REPEATS)
        best = max(best, 2 * m * k * n / fastest_s)
        del a, b
    torch.cuda.empty_cache()
    return best


def measure_gemm_flops(
    dtype: torch.dtype, device: torch.device | str = "cpu", size_s: float | None = None
) -> float:
    """The best GEMM FLOP/s measured now (not cached): square sizes on a CPU, each repeated for
    ``size_s``, the shape search on a GPU."""
    device = torch.device(device)
    if device.type == "cuda":
        return _measure_gpu_gemm_flops(dtype, device)
    return _measure_gemm_flops(dtype, size_s)


def measured_gemm_peak(
    dtype: torch.dtype, refresh: bool = False, *, device: torch.device | str = "cpu"
) -> float:
    """Achievable peak FLOP/s for ``dtype``: the best GEMM, measured once per machine (a CPU)
    or device (a GPU: the shape search, under the matmul TF32 setting for fp32) and cached.

    The cache key is what changes the figure: ``cpu_cache_key`` (CPU, threads, torch, the
    kernel selection) and dtype; on a GPU its name, CUDA and torch versions, the TF32 setting and
    dtype. The file is replaced atomically; an unreadable one is measured over.
    A measurement taken while other processes load the CPU comes out low (up to 3.5x here), so
    ``refresh`` measures again and keeps the higher figure: the cache only ever moves towards
    the machine's real peak, and MFU never passes 1 because of a busy moment. A CPU figure
    already cached is refreshed with fewer repeats per size (``_GEMM_REFRESH_S``).
    """
    device = torch.device(device)
    if device.type == "cuda":
        tf32 = dtype == torch.float32 and matmul_tf32_enabled()
        where = (torch.cuda.get_device_name(device), f"cuda {torch.version.cuda}", f"tf32 {tf32}")
        key: tuple[str, ...] = (*where, f"torch {torch.__version__}", str(dtype))
    else:
        key = (*cpu_cache_key("gemm peak"), str(dtype))
    known = refresh and "|".join(key) in _read_cache(_cache_path())
    size_s = _GEMM_REFRESH_S if known else None
    return cached_measurement(key, lambda: measure_gemm_flops(dtype, device, size_s), refresh)


def cpu_cache_key(what: str) -> tuple[str, ...]:
    """What changes a CPU figure measured once per machine: CPU model, cores, torch threads and
    version, and the digest of everything that selects the kernels (``hardware.kernels``: ISA
    caps, oneDNN version, capability), so a run under another ISA measures afresh (``what`` names
    the figure)."""
    where = (cpu_model(), f"{os.cpu_count()} cpus", f"{torch.get_num_threads()} threads")
    return (what, *where, f"torch {torch.__version__}", f"kernels {kernel_key()}")


def cached_measurement(key: tuple[str, ...], measure: Callable[[], float], refresh: bool) -> float:
    """A figure measured once per ``key`` and kept in the measured-peak cache; ``refresh``
    measures again and keeps the higher figure, so a busy moment never lowers it."""
    joined = "|".join(key)
    path = _cache_path()
    cached = _read_cache(path)
    if joined in cached and not refresh:
        return cached[joined]
    cached[joined] = max(cached.get(joined, 0.0), measure())
    _write_cache(path, cached)
    return cached[joined]


def _write_cache(path: Path, cached: dict[str, float]) -> None:
    """Replace the cache atomically. A folder that cannot be written (read-only home, full disk)
    only costs a measurement next time, so it is a warning, never an error."""
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as f:
            tmp = Path(f.name)
            json.dump(cached, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None:
            with suppress(OSError):
                tmp.unlink(missing_ok=True)
        print(
            f"scaling-bench: warning: cannot write the GEMM peak cache at {path} "
            f"({exc.strerror or exc}); measuring without caching",
            file=sys.stderr,
        )
