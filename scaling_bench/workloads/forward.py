"""Inference: one forward pass without autograd, the cost of serving the model."""

from __future__ import annotations

from collections.abc import Callable

from scaling_bench.workloads.base import Column, Context, register
from scaling_bench.workloads.setup import CaseSetup
from scaling_bench.workloads.timed import TimedWorkload


class Forward(TimedWorkload):
    """Runs before training, so its peak is not inflated by gradients and optimizer state."""

    name = "forward"
    order = 10
    flops_field = "forward_flops_per_sample"
    columns = (Column("fwd samples/s", ("forward_samples_per_s",), "{:,.0f}"),)

    def build_step(self, setup: CaseSetup, ctx: Context | None) -> Callable[[], object]:
        distributed = ctx is not None and ctx.distributed
        return setup.forward_step(grad_mode=distributed)


register(Forward())
