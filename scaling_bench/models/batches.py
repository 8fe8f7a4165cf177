"""Random batches: what every family trains on when timed."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from scaling_bench.models.protocol import ImageConfig, TokenConfig


def classification_batch(
    shape: tuple[int, ...],
    n_classes: int,
    batch_size: int,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian inputs of ``shape`` per sample and uniform int64 labels."""
    x = torch.randn(batch_size, *shape, device=device, dtype=dtype)
    y = torch.randint(0, n_classes, (batch_size,), device=device)
    return x, y


def image_shape(cfg: ImageConfig) -> tuple[int, ...]:
    """RGB images of the config's ``image_size``."""
    return (3, cfg.image_size, cfg.image_size)


def image_batch(
    cfg: ImageConfig,
    batch_size: int,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """RGB images of the config's ``image_size`` and labels below its ``n_classes``."""
    return classification_batch(image_shape(cfg), cfg.n_classes, batch_size, device, dtype)


def token_batch(
    cfg: TokenConfig,
    batch_size: int,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random token ids below ``vocab_size`` and their next tokens, ``seq_len`` of each;
    ``dtype`` is unused (ids are int64)."""
    tokens = torch.randint(0, cfg.vocab_size, (batch_size, cfg.seq_len + 1), device=device)
    return tokens[:, :-1], tokens[:, 1:]
