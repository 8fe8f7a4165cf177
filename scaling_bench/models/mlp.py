"""Multi-layer perceptron: ``n_layer`` hidden layers of width ``d_hidden`` with ReLU.

Sizing rule: depth stays at ``n_layer`` (4 unless overridden) and the width grows. A width step
changes the count by about ``2(n_layer-1)·d_hidden``, so the nearest width is within 1% of any
target from 1e5 up; below that the step is coarser (about 3% at 1e4 for the default input of 784).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from itertools import pairwise

import torch
from torch import nn

from scaling_bench.core.errors import ConfigError
from scaling_bench.models.batches import classification_batch
from scaling_bench.models.sizing import fit_width

#: Large enough that the GEMMs, not the optimizer step, set the pace: on a 2-core CPU a
#: 1e7-parameter step reaches 41% of the GEMM peak at batch 128 and 70% at 512.
DEFAULT_BATCH_SIZE = 512
INPUT = "vector"  # the kind of input it takes: which datasets can feed it
#: The config field that repeats identical blocks: activations grow linearly in it.
DEPTH_FIELD = "n_layer"


@dataclass(frozen=True)
class MLPConfig:
    d_hidden: int = 256
    n_layer: int = 4
    d_in: int = 784
    n_classes: int = 10

    def __post_init__(self) -> None:
        for name in ("d_hidden", "n_layer", "d_in", "n_classes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)} must be at least 1")


Config = MLPConfig


def _layer_shapes(cfg: MLPConfig) -> list[tuple[int, int]]:
    dims = [cfg.d_in] + [cfg.d_hidden] * cfg.n_layer + [cfg.n_classes]
    return list(pairwise(dims))


def param_count(cfg: MLPConfig) -> int:
    return sum(d_in * d_out + d_out for d_in, d_out in _layer_shapes(cfg))


def forward_flops_per_sample(cfg: MLPConfig) -> int:
    """2·in·out per linear layer (bias adds are not matmul FLOPs and are not counted)."""
    return sum(2 * d_in * d_out for d_in, d_out in _layer_shapes(cfg))


def train_flops_per_sample(cfg: MLPConfig) -> int:
    """Forward, then weight gradients for every layer and input gradients for all but the first."""
    first_in, first_out = _layer_shapes(cfg)[0]
    return 3 * forward_flops_per_sample(cfg) - 2 * first_in * first_out


def build(
    cfg: MLPConfig, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> nn.Module:
    layers: list[nn.Module] = []
    with torch.device(device):
        for i, (d_in, d_out) in enumerate(_layer_shapes(cfg)):
            if i:
                layers.append(nn.ReLU())
            layers.append(nn.Linear(d_in, d_out))
    return nn.Sequential(*layers).to(dtype=dtype)


def input_shape(cfg: MLPConfig) -> tuple[int, ...]:
    return (cfg.d_in,)


def sample_batch(
    cfg: MLPConfig,
    batch_size: int,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    return classification_batch((cfg.d_in,), cfg.n_classes, batch_size, device, dtype)


def config_for(target_params: float, **overrides: object) -> MLPConfig:
    base = replace(MLPConfig(), **overrides)
    if "d_hidden" in overrides:
        return base
    width = fit_width(lambda w: param_count(replace(base, d_hidden=w)), target_params)
    return replace(base, d_hidden=width)
