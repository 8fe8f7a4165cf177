"""Joules per step and average power: an energy counter read at the edges of the timed blocks.

On a GPU the counter is NVML's total energy (Volta and later); where the device lacks it, a thread
integrates NVML's power draw instead (``source`` says which). On a CPU it is RAPL's package
counters (``/sys/class/powercap/*/energy_uj``, summed over packages) where this user may read them.
Without any of these the figures are absent, with the reason, never zero.

A counter advances in steps (RAPL about every millisecond, NVML's less often), so consecutive
blocks are pooled into windows of at least ``MIN_WINDOW_S`` over which the counter advanced; each
window gives one sample (its joules over its steps), and the steps of a last, shorter window are
left out and counted. A counter that went back wrapped (RAPL wraps at ``max_energy_range_uj``) and
is unwrapped, or, with no known range, was reset, and that window is dropped; both are counted.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import torch

from scaling_bench.core.stats import summarize
from scaling_bench.hardware import nvml as device_nvml
from scaling_bench.hardware.peaks import nvml
from scaling_bench.meters.timing import BlockMeter

MIN_WINDOW_S = 0.1
"""Shortest window one energy sample covers: many counter updates, so its quantisation is small."""
POWER_POLL_S = 0.01
POWERCAP = Path("/sys/class/powercap")


@dataclass
class Counter:
    """A cumulative energy reading: ``read()`` in units of ``joules_per_unit``; ``range`` is
    where it wraps to zero (None: a decrease is a reset, not a wrap)."""

    source: str
    read: Callable[[], float]
    joules_per_unit: float
    range: float | None = None


def rapl_counter(root: Path | None = None) -> tuple[Counter | None, str]:
    """RAPL's package counters summed, or None and why. Sub-zones (``intel-rapl:0:0``: core,
    dram) are inside their package, ``psys`` holds the packages and ``intel-rapl-mmio`` repeats
    them, so only the top-level ``package-*`` zones are read (AMD's are named alike)."""
    root = root or POWERCAP
    zones = []
    for zone in sorted(root.glob("intel-rapl:*")):
        try:
            if zone.name.count(":") > 1 or not (zone / "name").read_text().startswith("package"):
                continue
            (zone / "energy_uj").read_text()
            wrap = float((zone / "max_energy_range_uj").read_text())
        except (OSError, ValueError):
            continue
        zones.append((zone / "energy_uj", wrap))
    if not zones:
        return None, f"no readable RAPL package counter under {root}"
    if len(zones) > 1:
        # Packages wrap one at a time, so their sum has no one range: a window in which one
        # wrapped reads as a reset and is dropped (and counted).
        return Counter("rapl", lambda: sum(float(p.read_text()) for p, _ in zones), 1e-6, None), ""
    path, wrap = zones[0]
    return Counter("rapl", lambda: float(path.read_text()), 1e-6, wrap), ""


class _PowerIntegral:
    """Energy in millijoules from power readings every ``interval_s`` (trapezoids), for GPUs
    without an energy counter."""

    def __init__(self, read_mw: Callable[[], float | None], interval_s: float) -> None:
        self._read_mw = read_mw
        self._interval_s = interval_s
        self._lock = threading.Lock()
        self._mj = 0.0
        self._last = (time.perf_counter(), read_mw() or 0.0)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="power-integral", daemon=True)
        self._thread.start()

    def _sample(self) -> float:
        with self._lock:
            now, mw = time.perf_counter(), self._read_mw()
            if mw is not None:
                then, last_mw = self._last
                self._mj += (now - then) * (mw + last_mw) / 2
                self._last = (now, mw)
            return self._mj

    def _run(self) -> None:
        while not self._stopping.wait(self._interval_s):
            self._sample()

    def read(self) -> float:
        return self._sample()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join()


