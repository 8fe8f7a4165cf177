"""Causal self-attention and the KV cache, shared by the decoder families (gpt, llama, moe).

One fused projection makes the queries of ``n_head`` heads and the keys and values of
``n_kv_head`` heads (grouped-query attention where ``n_kv_head < n_head``; gpt's multi-head
attention is ``n_kv_head == n_head``), an optional LayerNorm over head_dim on q and k, optional
rotary positions on q and k, then ``F.scaled_dot_product_attention`` (``enable_gqa`` where the
heads are grouped, so no repeated keys are materialised outside the kernel). The decoder families
differ only in what surrounds it, so serving (``kv_cache``, ``kv_cache_bytes``,
``context_length``, ``prefill``, ``decode_step``, ``generate``) is written once here and each
decoder family exposes it as its decode capability.

Serving: a ``KVCache`` holds every layer's keys and values, ``(B, n_kv_head, capacity,
head_dim)``, preallocated for the prompt and the tokens to come, as servers keep it. The new
positions' keys and values are written into it and the queries attend over every cached one:
causal (``is_causal=True``) only where the cache was empty, a causal mask from its offset for a
chunk after cached positions, no mask for a single new token.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from scaling_bench.core.errors import ConfigError
from scaling_bench.models.protocol import DecoderConfig, TokenConfig

#: ``(cos, sin)`` of the rotary angles for the positions a call covers, ``(T, head_dim)`` each.
Rotary = tuple[torch.Tensor, torch.Tensor]


def rotary_tables(head_dim: int, positions: int, theta: float) -> Rotary:
    """RoPE's ``(cos, sin)`` for positions ``[0, positions)``, in the half-split layout (the
    first half of head_dim pairs with the second, as Hugging Face's Llama rotates)."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(positions, dtype=torch.float32), inv_freq)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    turned = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + turned * sin


class CausalSelfAttention(nn.Module):
    def __init__(
        self,
        d_model: int,
        n_head: int,
        n_kv_head: int | None = None,
        bias: bool = True,
        qk_layernorm: bool = False,
    ) -> None:
        super().__init__()
        self.n_head, self.n_kv_head = n_head, n_kv_head or n_head
        self.head_dim = d_model // n_head
        width = (self.n_head + 2 * self.n_kv_head) * self.head_dim
        self.c_attn = nn.Linear(d_model, width, bias=bias)
        self.c_proj = nn.Linear(n_head * self.head_dim, d_model, bias=bias)
        self.q_norm, self.k_norm = (
            nn.LayerNorm(self.head_dim, bias=bias) if qk_layernorm else nn.Identity()
            for _ in range(2)
        )
        #: Where q and k enter the scores, normed and rotated: a hook point for whoever reads
        #: the attention logits (the convergence workload's largest logit).
        self.scores = nn.Identity()

    def forward(
        self,
        x: torch.Tensor,
        kv: tuple[torch.Tensor, torch.Tensor] | None = None,
        start: int = 0,
        rotary: Rotary | None = None,
    ) -> torch.Tensor:
        """``kv``: this layer's cache buffers; the new positions ``[start, start + T)`` are
        written into them and the queries attend over positions ``[0, start + T)``."""
        B, T, _ = x.shape
        hd = self.head_dim
        q, k, v = self.c_attn(x).split(
            (self.n_head * hd, self.n_kv_head * hd, self.n_kv_head * hd), dim=2
        )
        q = q.view(B, T, self.n_head, hd).transpose(1, 2)
        k, v = (t.view(B, T, self.n_kv_head, hd).transpose(1, 2) for t in (k, v))
        q, k = self.q_norm(q), self.k_norm(k)
        if rotary is not None:
            q, k = _rotate(q, *rotary), _rotate(k, *rotary)
        q, k = self.scores((q, k))
        mask = None
        if kv is not None:
            end = start + T
            kv[0][:, :, start:end] = k
            kv[1][:, :, start:end] = v
            k, v = kv[0][:, :, :end], kv[1][:, :, :end]
            if start and T > 1:  # a chunk after cached positions: causal from its offset
                mask = torch.ones(T, end, dtype=torch.bool, device=x.device).tril(start)
        causal = start == 0 and T > 1
        grouped = {"enable_gqa": True} if self.n_kv_head != self.n_head else {}
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, **grouped)
        return self.c_proj(y.transpose(1, 2).reshape(B, T, self.n_head * hd))


