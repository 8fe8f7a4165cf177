"""The classic small conv net for 32×32 RGB images (PyTorch's CIFAR-10 tutorial), width-scaled.

conv 5×5 (3→c1) → ReLU → maxpool 2 → conv 5×5 (c1→c2) → ReLU → maxpool 2 → flatten (c2·5·5)
→ fc (→f1) → ReLU → fc (→f2) → ReLU → fc (→n_classes), with (c1, c2, f1, f2) =
max(1, round(b·width_mult)) for b = (6, 16, 120, 84). width_mult 1 is the tutorial's net, 62,006
parameters; the count grows as about 58,000·width_mult², mostly fc1 (25·c2·f1).

Sizing rule: only width_mult moves. A channel count changes where b·width_mult crosses a
half-integer, i.e. at multiples of 1/3360 (3360 = lcm of 2b); the rungs are the odd multiples of
1/6720, halfway between, so every distinct net on the width path is a rung and none sits on a
rounding tie (rounded to 6 decimals for readable configs, far from any tie). The steps cannot be
finer: a step of c2 alone adds 25·(c1 + f1) + 1 parameters, 4.1% just above 1e5, so the worst
error from 1e5 up is 1.99%, for a target midway across that step; it falls as 1/width_mult
(under 0.2% from 1e7). Below 1e5 the steps are coarser: 0.9% at 1e4 itself, up to 6% between
1e4 and 1e5.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import nn

from scaling_bench.core.errors import ConfigError
from scaling_bench.models.batches import classification_batch
from scaling_bench.models.sizing import fit_width

DEFAULT_BATCH_SIZE = 128
INPUT = "image"  # the kind of input it takes: which datasets can feed it
BASE_WIDTHS = (6, 16, 120, 84)  # c1, c2, f1, f2 at width_mult 1
_OUT_POSITIONS = (28 * 28, 10 * 10, 1, 1, 1)  # output pixels of each layer, for 32×32 inputs


@dataclass(frozen=True)
class CNNConfig:
    width_mult: float = 1.0
    n_classes: int = 10

    def __post_init__(self) -> None:
        if not (math.isfinite(self.width_mult) and self.width_mult > 0):
            raise ConfigError(f"width_mult={self.width_mult} must be a positive number")
        if self.n_classes < 1:
            raise ConfigError(f"n_classes={self.n_classes} must be at least 1")


Config = CNNConfig


def channels(cfg: CNNConfig) -> tuple[int, int, int, int]:
    """(c1, c2, f1, f2): conv channels and hidden fc widths."""
    c1, c2, f1, f2 = (max(1, round(b * cfg.width_mult)) for b in BASE_WIDTHS)
    return c1, c2, f1, f2


def _layer_shapes(cfg: CNNConfig) -> list[tuple[int, int]]:
    """(fan_in, out_features) per layer; a 5×5 conv's fan-in is in_channels·25."""
    c1, c2, f1, f2 = channels(cfg)
    return [(3 * 25, c1), (c1 * 25, c2), (c2 * 25, f1), (f1, f2), (f2, cfg.n_classes)]


def param_count(cfg: CNNConfig) -> int:
    return sum(fan_in * out + out for fan_in, out in _layer_shapes(cfg))


def _layer_flops(cfg: CNNConfig) -> list[int]:
    return [
        2 * fan_in * out * positions
        for (fan_in, out), positions in zip(_layer_shapes(cfg), _OUT_POSITIONS, strict=True)
    ]


def forward_flops_per_sample(cfg: CNNConfig) -> int:
    """2·fan_in·out per output pixel of each conv and per fc layer (bias, ReLU, pooling free)."""
    return sum(_layer_flops(cfg))


def train_flops_per_sample(cfg: CNNConfig) -> int:
    """Forward, then weight gradients everywhere and input gradients for all but the first conv."""
    return 3 * forward_flops_per_sample(cfg) - _layer_flops(cfg)[0]


def build(
    cfg: CNNConfig, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> nn.Module:
    c1, c2, f1, f2 = channels(cfg)
    with torch.device(device):
        model = nn.Sequential(
            nn.Conv2d(3, c1, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(c2 * 25, f1),
            nn.ReLU(),
            nn.Linear(f1, f2),
            nn.ReLU(),
            nn.Linear(f2, cfg.n_classes),
        )
    return model.to(dtype=dtype)


def input_shape(cfg: CNNConfig) -> tuple[int, ...]:
    return (3, 32, 32)


def sample_batch(
    cfg: CNNConfig,
    batch_size: int,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    return classification_batch((3, 32, 32), cfg.n_classes, batch_size, device, dtype)


def _rung(k: int) -> float:
    return round((2 * k + 1) / 6720, 6)


def config_for(target_params: float, **overrides: object) -> CNNConfig:
    base = replace(CNNConfig(), **overrides)
    if "width_mult" in overrides:
        return base
    k = fit_width(lambda k: param_count(replace(base, width_mult=_rung(k))), target_params, lo=0)
    return replace(base, width_mult=_rung(k))
