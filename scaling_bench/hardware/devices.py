"""What a device can run, and how much memory it has free for a case."""

from __future__ import annotations

from pathlib import Path

import torch

from scaling_bench.core.errors import UserError


def dtype_warning(device: str, dtype: str) -> str | None:
    """Refuse a dtype the device cannot run; warn about one it runs slowly (DESIGN §4)."""
    if device.startswith("cuda"):
        index = int(device.split(":")[1])
        if dtype == "bf16" and not torch.cuda.is_bf16_supported(including_emulation=False):
            raise UserError(f"{torch.cuda.get_device_name(index)} has no native bf16 support")
        return None
    if dtype in _NATIVE_CPU_FLAGS and not cpu_flags() & _NATIVE_CPU_FLAGS[dtype]:
        return (
            f"{dtype} on this CPU runs matmuls far below the fp32 rate (no native {dtype} units);"
            " expect slow cases"
        )
    return None


#: CPU flags (``/proc/cpuinfo``) of units that run a dtype's matmuls natively: AVX-512 BF16 or
#: AMX runs bf16 at about twice fp32 (DESIGN §4); without them oneDNN emulates it, ~1% of fp32.
_NATIVE_CPU_FLAGS = {
    "bf16": frozenset({"avx512_bf16", "amx_bf16"}),
    "fp16": frozenset({"avx512_fp16", "amx_fp16"}),
}


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags; empty where ``/proc/cpuinfo`` cannot say (not Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return frozenset(line.partition(":")[2].split())


def free_memory_bytes(device: str) -> int:
    """Free memory on the device a case would use: GPU free memory, or available host memory."""
    if device.startswith("cuda"):
        free, _ = torch.cuda.mem_get_info(int(device.split(":")[1]))
        return free
    import psutil

    return psutil.virtual_memory().available
