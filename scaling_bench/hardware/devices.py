"""What a device can run, and how much memory it has free for a case."""

from __future__ import annotations

import torch

from scaling_bench.core.errors import UserError


def dtype_warning(device: str, dtype: str) -> str | None:
    """Refuse a dtype the device cannot run; warn about one it runs slowly (DESIGN §4)."""
    if device.startswith("cuda"):
        index = int(device.split(":")[1])
        if dtype == "bf16" and not torch.cuda.is_bf16_supported(including_emulation=False):
            raise UserError(f"{torch.cuda.get_device_name(index)} has no native bf16 support")
        return None
    if dtype in ("bf16", "fp16"):
        return (
            f"{dtype} on this CPU runs matmuls far below the fp32 rate (no native {dtype} units);"
            " expect slow cases"
        )
    return None


def free_memory_bytes(device: str) -> int:
    """Free memory on the device a case would use: GPU free memory, or available host memory."""
    if device.startswith("cuda"):
        free, _ = torch.cuda.mem_get_info(int(device.split(":")[1]))
        return free
    import psutil

    return psutil.virtual_memory().available
