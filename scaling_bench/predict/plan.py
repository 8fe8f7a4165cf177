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
from dataclasses import asdict, dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any, TypeVar

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

if TYPE_CHECKING:
    from scaling_bench.config.case import Case

from scaling_bench.config.recipe import Recipe
from scaling_bench.core import precision as precisions
from scaling_bench.core.errors import UserError
from scaling_bench.core.optimizers import OPTIMIZER_STEP_TENSORS, optimizer_slots
from scaling_bench.models import family, tokens_per_sample
from scaling_bench.models.checkpointing import apply as apply_checkpointing
from scaling_bench.models.loss import loss_of
from scaling_bench.predict.checkpoint import predicted_checkpoint_bytes, storage_nbytes
from scaling_bench.predict.figures_cache import ModelFigures, cached_figures
from scaling_bench.predict.memory import StepPeak


@dataclass(frozen=True)
class TrainMemory:
    """What is live at the training step's peak (``predict.memory``), part by part: the parts
    sum to the peak. ``activations_bytes``: what autograd saved and its gradient buffers (the
    loss's included) at a forward or backward peak; ``temporaries_bytes``: the optimizer's at an
    optimizer-step peak. ``phases``: each phase's peak, to show where the step peaks."""

    weights_bytes: int
    gradients_bytes: int
    optimizer_state_bytes: int
    activations_bytes: int
    #: Autocast's low-precision copies of the weights, kept from the forward for the backward.
    weight_copies_bytes: int = 0
    buffers_bytes: int = 0
    batch_bytes: int = 0
    temporaries_bytes: int = 0
    #: Scratch a CPU kernel holds during the call the peak falls in (``predict.cpu_kernels``).
    kernel_scratch_bytes: int = 0
    peak_phase: str = ""
    phases: dict[str, int] = field(default_factory=dict)
    #: The ops whose kernel scratch the probe could not measure, counted as none.
    kernel_scratch_unmeasured: tuple[str, ...] = ()

    @property
    def total_bytes(self) -> int:
        return (
            self.weights_bytes
            + self.gradients_bytes
            + self.optimizer_state_bytes
            + self.activations_bytes
            + self.weight_copies_bytes
            + self.buffers_bytes
            + self.batch_bytes
            + self.temporaries_bytes
            + self.kernel_scratch_bytes
        )

    @classmethod
    def at_peak(cls, peak: StepPeak) -> TrainMemory:
        parts = peak.phases[peak.peak_phase]
        transient = parts["transient"]
        stepping = peak.peak_phase == "optimizer"
        return cls(
            weights_bytes=parts["weights"],
            gradients_bytes=parts["gradients"],
            optimizer_state_bytes=parts["optimizer_state"],
            activations_bytes=0 if stepping else transient,
            weight_copies_bytes=parts["weight_copies"],
            buffers_bytes=parts["buffers"],
            batch_bytes=parts["batch"],
            temporaries_bytes=transient if stepping else 0,
            kernel_scratch_bytes=parts["kernel_scratch"],
            peak_phase=peak.peak_phase,
            phases={phase: p["total"] for phase, p in peak.phases.items()},
            kernel_scratch_unmeasured=peak.unmeasured,
        )

    def to_dict(self) -> dict[str, int]:
        return asdict(self) | {"total_bytes": self.total_bytes}


_Memory = TypeVar("_Memory", "TrainMemory", "TrainState")


@dataclass(frozen=True)
class TrainState:
    """The training state at its full size, as it is held between steps: every parameter, its
    gradient and its optimizer slots in the parameter dtype (16 B/param for fp32 AdamW). What a
    rank is counted holding after a step, where ``TrainMemory`` is what is live at the peak."""

    weights_bytes: int
    gradients_bytes: int
    optimizer_state_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.gradients_bytes + self.optimizer_state_bytes

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


