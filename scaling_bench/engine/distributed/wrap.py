"""A model under a strategy: DDP replicas or FSDP2 shards, one unit per repeated block."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard


def shard_units(model: nn.Module) -> list[nn.Module]:
    """The outermost blocks of the model's repeated-layer containers (``Sequential``,
    ``ModuleList``) that hold parameters: a transformer block, a ResNet block, an MLP's layer.
    What is outside them (embeddings, heads) stays with the root unit."""
    units: list[nn.Module] = []

    def visit(module: nn.Module) -> None:
        container = isinstance(module, nn.Sequential | nn.ModuleList)
        for child in module.children():
            if container and any(True for _ in child.parameters()):
                units.append(child)
            else:
                visit(child)

    visit(model)
    return units


def wrap(model: nn.Module, strategy: str, device: torch.device) -> nn.Module:
    """The model under DDP, or sharded in place by FSDP2 (a new optimizer must follow)."""
    if strategy == "ddp":
        ids = [device] if device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(
            model, device_ids=ids, gradient_as_bucket_view=True
        )
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    for unit in shard_units(model):
        fully_shard(unit, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model
