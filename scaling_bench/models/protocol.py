"""What a model family provides, as a type: ``models.family(name)`` returns a ``Family``, and
``models/__init__.py`` holds every family module to it, so mypy checks both sides.

A family's functions take its own ``Config`` (a frozen dataclass); the protocol says ``Any`` there,
since what one family's config is, another's is not. The config shapes that the shared helpers
read (``batches``, ``datasets``, ``attention``) are protocols of their own, read-only as frozen
fields are. What only some families have (``tokens_per_sample``, the decode capability,
``DEPTH_FIELD``, ``CHECKPOINT_BLOCKS``, ``METRIC_SPECS``) is looked up by name where it is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import torch
    from torch import nn

    from scaling_bench.models.attention import KVCache


class Family(Protocol):
    __name__: str
    Config: type[Any]
    DEFAULT_BATCH_SIZE: int
    #: The kind of input it takes (``vector``, ``image``, ``tokens``): which datasets can feed it.
    INPUT: str

    def param_count(self, cfg: Any) -> int: ...

    def forward_flops_per_sample(self, cfg: Any) -> int: ...

    def train_flops_per_sample(self, cfg: Any) -> int: ...

    def build(
        self, cfg: Any, device: torch.device | str = ..., dtype: torch.dtype = ...
    ) -> nn.Module: ...

    def sample_batch(
        self,
        cfg: Any,
        batch_size: int,
        device: torch.device | str = ...,
        dtype: torch.dtype = ...,
    ) -> tuple[torch.Tensor, torch.Tensor]: ...

    def config_for(self, target_params: float, **overrides: Any) -> Any: ...


class Decoder(Family, Protocol):
    """A family that serves with a KV cache: the decode capability (``models/attention.py``)."""

    def kv_cache(
        self,
        cfg: Any,
        batch_size: int,
        capacity: int,
        device: torch.device | str = ...,
        dtype: torch.dtype = ...,
    ) -> KVCache: ...

    def kv_cache_bytes(self, cfg: Any, batch_size: int, positions: int, itemsize: int) -> int: ...

    def context_length(self, cfg: Any) -> int: ...

    def prefill(self, model: nn.Module, prompt: torch.Tensor, cache: KVCache) -> torch.Tensor: ...

    def decode_step(
        self, model: nn.Module, token: torch.Tensor, cache: KVCache
    ) -> torch.Tensor: ...


class ImageConfig(Protocol):
    @property
    def image_size(self) -> int: ...

    @property
    def n_classes(self) -> int: ...


class TokenConfig(Protocol):
    @property
    def vocab_size(self) -> int: ...

    @property
    def seq_len(self) -> int: ...


class DecoderConfig(TokenConfig, Protocol):
    """What a KV cache is sized by."""

    @property
    def n_layer(self) -> int: ...

    @property
    def n_kv_head(self) -> int: ...

    @property
    def head_dim(self) -> int: ...
