"""The GPU's state during each timed block: clocks, temperature, power and throttling.

A B200 measured 15% fewer TFLOP/s as its clock fell from 1965 to 1580 MHz: a figure means little
without the clock it ran at. The state is read from NVML once per sampling block, while the
block's work is in flight (after its launches, before the synchronise), so it is the state under
load, not of the idle moment between blocks. A block whose clock-event bitmask holds a throttling
reason (power cap, thermal or hardware slowdown, power brake) counts as throttled.

The figures are bookkeeping (about the measurement, never compared themselves); the step-time
metric carries the clock state (``annotation``) so that ``compare`` can tell two runs at different
clocks apart. No NVML, or a CPU: absent.
"""

from __future__ import annotations

from contextlib import ExitStack
from types import ModuleType, TracebackType
from typing import Any

import torch

from scaling_bench.core.stats import single, summarize
from scaling_bench.hardware import nvml as device_nvml
from scaling_bench.hardware.peaks import nvml
from scaling_bench.meters.timing import BlockMeter


class DeviceStateMeter(BlockMeter):
    """Context manager: pass it to ``timing.measure(meters=...)``; ``metrics()`` once it ended."""

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self._lib: ModuleType | None = None
        self._handle: Any = None
        self._stack = ExitStack()
        self.readings: list[device_nvml.DeviceState] = []

    def __enter__(self) -> DeviceStateMeter:
        if self.device.type == "cuda":
            lib = self._stack.enter_context(nvml())
            if lib is not None:
                self._lib, self._handle = lib, device_nvml.handle(lib, self.device)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stack.close()

    def block_in_flight(self) -> None:
        if self._lib is not None and self._handle is not None:
            self.readings.append(device_nvml.device_state(self._lib, self._handle))

    def _field(self, name: str) -> list[float]:
        return [v for r in self.readings if (v := getattr(r, name)) is not None]

    def metrics(self) -> dict[str, dict]:
        """Per-block samples of each field the device reported, and the throttled share."""
        out: dict[str, dict] = {}
        for name, unit, field in (
            ("sm_clock_mhz", "MHz", "sm_clock_mhz"),
            ("memory_clock_mhz", "MHz", "memory_clock_mhz"),
            ("temperature_c", "C", "temperature_c"),
            ("power_draw_w", "W", "power_w"),
        ):
            if values := self._field(field):
                out[name] = summarize(values, unit)
        if limits := self._field("power_limit_w"):
            out["power_limit_w"] = single(max(limits), "W")
        masks = [int(m) for m in self._field("clock_event_bitmask")]
        if masks:
            combined = 0
            for m in masks:
                combined |= m
            throttled = sum(bool(m & device_nvml.THROTTLE_MASK) for m in masks)
            out["throttled_blocks"] = single(throttled / len(masks), "fraction") | {
                "n": len(masks),
                "clock_event_bitmask": combined,
                "throttle_reasons": device_nvml.throttle_reasons(combined),
            }
        return out

    def annotation(self) -> dict[str, Any]:
        """The clock state to carry on the step-time metric: median SM clock, and whether any
        block throttled (with the reasons)."""
        out: dict[str, Any] = {}
        metrics = self.metrics()
        if "sm_clock_mhz" in metrics:
            out["sm_clock_mhz"] = metrics["sm_clock_mhz"]["median"]
        if throttled := metrics.get("throttled_blocks"):
            out["throttled"] = throttled["value"] > 0
            if out["throttled"]:
                out["throttle_reasons"] = throttled["throttle_reasons"]
        return out
