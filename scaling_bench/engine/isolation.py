"""Other compute processes on a case's GPU, at its start and its end, and whether it is kept.

Another job on the device shares its SMs, memory bandwidth and power budget: its figures are not
this machine's. The processes are recorded (the ``foreign_processes`` metric: how many, and their
pids and memory); under ``--isolation error`` such a case is recorded ``skipped`` with the reason
instead of its figures, under ``warn`` (the default) it is kept and the metric says so. A CPU, or a
GPU whose processes NVML cannot list, has no such metric.
"""

from __future__ import annotations

from typing import Any

import torch

from scaling_bench.hardware import nvml as device_nvml
from scaling_bench.hardware.peaks import nvml
from scaling_bench.workloads.catalog import FOREIGN_PROCESSES

Processes = list[dict[str, int]]


def foreign_processes(device: torch.device, before: Processes | None = None) -> Processes | None:
    """The other compute processes on ``device`` now; None on a CPU or where NVML cannot tell."""
    if device.type != "cuda":
        return None
    with nvml() as lib:
        h = None if lib is None else device_nvml.handle(lib, device)
        return None if h is None else device_nvml.foreign_processes(lib, h, before)


def _describe(procs: Processes, when: str) -> str:
    pids = ", ".join(str(p["pid"]) for p in procs)
    return f"{len(procs)} other compute process(es) on the device at the {when} (pid {pids})"


def refusal(policy: str, start: Processes | None) -> str | None:
    """Why a case must not start (``error`` and other processes there), or None."""
    if policy == "error" and start:
        return f"--isolation error: {_describe(start, 'start')}"
    return None


def with_isolation(
    fields: dict[str, Any], policy: str, start: Processes | None, end: Processes | None
) -> dict[str, Any]:
    """The case's record fields with the processes seen; under ``error``, a case that shared its
    device is ``skipped`` with the reason and its figures are not kept."""
    if start is None and end is None:
        return fields
    seen = {"at_start": start or [], "at_end": end or []}
    metric = {"value": max(len(start or ()), len(end or ())), "unit": "processes", "n": 1} | seen
    if policy == "error" and (start or end):
        when = "start" if start else "end"
        reason = f"--isolation error: {_describe(start or end or [], when)}"
        kept = {FOREIGN_PROCESSES.name: metric}
        return fields | {"status": "skipped", "error": reason, "metrics": kept}
    return fields | {"metrics": fields.get("metrics", {}) | {FOREIGN_PROCESSES.name: metric}}