class EnergyMeter(BlockMeter):
    """Context manager: pass it to ``timing.measure(meters=...)``; ``metrics()`` once it ended.

    ``shared_machine`` says the case's ranks share one CPU package, whose counter would then be
    summed once per rank: the figures are left out. ``left_out`` says why figures are absent.
    """

    def __init__(
        self,
        device: torch.device | str,
        *,
        shared_machine: bool = False,
        min_window_s: float = MIN_WINDOW_S,
        counter: Counter | None = None,
    ) -> None:
        self.device = torch.device(device)
        self.shared_machine = shared_machine
        self.min_window_s = min_window_s
        self.counter = counter
        self.left_out: str | None = None
        self._stack = ExitStack()
        self._energy_j: list[float] = []
        self._power_w: list[float] = []
        self._window: tuple[float, float] | None = None  # (host time, reading) at its start
        self._window_steps = 0
        self._wraps = 0
        self._resets = 0
        self._sampled_s = 0.0

    def __enter__(self) -> EnergyMeter:
        if self.counter is None:
            self.counter, why = self._open()
            self.left_out = None if self.counter else why
        return self

    def _open(self) -> tuple[Counter | None, str]:
        if self.shared_machine:
            return None, "the ranks share one machine's energy counter"
        if self.device.type == "cpu":
            return rapl_counter()
        lib = self._stack.enter_context(nvml())
        if lib is None:
            return None, "NVML is not available"
        h = device_nvml.handle(lib, self.device)
        if h is None:
            return None, "NVML does not know this device"
        if device_nvml.energy_mj(lib, h) is not None:

            def read() -> float:
                mj = device_nvml.energy_mj(lib, h)
                if mj is None:
                    raise RuntimeError("NVML stopped reporting the energy counter it had reported")
                return float(mj)

            return Counter("nvml_total_energy", read, 1e-3, device_nvml.ENERGY_COUNTER_RANGE_MJ), ""
        if device_nvml.power_mw(lib, h) is None:
            return None, "the device reports neither energy nor power"
        integral = _PowerIntegral(lambda: device_nvml.power_mw(lib, h), POWER_POLL_S)
        self._stack.callback(integral.stop)
        return Counter("nvml_power_sampling", integral.read, 1e-3), ""

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stack.close()

    def block_started(self) -> None:
        if self.counter is not None and self._window is None:
            self._window = (time.perf_counter(), self.counter.read())
            self._window_steps = 0

    def block_ended(self, block_s: float, calls: int) -> None:
        if self.counter is None or self._window is None:
            return
        self._window_steps += calls
        now = time.perf_counter()
        start_s, start = self._window
        if now - start_s < self.min_window_s:
            return
        end = self.counter.read()
        delta = end - start
        if delta < 0 and self.counter.range is not None:
            delta += self.counter.range
            self._wraps += 1
        elif delta < 0:
            self._resets += 1
            self._window = None
            return
        if delta == 0:  # the counter has not moved yet: the window goes on
            return
        joules = delta * self.counter.joules_per_unit
        self._energy_j.append(joules / self._window_steps)
        self._power_w.append(joules / (now - start_s))
        self._sampled_s += now - start_s
        self._window = None

    def metrics(self) -> dict[str, dict]:
        """``energy_per_step_j`` and ``power_w`` with a sample per window; nothing (and
        ``left_out`` set) where there was no counter or no window closed."""
        if self.counter is None:
            return {}
        if not self._energy_j:
            self.left_out = (
                f"the {self.counter.source} counter did not advance over a window of at least "
                f"{self.min_window_s:g} s: the timed blocks were too short"
            )
            return {}
        left = self._window_steps if self._window is not None else 0
        about = {
            "source": self.counter.source,
            "window_s": self.min_window_s,
            "sampled_s": self._sampled_s,
            "counter_wraps": self._wraps,
            "counter_resets_dropped": self._resets,
            "steps_left_out": left,
        }
        return {
            "energy_per_step_j": summarize(self._energy_j, "J") | about,
            "power_w": summarize(self._power_w, "W") | about,
        }
