"""One hidden layer, as wide as the size asks: ``d_in -> d_hidden -> n_classes``.

The family recipe of docs/architecture.md: this file is ``scaling_bench/models/wide.py``, and
``"wide"`` joins ``FAMILY_NAMES`` in ``models/__init__.py``. ``tests/test_doc_recipes.py`` makes
both edits in a copy of the package and runs the CPU quick grid of the family.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from scaling_bench.core.errors import ConfigError
from scaling_bench.models.batches import classification_batch
from scaling_bench.models.sizing import fit_width

DEFAULT_BATCH_SIZE = 512
INPUT = "vector"  # a flat vector: the convergence datasets shape their inputs by input_shape


@dataclass(frozen=True)
class Config:
    d_hidden: int = 256
    d_in: int = 784
    n_classes: int = 10

    def __post_init__(self) -> None:
        for name in ("d_hidden", "d_in", "n_classes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)} must be at least 1")


def param_count(cfg: Config) -> int:
    return cfg.d_in * cfg.d_hidden + cfg.d_hidden + cfg.d_hidden * cfg.n_classes + cfg.n_classes


def forward_flops_per_sample(cfg: Config) -> int:
    return 2 * cfg.d_hidden * (cfg.d_in + cfg.n_classes)


def train_flops_per_sample(cfg: Config) -> int:
    """Forward, both weight gradients, and the input gradient of the second layer only."""
    return 3 * forward_flops_per_sample(cfg) - 2 * cfg.d_in * cfg.d_hidden


def build(
    cfg: Config, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> nn.Module:
    with torch.device(device):
        model = nn.Sequential(
            nn.Linear(cfg.d_in, cfg.d_hidden), nn.ReLU(), nn.Linear(cfg.d_hidden, cfg.n_classes)
        )
    return model.to(dtype=dtype)


def input_shape(cfg: Config) -> tuple[int, ...]:
    return (cfg.d_in,)


def sample_batch(
    cfg: Config,
    batch_size: int,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    return classification_batch(input_shape(cfg), cfg.n_classes, batch_size, device, dtype)


def config_for(target_params: float, **overrides: object) -> Config:
    base = replace(Config(), **overrides)
    if "d_hidden" in overrides:
        return base
    width = fit_width(lambda w: param_count(replace(base, d_hidden=w)), target_params)
    return replace(base, d_hidden=width)
