"""The ``int8-weight`` precision's hooks: Linear weights stored in int8, for inference only.

With torchao installed (the ``quant`` extra: ``pip install torchao``), torchao's weight-only
int8 (``Int8WeightOnlyConfig``: per-channel int8 weights, dequantized into the matmul,
activations stay in the model's dtype), on a CPU or a GPU. Without it, on a CPU, PyTorch's
dynamic quantization of the Linear layers (int8 weights, activations quantized on the fly per
batch: the closest the core library comes), which needs one of its quantized engines.

A Linear whose weight is tied to another module (a gpt's head, shared with the token
embedding) is left in its dtype: quantizing it would untie a second copy of the weight, and the
checkpoint would grow. Quantized weights have no gradients, so training workloads skip it.
"""

from __future__ import annotations

import importlib.util
import warnings
from collections import Counter
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported when a hook runs: the precisions are known without torch
    import torch
    from torch import nn


def backend(device: torch.device | str) -> str | None:
    """What quantizes the weights on ``device``: ``torchao``, ``torch.ao dynamic``, or None."""
    import torch

    if importlib.util.find_spec("torchao") is not None:
        return "torchao"
    if torch.device(device).type == "cpu" and _quantized_engine() is not None:
        return "torch.ao dynamic"
    return None


def _quantized_engine() -> str | None:
    import torch

    engines = [e for e in torch.backends.quantized.supported_engines if e != "none"]
    return engines[0] if engines else None


def skip_reason(device: torch.device | str) -> str | None:
    import torch

    if backend(device) is not None:
        return None
    if torch.device(device).type == "cpu":
        return "needs torchao (pip install torchao) or a PyTorch built with a quantized engine"
    return "needs torchao on this device (pip install torchao)"


def untied_linears(model: nn.Module) -> list[str]:
    """Names of the Linear layers whose weight no other module shares."""
    from torch import nn

    owners = Counter(id(p) for m in model.modules() for p in m.parameters(recurse=False))
    return [
        name
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear) and owners[id(m.weight)] == 1
    ]


def convert(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` with its untied Linear weights in int8 (torchao in place; else a quantized
    copy of the modules, as ``quantize_dynamic`` returns)."""
    import torch

    model.eval()
    names = set(untied_linears(model))
    if backend(device) == "torchao":
        from torchao.quantization import Int8WeightOnlyConfig, quantize_

        quantize_(model, Int8WeightOnlyConfig(), filter_fn=lambda m, fqn: fqn in names)
        return model
    engine = _quantized_engine()
    assert engine is not None, "backend() found no quantized engine"
    torch.backends.quantized.engine = engine
    qconfig = torch.ao.quantization.default_dynamic_qconfig
    with warnings.catch_warnings():  # the fallback is deprecated in favour of torchao: known
        warnings.simplefilter("ignore", (DeprecationWarning, UserWarning))
        quantized: nn.Module = torch.ao.quantization.quantize_dynamic(  # type: ignore[no-untyped-call]  # torch leaves it unannotated
            model, dict.fromkeys(names, qconfig)
        )
    return quantized
