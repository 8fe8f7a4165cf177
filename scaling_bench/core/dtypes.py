"""The dtypes a case can run in, by the names users type."""

from __future__ import annotations

import torch

from scaling_bench.core.errors import UserError

DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}


def parse_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise UserError(f"unknown dtype {name!r}; choose from {', '.join(DTYPES)}")
    return DTYPES[name]
