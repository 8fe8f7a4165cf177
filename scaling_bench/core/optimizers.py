"""The optimizers a case can train with, what state each keeps per parameter, and how it runs.

An optimizer's step costs different memory by implementation: the for-loop one updates a
tensor at a time (AdamW holds two temporaries the size of the tensor it is on), the foreach one
updates all of a device's tensors in one go (temporaries the size of all of them), the fused one
in one kernel (none). PyTorch picks foreach on CUDA and the for-loop elsewhere when asked nothing;
``make_optimizer`` asks explicitly, so the memory prediction and the run agree on which it is.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from scaling_bench.core.errors import UserError

if TYPE_CHECKING:  # torch is imported where a step is made: the axes name optimizers without it
    import torch
    from torch import nn

DEFAULT_OPTIMIZER = "adamw"
#: Optimizer state tensors per parameter tensor, each the size of the parameter.
OPTIMIZER_STATE_SLOTS = {"sgd": 0, "sgd-momentum": 1, "adam": 2, "adamw": 2}
#: Adam keeps a scalar fp32 ``step`` tensor per parameter: in the checkpoint, not the memory.
OPTIMIZER_STEP_TENSORS = {"sgd": 0, "sgd-momentum": 0, "adam": 1, "adamw": 1}
OPTIMIZERS = tuple(OPTIMIZER_STATE_SLOTS)
#: How a step runs: the keyword arguments of ``torch.optim`` that choose it.
#: The keyword arguments that select each implementation in torch's optimizers.
IMPLEMENTATIONS: dict[str, dict[str, Any]] = {
    "for-loop": {"foreach": False},
    "foreach": {"foreach": True},
    "fused": {"fused": True},
}


def optimizer_slots(name: str) -> int:
    if name not in OPTIMIZER_STATE_SLOTS:
        raise UserError(f"unknown optimizer {name!r}; choose from {', '.join(OPTIMIZERS)}")
    return OPTIMIZER_STATE_SLOTS[name]


def default_implementation(device: torch.device | str) -> str:
    """PyTorch's own choice when given none: foreach on CUDA, the for-loop elsewhere."""
    import torch

    return "foreach" if torch.device(device).type == "cuda" else "for-loop"


def make_optimizer(
    name: str,
    params: Iterable[nn.Parameter],
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    implementation: str | None = None,
) -> torch.optim.Optimizer:
    """The optimizers whose state the memory prediction knows (``OPTIMIZER_STATE_SLOTS``), run
    by ``implementation`` (``IMPLEMENTATIONS``; None: the default for the parameters' device)."""
    import torch

    optimizer_slots(name)
    params = list(params)
    if implementation is None:
        implementation = default_implementation(params[0].device if params else "cpu")
    if implementation not in IMPLEMENTATIONS:
        raise UserError(
            f"unknown optimizer implementation {implementation!r}; "
            f"choose from {', '.join(IMPLEMENTATIONS)}"
        )
    how = IMPLEMENTATIONS[implementation]
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay, **how)
    if name == "sgd-momentum":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay, **how)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, **how)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, **how)
