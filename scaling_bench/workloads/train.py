"""Training: forward, cross-entropy, backward and an optimizer step, as a training loop runs it.

Its memory peak is held against the plan's training memory, under the measured peak's name: the
allocator's on a GPU, the live tensor bytes on a CPU (``meters.tensor_memory``: the allocator's
reports, in a pass of its own after the timed one; RSS, with the allocator's and oneDNN's
overhead, stays beside it). On the ranks of a distributed
case it also counts the bytes of weights, gradients and optimizer state each rank holds (an FSDP
shard, or all of it), beside each rank's predicted share.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict
from typing import TYPE_CHECKING

from scaling_bench.core.stats import scaled, single
from scaling_bench.meters import tensor_memory
from scaling_bench.predict.plan import Plan, TrainMemory, rank_memory
from scaling_bench.workloads import catalog
from scaling_bench.workloads.base import Context, register
from scaling_bench.workloads.catalog import TRAIN_PARTS, TRAIN_PEAK_NAMES, TRAIN_STATE
from scaling_bench.workloads.setup import CaseSetup
from scaling_bench.workloads.steps import train_step
from scaling_bench.workloads.timed import TimedWorkload

if TYPE_CHECKING:
    import torch


class Train(TimedWorkload, declared=catalog.TRAIN):
    """After forward, so the inference peak is not inflated by the training state."""

    trains = True
    flops_field = "train_flops_per_sample"

    def build_step(self, setup: CaseSetup, ctx: Context | None) -> Callable[[], object]:
        return setup.train_step()

    def measure(self, setup: CaseSetup, ctx: Context) -> dict[str, dict]:
        metrics = super().measure(setup, ctx)
        if setup.device.type == "cpu":
            metrics |= _tensor_peak(setup)
        if ctx.distributed:
            metrics |= _held_bytes(setup)
        return metrics

    def derive(self, metrics: dict[str, dict], setup: CaseSetup, ctx: Context) -> dict[str, dict]:
        """MFU counts the model's FLOPs; HFU, beside it where blocks are recomputed, also the
        forward passes that activation checkpointing runs again in backward."""
        out = super().derive(metrics, setup, ctx)
        p = setup.plan
        if p.hardware_train_flops_per_sample > p.train_flops_per_sample:
            step_s = metrics["train_step_s"]
            flops = p.hardware_train_flops_per_sample * p.batch_size * ctx.world_size
            peak = ctx.devices * ctx.peak_flops
            if flops / step_s["value"] <= peak:
                out["train_hfu"] = scaled(step_s, flops / peak, "fraction", invert=True)
        return out

    def predict(self, plan: Plan, device: torch.device, ctx: Context) -> dict[str, dict]:
        out = super().predict(plan, device, ctx)
        out |= _memory_metrics(plan.train_memory, TRAIN_PEAK_NAMES[device.type], "")
        if ctx.distributed:  # a rank's peak, and the state it is counted holding after a step
            share = rank_memory(plan.train_memory, ctx.strategy, ctx.world_size)
            out |= _memory_metrics(share, TRAIN_PEAK_NAMES[device.type], "_per_rank")
            state = asdict(rank_memory(plan.train_state, ctx.strategy, ctx.world_size))
            out |= {
                f"train_{part}_bytes_per_rank": single(state[f"{part}_bytes"], "bytes")
                for part in TRAIN_STATE
            }
        return out


def _memory_metrics(memory: TrainMemory, peak_name: str, suffix: str) -> dict[str, dict]:
    """The predicted total under the measured peak's name (a rank's peak: its share's total),
    with the phase it falls in, each phase's peak and the parts at the peak beside it."""
    parts = {part: asdict(memory)[f"{part}_bytes"] for part in TRAIN_PARTS}
    where = {"phase": memory.peak_phase, "phases": memory.phases, "parts": parts}
    if memory.kernel_scratch_unmeasured:
        where["kernel_scratch_unmeasured"] = list(memory.kernel_scratch_unmeasured)
    out = {peak_name: single(memory.total_bytes, "bytes") | where}
    for part in TRAIN_PARTS:
        out[f"train_{part}_bytes{suffix}"] = single(parts[part], "bytes")
    return out


def _tensor_peak(setup: CaseSetup) -> dict[str, dict]:
    """One step after the timed ones under the exact tensor meter, its phases marked; the
    gradients are freed first (the meter sees only frees of what it saw allocated)."""
    import torch

    setup.ensure_training_state()
    setup.optimizer.zero_grad(set_to_none=True)
    state = [t for s in setup.optimizer.state.values() for t in s.values() if torch.is_tensor(t)]
    model = setup.step_model
    held = [*model.parameters(), *model.buffers(), *state, *setup.batch]
    with tensor_memory.TensorMemory(held) as meter:
        train_step(model, setup.optimizer, setup.batch, setup.precision, setup.scaler,
                   phase=meter.phase)()  # fmt: skip
    return {f"train_{name}": m for name, m in meter.metrics().items()}


def _local_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes of the part of each tensor that lives on this rank (an FSDP shard, or all of it)."""
    from torch.distributed.tensor import DTensor

    local = (t.to_local() if isinstance(t, DTensor) else t for t in tensors)
    return sum(t.numel() * t.element_size() for t in local)


def _held_bytes(setup: CaseSetup) -> dict[str, dict]:
    """Bytes of weights, gradients and optimizer state this rank holds (Adam's scalar step
    counters left out, as in the prediction)."""
    import torch

    setup.ensure_training_state()
    params: list[torch.Tensor] = list(setup.model.parameters())
    state = [
        t
        for s in setup.optimizer.state.values()
        for t in s.values()
        if torch.is_tensor(t) and t.dim()
    ]
    held: dict[str, list[torch.Tensor]] = {
        "weights": params,
        "gradients": [p.grad for p in params if p.grad is not None],
        "optimizer_state": state,
    }
    return {f"train_{k}_bytes_per_rank": single(_local_bytes(v), "bytes") for k, v in held.items()}


register(Train())
