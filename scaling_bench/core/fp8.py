"""The ``fp8`` precision's hooks: torchao's float8 linear layers over fp32 master weights.

The linear layers' matmuls run in float8 (e4m3, dynamic per-tensor scaling) on CUDA devices of
compute capability 8.9 or more (Ada, Hopper and later); everything else runs as ``amp-bf16`` does.
torchao is an optional extra (``pip install torchao``): without it, or elsewhere, fp8 cases are
skipped with the reason.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported when a hook runs: the precisions are known without torch
    import torch
    from torch import nn

#: float8 matmuls (``torch._scaled_mm``) need 16-aligned dimensions; other layers stay bf16.
_ALIGN = 16
MIN_CAPABILITY = (8, 9)


def skip_reason(device: torch.device) -> str | None:
    import torch

    device = torch.device(device)
    if device.type != "cuda":
        return "needs a CUDA device of compute capability 8.9 or more"
    if importlib.util.find_spec("torchao") is None:
        return "needs torchao (pip install torchao)"
    capability = torch.cuda.get_device_capability(device)
    if capability < MIN_CAPABILITY:
        return (
            f"needs compute capability 8.9 or more, this device has {capability[0]}.{capability[1]}"
        )
    return None


def _aligned(module: nn.Module, fqn: str) -> bool:
    from torch import nn

    return (
        isinstance(module, nn.Linear)
        and module.in_features % _ALIGN == 0
        and module.out_features % _ALIGN == 0
    )


def convert(model: nn.Module, device: torch.device) -> nn.Module:
    """Swap the aligned ``nn.Linear`` layers for torchao's ``Float8Linear`` (in place)."""
    from torchao.float8 import convert_to_float8_training

    converted: nn.Module = convert_to_float8_training(model, module_filter_fn=_aligned)
    return converted
