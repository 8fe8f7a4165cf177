"""What a case should cost, computed before anything is allocated.

Weights, gradients and optimizer state follow from the parameter count and the dtype (the
parameters, their gradients and the optimizer's moments all live in the case's dtype: PyTorch's
optimizers keep state in the parameter's dtype). Activations are the tensors autograd saves for
the backward pass, found by running the forward pass on the meta device with a
``saved_tensors_hooks`` pack hook: exact for the model as built, at no memory cost. Attention is
traced as the fused kernels run it on real devices (q, k, v, output and log-sum-exp saved, never
the T×T matrix), since on the meta device PyTorch would otherwise take the math path.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

if TYPE_CHECKING:
    from scaling_bench.config.case import Case

from scaling_bench.core.dtypes import parse_dtype
from scaling_bench.core.errors import UserError
from scaling_bench.core.optimizers import OPTIMIZER_STEP_TENSORS, optimizer_slots
from scaling_bench.models import family, tokens_per_sample
from scaling_bench.models.loss import loss_of
from scaling_bench.predict.checkpoint import predicted_checkpoint_bytes, storage_nbytes


@dataclass(frozen=True)
class TrainMemory:
    weights_bytes: int
    gradients_bytes: int
    optimizer_state_bytes: int
    activations_bytes: int

    @property
    def total_bytes(self) -> int:
        return (
            self.weights_bytes
            + self.gradients_bytes
            + self.optimizer_state_bytes
            + self.activations_bytes
        )

    def to_dict(self) -> dict[str, int]:
        return asdict(self) | {"total_bytes": self.total_bytes}


class _FusedAttention(torch.autograd.Function):
    """Stands in for SDPA on the meta device, saving what the fused kernels save."""

    @staticmethod
    def forward(ctx, q, k, v):
        out = torch.empty_like(q)
        lse = q.new_empty(q.shape[:-1], dtype=torch.float32)
        ctx.save_for_backward(q, k, v, out, lse)
        return out

    @staticmethod
    def backward(ctx, grad):
        q, k, v, _, _ = ctx.saved_tensors
        return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


class _FusedAttentionMode(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is F.scaled_dot_product_attention:
            q, k, v = args[:3]
            return _FusedAttention.apply(q, k, v)
        return func(*args, **(kwargs or {}))


def saved_activation_bytes(model: torch.nn.Module, batch: tuple[torch.Tensor, ...]) -> int:
    """Bytes autograd keeps for backward in one training forward (inputs included, weights not)."""
    params = {id(p) for p in model.parameters()}
    seen = {id(t): t.numel() * t.element_size() for t in batch}

    def pack(t: torch.Tensor) -> torch.Tensor:
        base = t._base if t._base is not None else t
        if id(base) not in params:
            seen[id(base)] = base.numel() * base.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), _FusedAttentionMode():
        loss = loss_of(model, batch)
    del loss
    return sum(seen.values())


def activation_bytes(family_name: str, cfg: object, batch_size: int, dtype: torch.dtype) -> int:
    """Saved activations of ``cfg``, traced at depth 1 and 2 and extrapolated linearly in depth.

    Blocks past the first of each stage are identical, so the saved bytes are exactly linear in
    depth; tracing two shallow copies instead of a deep model keeps a plan of a 1e10-parameter
    model well under a second (a meta-device op still costs tens of microseconds). A ResNet with
    unequal stages is traced whole.
    """
    fam = family(family_name)

    def trace(c: object) -> int:
        model = fam.build(c, device="meta", dtype=dtype)
        return saved_activation_bytes(model, fam.sample_batch(c, batch_size, "meta", dtype))

    field = getattr(fam, "DEPTH_FIELD", None)  # the family's repeated blocks, where it has them
    depth = getattr(cfg, field) if field else None
    if isinstance(depth, tuple):
        depth = depth[0] if len(set(depth)) == 1 else None
    if depth is None or depth <= 2:
        return trace(cfg)

    def at(n: int) -> object:
        stages = getattr(cfg, field)
        value = tuple([n] * len(stages)) if isinstance(stages, tuple) else n
        return replace(cfg, **{field: value})

    one, two = trace(at(1)), trace(at(2))
    return one + (depth - 1) * (two - one)


@dataclass(frozen=True)
class Plan:
    """Everything known about a case before it runs."""

    family: str
    target_params: float
    params: int
    config: object
    batch_size: int
    dtype: str
    optimizer: str
    forward_flops_per_sample: int
    train_flops_per_sample: int
    tokens_per_sample: int | None
    train_memory: TrainMemory
    checkpoint_bytes: int
    checkpoint_bytes_with_optimizer: int

    def to_dict(self) -> dict:
        """The ``plan --json`` object: a contract users script against (DESIGN §3)."""
        flops = {"forward": self.forward_flops_per_sample, "train": self.train_flops_per_sample}
        out = {
            "family": self.family,
            "target_params": self.target_params,
            "params": self.params,
            "relative_error": self.params / self.target_params - 1,
            "config": asdict(self.config),
            "batch_size": self.batch_size,
            "dtype": self.dtype,
            "optimizer": self.optimizer,
            "flops_per_sample": flops,
            "predicted": {
                "train_memory_bytes": self.train_memory.to_dict(),
                "checkpoint_bytes": self.checkpoint_bytes,
                "checkpoint_bytes_with_optimizer": self.checkpoint_bytes_with_optimizer,
            },
        }
        if self.tokens_per_sample:
            out["tokens_per_sample"] = self.tokens_per_sample
            out["flops_per_token"] = {k: v / self.tokens_per_sample for k, v in flops.items()}
        return out


def plan(
    family_name: str,
    target_params: float,
    *,
    batch_size: int | None = None,
    dtype: str = "fp32",
    optimizer: str = "adamw",
    overrides: dict[str, object] | None = None,
) -> Plan:
    """Size the model, count its FLOPs and predict its memory and checkpoint, on the meta device."""
    fam = family(family_name)
    torch_dtype = parse_dtype(dtype)
    slots = optimizer_slots(optimizer)
    if not target_params > 0:
        raise UserError(f"target parameter count must be positive, got {target_params}")
    batch_size = fam.DEFAULT_BATCH_SIZE if batch_size is None else batch_size
    if batch_size < 1:
        raise UserError(f"batch size must be at least 1, got {batch_size}")
    overrides = overrides or {}
    unknown = sorted(set(overrides) - {f.name for f in fields(fam.Config)})
    if unknown:
        raise UserError(f"{family_name} config has no field {', '.join(unknown)}")
    cfg = fam.config_for(target_params, **overrides)
    params = fam.param_count(cfg)
    model = fam.build(cfg, device="meta", dtype=torch_dtype)
    param_bytes = params * torch_dtype.itemsize
    memory = TrainMemory(
        weights_bytes=param_bytes,
        gradients_bytes=param_bytes,
        optimizer_state_bytes=slots * param_bytes,
        activations_bytes=activation_bytes(family_name, cfg, batch_size, torch_dtype),
    )
    tensor_bytes = storage_nbytes(model)
    optimizer_tensor_bytes = [
        size
        for p in model.parameters()
        for size in [p.numel() * p.element_size()] * slots + [4] * OPTIMIZER_STEP_TENSORS[optimizer]
    ]
    return Plan(
        family=family_name,
        target_params=target_params,
        params=params,
        config=cfg,
        batch_size=batch_size,
        dtype=dtype,
        optimizer=optimizer,
        forward_flops_per_sample=fam.forward_flops_per_sample(cfg),
        train_flops_per_sample=fam.train_flops_per_sample(cfg),
        tokens_per_sample=tokens_per_sample(family_name, cfg),
        train_memory=memory,
        checkpoint_bytes=predicted_checkpoint_bytes(tensor_bytes),
        checkpoint_bytes_with_optimizer=predicted_checkpoint_bytes(
            tensor_bytes + optimizer_tensor_bytes
        ),
    )


def plan_for(case: Case) -> Plan:
    """The case's model, FLOPs and predicted costs, computed on the meta device."""
    return plan(
        case.family,
        case.target_params,
        batch_size=case.batch_size,
        dtype=case.dtype,
        optimizer=case.optimizer,
        overrides=dict(case.overrides),
    )


def rank_memory(memory: TrainMemory, strategy: str | None, world_size: int) -> TrainMemory:
    """One rank's share of the training memory: FSDP divides the state by the world, DDP does not.

    Activations stay whole: each rank runs the case's batch. FSDP's gathered units come on top.
    """
    if strategy != "fsdp":
        return memory
    return replace(
        memory,
        weights_bytes=math.ceil(memory.weights_bytes / world_size),
        gradients_bytes=math.ceil(memory.gradients_bytes / world_size),
        optimizer_state_bytes=math.ceil(memory.optimizer_state_bytes / world_size),
    )
