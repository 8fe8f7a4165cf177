"""The optimizers a case can train with, and what state each keeps per parameter."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from scaling_bench.core.errors import UserError

DEFAULT_OPTIMIZER = "adamw"
#: Optimizer state tensors per parameter tensor, each the size of the parameter.
OPTIMIZER_STATE_SLOTS = {"sgd": 0, "sgd-momentum": 1, "adam": 2, "adamw": 2}
#: Adam keeps a scalar fp32 ``step`` tensor per parameter: in the checkpoint, not the memory.
OPTIMIZER_STEP_TENSORS = {"sgd": 0, "sgd-momentum": 0, "adam": 1, "adamw": 1}
OPTIMIZERS = tuple(OPTIMIZER_STATE_SLOTS)


def optimizer_slots(name: str) -> int:
    if name not in OPTIMIZER_STATE_SLOTS:
        raise UserError(f"unknown optimizer {name!r}; choose from {', '.join(OPTIMIZERS)}")
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
