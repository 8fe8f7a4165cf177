"""Inference: one forward pass without autograd, the cost of serving the model."""

from __future__ import annotations

from collections.abc import Callable

from scaling_bench.workloads import catalog
from scaling_bench.workloads.base import Context, register
from scaling_bench.workloads.setup import CaseSetup
from scaling_bench.workloads.timed import TimedWorkload


class Forward(TimedWorkload, declared=catalog.FORWARD):
    """Runs before training, so its peak is not inflated by gradients and optimizer state."""

    flops_field = "forward_flops_per_sample"

    def build_step(self, setup: CaseSetup, ctx: Context | None) -> Callable[[], object]:
        distributed = ctx is not None and ctx.distributed
        return setup.forward_step(grad_mode=distributed)


register(Forward())
