"""The loss every family trains with: cross-entropy over every output position, plus whatever
auxiliary loss the model reports for its last forward (a router's load-balancing loss)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def loss_of(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Classes for images, next tokens for the decoders; the logits in fp32, as training loops
    do. A model with an ``aux_loss`` (seen through DDP's ``module``) has it added."""
    inputs, targets = batch
    out = model(inputs)
    loss = F.cross_entropy(out.reshape(-1, out.shape[-1]).float(), targets.reshape(-1))
    aux = getattr(getattr(model, "module", model), "aux_loss", None)
    return loss if aux is None else loss + aux