def saved_activation_bytes(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> int:
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


def _train_step_flops(model: torch.nn.Module, batch: tuple) -> int:
    """FLOPs of one forward and backward pass, as ``FlopCounterMode`` counts them."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counted:
        loss_of(model, batch).backward()
    return counted.get_total_flops()


def recomputed_flops_per_sample(
    family_name: str, cfg: Any, batch_size: int, dtype: torch.dtype, checkpointing: str
) -> int:
    """FLOPs per sample that activation checkpointing adds to a training step: the blocks'
    forward passes run again in backward, as far as backward needs them (non-reentrant
    checkpoint stops recomputing a block after the last tensor its backward uses, so a block's
    final matmul is not run twice). Counted on the meta device as the difference between a
    checkpointed and a plain training step; at depth 1 and 2 and linear in depth beyond, since
    blocks past the first of each stage are identical (a ResNet with unequal stages is whole)."""
    if checkpointing == "none":
        return 0
    fam = family(family_name)

    def extra(c: Any) -> int:
        batch = fam.sample_batch(c, batch_size, "meta", dtype)
        plain = _train_step_flops(fam.build(c, device="meta", dtype=dtype), batch)
        model = apply_checkpointing(fam.build(c, device="meta", dtype=dtype), family_name)
        return _train_step_flops(model, batch) - plain

    field: str | None = getattr(fam, "DEPTH_FIELD", None)
    depth = getattr(cfg, field) if field else None
    if isinstance(depth, tuple):
        depth = depth[0] if len(set(depth)) == 1 else None
    if field is None or depth is None or depth <= 2:
        return extra(cfg) // batch_size
    stages = getattr(cfg, field)

    def at(n: int) -> Any:
        return replace(cfg, **{field: tuple([n] * len(stages)) if isinstance(stages, tuple) else n})

    one, two = extra(at(1)), extra(at(2))
    return (one + (depth - 1) * (two - one)) // batch_size


@dataclass(frozen=True)
class Plan:
    """Everything known about a case before it runs."""

    family: str
    target_params: float
    params: int
    config: Any
    batch_size: int
    precision: str
    optimizer: str
    forward_flops_per_sample: int
    train_flops_per_sample: int
    tokens_per_sample: int | None
    train_memory: TrainMemory
    train_state: TrainState
    checkpoint_bytes: int
    checkpoint_bytes_with_optimizer: int
    activation_checkpointing: str = "none"
    #: The training step's FLOPs with the checkpointed blocks' recomputed forward (HFU's count).
    hardware_train_flops_per_sample: int = 0
    #: How the optimizer steps (``core.optimizers.IMPLEMENTATIONS``): its temporaries differ.
    optimizer_implementation: str = "for-loop"
    #: Parameters one token touches, for families that route (``active_param_count``).
    active_params: int | None = None

    def to_dict(self) -> dict:
        """The ``plan --json`` object: a contract users script against (DESIGN §3)."""
        flops = {"forward": self.forward_flops_per_sample, "train": self.train_flops_per_sample}
        if self.activation_checkpointing != "none":
            flops["train_with_recomputation"] = self.hardware_train_flops_per_sample
        out = {
            "family": self.family,
            "target_params": self.target_params,
            "params": self.params,
            "relative_error": self.params / self.target_params - 1,
            "config": asdict(self.config),
            "batch_size": self.batch_size,
            "precision": self.precision,
            "dtype": precisions.DTYPE_NAMES[precisions.get(self.precision).param],
            "activation_checkpointing": self.activation_checkpointing,
            "optimizer": self.optimizer,
            "optimizer_implementation": self.optimizer_implementation,
            "flops_per_sample": flops,
            "predicted": {
                "train_memory_bytes": self.train_memory.to_dict(),
                "train_state_bytes": self.train_state.to_dict(),
                "checkpoint_bytes": self.checkpoint_bytes,
                "checkpoint_bytes_with_optimizer": self.checkpoint_bytes_with_optimizer,
            },
        }
        if self.active_params is not None:
            out["active_params"] = self.active_params
        if self.tokens_per_sample:
            out["tokens_per_sample"] = self.tokens_per_sample
            out["flops_per_token"] = {k: v / self.tokens_per_sample for k, v in flops.items()}
        return out


def plan(
    family_name: str,
    target_params: float,
    *,
    batch_size: int | None = None,
    precision: str = "fp32",
    optimizer: str = "adamw",
    overrides: dict[str, object] | None = None,
    activation_checkpointing: str = "none",
    optimizer_implementation: str | None = None,
    device: str = "cpu",
) -> Plan:
    """``plan_of`` by the words of ``scaling-bench plan``: a recipe from its flags' values
    (``optimizer_implementation`` None: the device's default)."""
    recipe = Recipe(
        device,
        precisions.get(precision),
        optimizer,
        optimizer_implementation or "",
        activation_checkpointing=activation_checkpointing,
        batch_size=batch_size,
    )
    return plan_of(family_name, target_params, recipe, overrides)


def plan_of(
    family_name: str,
    target_params: float,
    recipe: Recipe,
    overrides: dict[str, object] | None = None,
) -> Plan:
    """Size the model, count its FLOPs and predict its memory and checkpoint, on the meta device.

    The precision sets the bytes of weights, gradients and optimizer state (its parameter dtype)
    and of activations (its activation dtype: an autocast step keeps them in bf16 or fp16, traced
    here on a model of that dtype, since autocast does not act on the meta device), plus autocast's
    low-precision weight copies.

    The training memory is the step's peak over its phases, replayed on fake tensors of the
    recipe's device with its optimizer implementation, under the precision's autocast and the
    recipe's activation checkpointing (``predict.memory``). A ``max`` batch is planned once
    resolved (``predict.batch.max_batch``); no batch is the family's default.
    """
    fam = family(family_name)
    prec = recipe.precision
    torch_dtype = prec.param_dtype
    optimizer = recipe.optimizer
    slots = optimizer_slots(optimizer)
    if not target_params > 0:
        raise UserError(f"target parameter count must be positive, got {target_params}")
    if recipe.batch_size == "max":
        raise ValueError(f"{family_name} {target_params:g}: a max batch is planned once resolved "
                         "(max_batch)")  # fmt: skip
    batch_size = fam.DEFAULT_BATCH_SIZE if recipe.batch_size is None else recipe.batch_size
    if batch_size < 1:
        raise UserError(f"batch size must be at least 1, got {batch_size}")
    recipe = recipe.with_batch(batch_size)
    overrides = overrides or {}
    unknown = sorted(set(overrides) - {f.name for f in fields(fam.Config)})
    if unknown:
        raise UserError(f"{family_name} config has no field {', '.join(unknown)}")
    cfg = fam.config_for(target_params, **overrides)
    params = fam.param_count(cfg)
    figures = cached_figures(
        family_name, cfg, recipe, lambda: _model_figures(family_name, cfg, recipe)
    )
    memory = TrainMemory.at_peak(StepPeak(figures.phases, figures.unmeasured))
    param_bytes = params * torch_dtype.itemsize
    return Plan(
        family=family_name,
        target_params=target_params,
        params=params,
        active_params=active(cfg) if (active := getattr(fam, "active_param_count", None)) else None,
        config=cfg,
        batch_size=batch_size,
        precision=prec.name,
        optimizer=optimizer,
        optimizer_implementation=recipe.optimizer_implementation,
        forward_flops_per_sample=fam.forward_flops_per_sample(cfg),
        train_flops_per_sample=fam.train_flops_per_sample(cfg),
        activation_checkpointing=recipe.activation_checkpointing,
        hardware_train_flops_per_sample=fam.train_flops_per_sample(cfg)
        + figures.recomputed_flops_per_sample,
        tokens_per_sample=tokens_per_sample(family_name, cfg),
        train_memory=memory,
        train_state=TrainState(param_bytes, param_bytes, slots * param_bytes),
        checkpoint_bytes=figures.checkpoint_bytes,
        checkpoint_bytes_with_optimizer=figures.checkpoint_bytes_with_optimizer,
    )


def _model_figures(family_name: str, cfg: Any, recipe: Recipe) -> ModelFigures:
    """What the plan needs the model built for (on the meta device) and its step replayed."""
    from scaling_bench.predict.memory import step_peak

    prec, optimizer = recipe.precision, recipe.optimizer
    model = family(family_name).build(cfg, device="meta", dtype=prec.param_dtype)
    tensor_bytes = storage_nbytes(model)
    optimizer_tensor_bytes = [
        size
        for p in model.parameters()
        for size in [p.numel() * p.element_size()] * optimizer_slots(optimizer)
        + [4] * OPTIMIZER_STEP_TENSORS[optimizer]
    ]
    peak = step_peak(family_name, cfg, recipe)
    return ModelFigures(
        phases=peak.phases,
        unmeasured=peak.unmeasured,
        recomputed_flops_per_sample=recomputed_flops_per_sample(
            family_name, cfg, recipe.batch, prec.activation_dtype, recipe.activation_checkpointing
        ),
        checkpoint_bytes=predicted_checkpoint_bytes(tensor_bytes),
        checkpoint_bytes_with_optimizer=predicted_checkpoint_bytes(
            tensor_bytes + optimizer_tensor_bytes
        ),
    )


def plan_for(case: Case, recipe: Recipe | None = None) -> Plan:
    """The case's model, FLOPs and predicted costs, computed on the meta device, in ``recipe``
    (the case's own where None; a ``max`` batch resolved by ``Recipe.with_batch``)."""
    recipe = recipe or Recipe.of(case)
    return plan_of(case.family, case.target_params, recipe, dict(case.overrides))


def rank_memory(memory: _Memory, strategy: str | None, world_size: int) -> _Memory:
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
