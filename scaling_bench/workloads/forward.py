"""Inference: one forward pass without autograd, the cost of serving the model."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def forward_step(model: nn.Module, inputs: torch.Tensor) -> Callable[[], object]:
    """A step that runs the model in eval mode under ``inference_mode`` (no activations kept)."""
    model.eval()

    def step() -> object:
        with torch.inference_mode():
            return model(inputs)

    return step
