"""The steps that are timed: inference (one forward pass) and training (forward, loss, backward
and an optimizer step), each as a training or serving loop runs it, in the case's precision.

Under an AMP precision only the forward pass and the loss run under autocast (as the PyTorch AMP
recipe has it): backward follows the forward's dtypes, and the optimizer updates the fp32 weights
from fp32 gradients. fp16 scales the loss so small gradients do not flush to zero.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import torch
from torch import nn

from scaling_bench.core.precision import PRECISIONS, Precision
from scaling_bench.models.loss import loss_of

FP32 = PRECISIONS["fp32"]


def forward_step(
    model: nn.Module, inputs: torch.Tensor, grad_mode: bool = False, precision: Precision = FP32
) -> Callable:
    """A step in eval mode without autograd: ``inference_mode``, or ``no_grad`` where a wrapper
    must write its buffers outside it later (FSDP2 reuses its gather buffers in training)."""
    model.eval()
    context = torch.no_grad if grad_mode else torch.inference_mode

    def step() -> object:
        with context(), precision.autocast_context(inputs.device):
            return model(inputs)

    return step


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: tuple[torch.Tensor, torch.Tensor],
    precision: Precision = FP32,
    scaler: torch.amp.GradScaler | None = None,
    phase: Callable[[str], AbstractContextManager] = lambda name: nullcontext(),
) -> Callable[[], torch.Tensor]:
    """A step that frees gradients with ``set_to_none`` first, so each step allocates them anew;
    ``phase(name)`` wraps its forward, backward and optimizer step (a meter's phase marks)."""
    model.train()
    device = batch[0].device

    def step() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        with phase("forward"), precision.autocast_context(device):
            loss = loss_of(model, batch)
        if scaler is None:
            with phase("backward"):
                loss.backward()
            with phase("optimizer"):
                optimizer.step()
        else:
            with phase("backward"):
                scaler.scale(loss).backward()
            with phase("optimizer"):
                scaler.step(optimizer)
                scaler.update()
        return loss

    return step
