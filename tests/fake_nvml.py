"""A fake NVML (the pynvml calls the meters and ``check`` make) and a CUDA device as far as
they ask, for tests without a GPU; installed as ``hardware.peaks.pynvml``, as the memory-meter
tests do."""

from types import SimpleNamespace

import pynvml
import torch

from scaling_bench.hardware import peaks


def not_supported(*args):
    raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)


class FakeNVML(SimpleNamespace):
    """The pynvml calls the meters make. ``energy`` and ``bits`` are iterated per call (their
    last value repeats); a value of None means the call is not supported."""

    def __init__(self, energy=(0,), power_mw=250_000, bits=(0,), processes=(), sm_mhz=1980):
        self._energy, self._bits = list(energy), list(bits)
        self.power = power_mw
        self.processes = list(processes)
        self.sm_mhz = sm_mhz
        super().__init__(
            NVMLError=pynvml.NVMLError,
            NVML_CLOCK_SM=pynvml.NVML_CLOCK_SM,
            NVML_CLOCK_MEM=pynvml.NVML_CLOCK_MEM,
            NVML_TEMPERATURE_GPU=pynvml.NVML_TEMPERATURE_GPU,
            nvmlInit=lambda: None,
            nvmlShutdown=lambda: None,
            nvmlDeviceGetHandleByUUID=lambda uuid: uuid,
            nvmlDeviceGetEnforcedPowerLimit=lambda h: 700_000,
            nvmlDeviceGetTemperature=lambda h, sensor: 61,
        )

    @staticmethod
    def _next(values):
        value = values.pop(0) if len(values) > 1 else values[0]
        if value is None:
            not_supported()
        return value

    def nvmlDeviceGetTotalEnergyConsumption(self, h):
        return self._next(self._energy)

    def nvmlDeviceGetPowerUsage(self, h):
        return not_supported() if self.power is None else self.power

    def nvmlDeviceGetClockInfo(self, h, clock):
        return self.sm_mhz if clock == pynvml.NVML_CLOCK_SM else 2619

    def nvmlDeviceGetCurrentClocksEventReasons(self, h):
        return self._next(self._bits)

    def nvmlDeviceGetComputeRunningProcesses(self, h):
        return [SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in self.processes]


def install(monkeypatch, fake):
    """A CUDA device 0 as far as the meters ask, its NVML answered by ``fake``."""
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda d: SimpleNamespace(uuid="0"))
    monkeypatch.setattr(peaks, "pynvml", fake)
    return fake
