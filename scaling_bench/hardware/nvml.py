"""What NVML says about one GPU: its energy counter, clocks, temperature, power and throttling,
and the other processes computing on it.

Every reader takes the initialised library (``peaks.nvml()`` yields it) and a device handle, and
answers None for what this device or driver does not report: a missing figure is absent from the
record, never zero. Handles are found by UUID, since NVML numbers all GPUs and torch only the
visible ones.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import torch

#: Clock-event (throttle) reasons that lower the clocks below what the work asks for, by NVML's
#: bit. Idle, application-clock and sync-boost bits are settings, not throttling: left out.
THROTTLE_REASONS = {
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
}
THROTTLE_MASK = sum(THROTTLE_REASONS)
#: NVML's total-energy counter is an unsigned 64-bit count of millijoules.
ENERGY_COUNTER_RANGE_MJ = 1 << 64


def throttle_reasons(bitmask: int) -> list[str]:
    """The names of the throttling bits set in an NVML clock-event bitmask."""
    return [name for bit, name in THROTTLE_REASONS.items() if bitmask & bit]


def handle(lib: ModuleType, device: torch.device) -> Any | None:
    """NVML's handle for a torch CUDA device; None where NVML does not know it."""
    index = torch.cuda.current_device() if device.index is None else device.index
    uuid = f"GPU-{torch.cuda.get_device_properties(index).uuid}"
    return _read(lib, lambda: lib.nvmlDeviceGetHandleByUUID(uuid))


def _read(lib: ModuleType, read: Callable[[], Any]) -> Any | None:
    """``read()``, or None where the device or driver does not support it."""
    try:
        return read()
    except lib.NVMLError:
        return None


def energy_mj(lib: ModuleType, h: Any) -> int | None:
    """The device's energy counter in millijoules since the driver loaded (Volta and later)."""
    return _read(lib, lambda: lib.nvmlDeviceGetTotalEnergyConsumption(h))


def power_mw(lib: ModuleType, h: Any) -> int | None:
    """Power draw now, in milliwatts (on some boards an average over the last second)."""
    return _read(lib, lambda: lib.nvmlDeviceGetPowerUsage(h))


@dataclass(frozen=True)
class DeviceState:
    """One reading of a GPU's state; a field the device does not report is None."""

    sm_clock_mhz: int | None
    memory_clock_mhz: int | None
    temperature_c: int | None
    power_w: float | None
    power_limit_w: float | None
    clock_event_bitmask: int | None

    @property
    def throttled(self) -> bool:
        return bool((self.clock_event_bitmask or 0) & THROTTLE_MASK)


def device_state(lib: ModuleType, h: Any) -> DeviceState:
    """Clocks, temperature, power and the clock-event bitmask now. The bitmask comes from
    ``nvmlDeviceGetCurrentClocksEventReasons`` (its name since driver 535), else from the older
    ``...ClocksThrottleReasons``."""
    bits = _read(lib, lambda: lib.nvmlDeviceGetCurrentClocksEventReasons(h))
    if bits is None:
        bits = _read(lib, lambda: lib.nvmlDeviceGetCurrentClocksThrottleReasons(h))
    power = power_mw(lib, h)
    limit = _read(lib, lambda: lib.nvmlDeviceGetEnforcedPowerLimit(h))
    return DeviceState(
        sm_clock_mhz=_read(lib, lambda: lib.nvmlDeviceGetClockInfo(h, lib.NVML_CLOCK_SM)),
        memory_clock_mhz=_read(lib, lambda: lib.nvmlDeviceGetClockInfo(h, lib.NVML_CLOCK_MEM)),
        temperature_c=_read(lib, lambda: lib.nvmlDeviceGetTemperature(h, lib.NVML_TEMPERATURE_GPU)),
        power_w=None if power is None else power / 1e3,
        power_limit_w=None if limit is None else limit / 1e3,
        clock_event_bitmask=bits,
    )


def compute_processes(lib: ModuleType, h: Any) -> list[dict[str, int]] | None:
    """The processes with a compute context on the device: pid and used bytes where known."""
    procs = _read(lib, lambda: lib.nvmlDeviceGetComputeRunningProcesses(h))
    if procs is None:
        return None
    return [
        {"pid": p.pid} | ({"used_bytes": p.usedGpuMemory} if p.usedGpuMemory else {}) for p in procs
    ]


def foreign_processes(
    lib: ModuleType, h: Any, before: list[dict[str, int]] | None = None
) -> list[dict[str, int]] | None:
    """Compute processes on the device other than this one; None where NVML cannot list them.

    In a container NVML reports the host's pids, so this process may not find itself in the
    list: then the processes that appeared since ``before`` (the list at the case's start, taken
    before this process touched CUDA) are taken to be its own.
    """
    procs = compute_processes(lib, h)
    if procs is None:
        return None
    pid = os.getpid()
    if before is not None and all(p["pid"] != pid for p in procs):
        known = {p["pid"] for p in before}
        return [p for p in procs if p["pid"] in known]
    return [p for p in procs if p["pid"] != pid]
