"""The steps that are timed: inference (one forward pass) and training (forward, loss, backward
and an optimizer step), each as a training or serving loop runs it."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from scaling_bench.models.loss import loss_of


def forward_step(model: nn.Module, inputs: torch.Tensor, grad_mode: bool = False) -> Callable:
    """A step in eval mode without autograd: ``inference_mode``, or ``no_grad`` where a wrapper
    must write its buffers outside it later (FSDP2 reuses its gather buffers in training)."""
    model.eval()
    context = torch.no_grad if grad_mode else torch.inference_mode

    def step() -> object:
        with context():
            return model(inputs)

    return step


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
