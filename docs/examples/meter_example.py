"""CPU seconds the process spends in a region (all threads, user and system), and a workload
that records them.

The meter recipe of docs/architecture.md. A meter is a context manager with its ``SPECS`` and
knows nothing of models; its figures reach a record through a workload that wraps its region with
it and declares the specs under its own prefix. As a built-in, ``CpuTime`` and ``SPECS`` are
``scaling_bench/meters/cpu_time.py`` and the workload imports them from there; here both are one
plugin module: ``scaling-bench run --plugin meter_example --workloads sum_weights``.
"""

from __future__ import annotations

import time
from types import TracebackType

import torch

from scaling_bench.core.metrics import LOWER, MetricSpec, prefixed
from scaling_bench.core.stats import single
from scaling_bench.workloads.base import Context, Workload, register
from scaling_bench.workloads.setup import CaseSetup

#: What ``CpuTime.metrics`` records, before a workload's prefix.
SPECS = (MetricSpec("cpu_s", "s", LOWER, reduce="sum", label="CPU seconds"),)


class CpuTime:
    def __enter__(self) -> CpuTime:
        self._start = time.process_time()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cpu_s = time.process_time() - self._start

    def metrics(self) -> dict[str, dict]:
        return {"cpu_s": single(self.cpu_s, "s")}


class SumWeights(Workload):
    name = "sum_weights"
    order = 26  # after train (20), before checkpoint (30)
    default = False  # grids run it where their workloads name it
    specs = prefixed("sum_weights", SPECS)  # sum_weights_cpu_s

    def measure(self, setup: CaseSetup, ctx: Context) -> dict[str, dict]:
        with CpuTime() as cpu, torch.no_grad():
            for p in setup.model.parameters():
                p.sum().item()
        return {f"{self.name}_{name}": m for name, m in cpu.metrics().items()}


register(SumWeights())
