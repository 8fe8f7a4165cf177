"""What every rank of a distributed case runs: the same engine as one process, on a wrapped model.

Weak scaling: every rank trains on the case's batch, so the global batch is world size × batch
size, and every rank's batch is the same synthetic one (values do not change the cost). DDP keeps
a replica per rank and all-reduces gradients in buckets that the gradients are views of. FSDP
(FSDP2's ``fully_shard``) shards parameters, gradients and optimizer state over all ranks; the
model is built on the meta device so that no rank ever holds all of it.

Each rank measures with the project's meters, as one process does. Timing stops by joint decision
only (``agree``): a rank that stopped stepping would leave its peers waiting in a collective
forever. The ranks then exchange their metrics and every rank combines them the same way
(``aggregate.combine``), so every rank returns the same record fields.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from scaling_bench.config.case import Case
from scaling_bench.core.optimizers import make_optimizer
from scaling_bench.engine.distributed.aggregate import combine
from scaling_bench.engine.distributed.wrap import wrap
from scaling_bench.engine.execute import case_peak_flops, execute, warm_up_runtime
from scaling_bench.engine.protocol import Settings
from scaling_bench.meters.memory import baseline_rss
from scaling_bench.models import family
from scaling_bench.workloads.base import Context
from scaling_bench.workloads.setup import CaseSetup


def rank_device(case_device: str) -> str:
    """``cuda:LOCAL_RANK`` for a CUDA case (a GPU per rank, the case's index ignored), else cpu."""
    if case_device.startswith("cuda"):
        return f"cuda:{os.environ['LOCAL_RANK']}"
    return "cpu"


def agree(values: list[float], op: str) -> list[float]:
    """``values`` reduced (``"min"`` or ``"max"``) over all ranks: how ranks decide together."""
    on = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    tensor = torch.tensor(values, dtype=torch.float64, device=on)
    dist.all_reduce(tensor, op={"min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}[op])
    return tensor.tolist()


def gather(metrics: dict[str, dict]) -> dict[str, dict]:
    per_rank: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(per_rank, metrics)
    return combine(per_rank)


def _warm_up(device: torch.device, strategy: str) -> None:
    """``warm_up_runtime`` for a wrapped model: the first collectives and the wrapper's one-time
    costs are paid before the RSS baseline, as the runtime's are."""
    warm_up_runtime(device)
    model = wrap(nn.Sequential(nn.Linear(8, 8, device=device)), strategy, device)
    optimizer = make_optimizer("adamw", model.parameters())
    model(torch.ones(2, 8, device=device)).sum().backward()
    optimizer.step()


def set_up(case: Case, device: torch.device) -> CaseSetup:
    """The case's model, wrapped, with its batch and a fresh optimizer on this rank.

    FSDP builds the model on the meta device, shards it there and allocates only this rank's
    shards, so a model too big for one device never exists whole on one. Its values then come
    from each layer's ``reset_parameters`` (N(0, 0.02) where a layer has none): not one process's
    initial values, but the same costs.
    """
    if case.strategy != "fsdp":
        built = CaseSetup.build(case)
        model = wrap(built.model, case.strategy, device)
    else:
        built = CaseSetup.build(replace(case, device="meta"))
        p = built.plan
        # drawn before the shards are initialised: their random draws may differ between ranks
        batch = family(case.family).sample_batch(
            p.config, p.batch_size, device=device, dtype=built.precision.param_dtype
        )
        built = replace(built, case=case, device=device, batch=batch)
        model = wrap(built.model, case.strategy, device)
        model.to_empty(device=device)
        with torch.no_grad():
            for param in model.parameters():
                param.normal_(std=0.02)
            for module in model.modules():
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()
    optimizer = make_optimizer(case.optimizer, model.parameters())
    return replace(built, model=model, step_model=model, optimizer=optimizer)


def measure_rank(case_dict: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Every rank's execute function: the case's record fields, the same on every rank."""
    case = Case.from_dict(case_dict)
    device = torch.device(rank_device(case.device))
    case = replace(case, device=str(device))
    _warm_up(device, case.strategy)
    baseline = baseline_rss()
    setup = set_up(case, device)
    peak, source = case_peak_flops(setup, settings.peak_flops)
    ctx = Context(
        peak_flops=peak,
        baseline_rss_bytes=baseline,
        agree=agree,
        world_size=case.world_size,
        devices=case.world_size if device.type == "cuda" else case.nnodes,
        strategy=case.strategy,
    )
    return execute(case, setup, ctx, source, gather=gather)
