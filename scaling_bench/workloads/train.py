"""Training: forward, cross-entropy, backward and an optimizer step, as a training loop runs it."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from scaling_bench.core.errors import UserError

#: Optimizer state tensors per parameter tensor, each the size of the parameter.
OPTIMIZER_STATE_SLOTS = {"sgd": 0, "sgd-momentum": 1, "adam": 2, "adamw": 2}
#: Adam keeps a scalar fp32 ``step`` tensor per parameter: in the checkpoint, not the memory.
OPTIMIZER_STEP_TENSORS = {"sgd": 0, "sgd-momentum": 0, "adam": 1, "adamw": 1}


def optimizer_slots(name: str) -> int:
    if name not in OPTIMIZER_STATE_SLOTS:
        choices = ", ".join(OPTIMIZER_STATE_SLOTS)
        raise UserError(f"unknown optimizer {name!r}; choose from {choices}")
    return OPTIMIZER_STATE_SLOTS[name]


def make_optimizer(
    name: str, params: Iterable[nn.Parameter], lr: float = 1e-3, weight_decay: float = 0.0
) -> torch.optim.Optimizer:
    """The optimizers whose state the memory prediction knows (``OPTIMIZER_STATE_SLOTS``)."""
    optimizer_slots(name)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd-momentum":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def loss_of(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Cross-entropy over every output position: classes for images, next tokens for gpt."""
    inputs, targets = batch
    out = model(inputs)
    return F.cross_entropy(out.reshape(-1, out.shape[-1]).float(), targets.reshape(-1))


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: tuple[torch.Tensor, torch.Tensor],
) -> Callable[[], torch.Tensor]:
    """A step that frees gradients with ``set_to_none`` first, so each step allocates them anew."""
    model.train()

    def step() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_of(model, batch)
        loss.backward()
        optimizer.step()
        return loss

    return step
