"""The loss every family trains with: cross-entropy over every output position."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def loss_of(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Classes for images, next tokens for gpt; the logits in fp32, as training loops do."""
    inputs, targets = batch
    out = model(inputs)
    return F.cross_entropy(out.reshape(-1, out.shape[-1]).float(), targets.reshape(-1))