class KVCache:
    """Keys and values of every layer for ``capacity`` positions of ``batch_size`` sequences,
    ``(B, n_kv_head, capacity, head_dim)`` each; positions ``[0, length)`` are filled. ``cfg`` is
    a decoder's config: ``n_layer``, ``n_kv_head``, ``head_dim``, ``seq_len``."""

    def __init__(
        self,
        cfg: DecoderConfig,
        batch_size: int,
        capacity: int,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if capacity > cfg.seq_len:
            raise ConfigError(f"a cache of {capacity} positions exceeds seq_len={cfg.seq_len}")
        size = (batch_size, cfg.n_kv_head, capacity, cfg.head_dim)
        self.layers = [
            (torch.zeros(size, device=device, dtype=dtype),
             torch.zeros(size, device=device, dtype=dtype))
            for _ in range(cfg.n_layer)
        ]  # fmt: skip
        self.capacity = capacity
        self.length = 0

    @property
    def nbytes(self) -> int:
        """Bytes of the cache tensors, as allocated."""
        return sum(t.numel() * t.element_size() for kv in self.layers for t in kv)


kv_cache = KVCache  # the decode capability's constructor, as the families expose it


def kv_cache_bytes(cfg: DecoderConfig, batch_size: int, positions: int, itemsize: int) -> int:
    """Keys and values of the KV heads of every layer: ``2·L·B·T·n_kv_head·head_dim·itemsize``."""
    return 2 * cfg.n_layer * batch_size * positions * cfg.n_kv_head * cfg.head_dim * itemsize


def context_length(cfg: TokenConfig) -> int:
    """The most positions a sequence can have (gpt's position table, llama's rotary tables)."""
    return cfg.seq_len


def prefill(model: nn.Module, prompt: torch.Tensor, cache: KVCache) -> torch.Tensor:
    """The prompt ``(B, P)`` into an empty cache; the greedy next token ``(B, 1)``."""
    return model(prompt, cache)[:, -1:].argmax(-1)


def decode_step(model: nn.Module, token: torch.Tensor, cache: KVCache) -> torch.Tensor:
    """One token ``(B, 1)`` at the cache's next position; the greedy token after it."""
    return model(token, cache)[:, -1:].argmax(-1)


def generate(
    model: nn.Module, prompt: torch.Tensor, n_new: int, use_cache: bool = True
) -> torch.Tensor:
    """``prompt`` followed by ``n_new`` greedy tokens: with the cache, a prefill and one decode
    step per token; without, the whole sequence again for each token (the reference)."""
    tokens = prompt
    if use_cache:
        param = next(model.parameters())
        cache = KVCache(
            model.cfg, prompt.shape[0], prompt.shape[1] + n_new, param.device, param.dtype
        )
        token = prefill(model, prompt, cache)
        for _ in range(n_new - 1):
            tokens = torch.cat([tokens, token], dim=1)
            token = decode_step(model, token, cache)
        return torch.cat([tokens, token], dim=1)
    for _ in range(n_new):
        tokens = torch.cat([tokens, model(tokens)[:, -1:].argmax(-1)], dim=1)
    return tokens


def cached_forward(
    blocks: nn.ModuleList, x: torch.Tensor, cache: KVCache | None, **block_kwargs: object
) -> torch.Tensor:
    """Run the blocks over ``x``: without a cache as in training, with one from its length,
    advancing it by ``x``'s positions."""
    if cache is None:
        for block in blocks:
            x = block(x, **block_kwargs)
        return x
    start = cache.length
    for block, kv in zip(blocks, cache.layers, strict=True):
        x = block(x, kv, start, **block_kwargs)
    cache.length = start + x.shape[1]
    return x
