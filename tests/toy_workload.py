"""A workload from outside the package, registered as a plugin registers one: ``toy``.

It sums the built model's parameter bytes (counted, and predicted from the plan, so the report
fits them against N and holds them against theory) and times a tiny operation on its weights
(measured), which is all a workload needs to be run by ``scaling-bench run --plugin toy_workload``,
by ``pytest benchmarks --sb-plugin toy_workload`` and by asv with
``SCALING_BENCH_PLUGINS=toy_workload``, and read by ``compare``, without a line of the package
changed. Importable as ``toy_workload`` because pytest puts this folder on ``sys.path`` (workers
get the parent's path).
"""

from __future__ import annotations

import time

import torch

from scaling_bench.core import precision as precisions
from scaling_bench.core.metrics import LOWER, MetricSpec
from scaling_bench.core.stats import single, summarize
from scaling_bench.predict.plan import Plan
from scaling_bench.workloads.base import Column, Context, Needs, Workload, register
from scaling_bench.workloads.setup import CaseSetup

REPEATS = 5


class Toy(Workload):
    """Between training (20) and the checkpoint (30); it needs only the built weights."""

    name = "toy"
    order = 25
    needs = Needs.WEIGHTS
    default = False  # a grid runs it where its workloads name it
    specs = (
        MetricSpec("toy_answer_s", "s", LOWER, label="toy: seconds to sum the weights"),
        MetricSpec("toy_bytes", "bytes", LOWER, "counted", label="toy: parameter bytes"),
    )
    columns = (Column("toy bytes", ("toy_bytes",), "bytes"),)

    def measure(self, setup: CaseSetup, ctx: Context) -> dict[str, dict]:
        params = list(setup.model.parameters())
        samples = []
        for _ in range(REPEATS):
            start = time.perf_counter()
            with torch.no_grad():
                total = torch.stack([p.detach().float().sum() for p in params]).sum()
            total.item()  # waits for the device
            samples.append(time.perf_counter() - start)
        nbytes = sum(p.numel() * p.element_size() for p in params)
        return {"toy_answer_s": summarize(samples, "s"), "toy_bytes": single(nbytes, "bytes")}

    def predict(self, plan: Plan, device: torch.device, ctx: Context) -> dict[str, dict]:
        """The parameter bytes, under the measured figure's name: exact, from the plan."""
        nbytes = plan.params * precisions.get(plan.precision).param_dtype.itemsize
        return {"toy_bytes": single(nbytes, "bytes")}


TOY = register(Toy())
