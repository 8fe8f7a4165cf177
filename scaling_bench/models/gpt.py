"""Decoder-only transformer (nanoGPT-like): learned positions, pre-norm blocks, tied head.

Each block is ``x + attn(ln_1(x))`` then ``x + mlp(ln_2(x))``; the MLP is 4·d_model wide with
GELU; attention is ``F.scaled_dot_product_attention(is_causal=True)``; a final LayerNorm and an
``lm_head`` tied to the token embedding close the stack. ``bias=False`` drops the biases of every
Linear and LayerNorm, as nanoGPT does. ``qk_layernorm=True`` applies a LayerNorm over head_dim to
q and k in each layer, shared by the heads: 2·head_dim weights per layer (4·head_dim with biases).

Parameters (tied head counted once), with d = d_model, T = seq_len, V = vocab_size, b = bias:
``V·d + T·d + L·(12d² + (2 + 11b)·d + qk-layernorm) + (1 + b)·d``; GPT-2 small is 124,439,808.

FLOPs are matmul FLOPs as ``torch.utils.flop_counter.FlopCounterMode`` counts them. Per token,
forward = ``2·(12·L·d² + 2·L·T·d + d·V)``: the attention products QKᵀ and AV are counted as dense
T×T, like FlopCounterMode (no causal halving), so the training attention term is PaLM's
``12·L·H·Q·T`` = 12·L·d·T. Training = 3 × forward: the embedding lookup is not a matmul, so every
matmul (tied head included) has an input that needs a gradient. Hence ``train_flops_per_token`` =
``6·N + 12·L·d·T − 6·(T·d + biases + norm weights)``: 6N counts the position table and the vector
parameters, which do no matmul work. On CPU the fused flash-attention kernel is invisible to
FlopCounterMode; count under ``sdpa_kernel(SDPBackend.MATH)`` to compare.

Sizing rule: depth and width grow together. Depth L has ``n_head = max(1, L // 2)`` heads and
``d_model = k·n_head`` for width rung k, up to d_model ≈ 64·L (GPT-2 small's aspect ratio), so
head_dim ends near 128 for large models and a width step moves the count by about 2/head_dim.
Measured with the default vocab and context: within 1.6% of any target from 1e5 to 1e10 (the
worst just above the widest net of a depth, which ``fit_depth_width`` never picks for targets
above it). Below 1e5 the net is one or two layers of one head and the embedding tables (512·d)
weigh more, so the steps are coarser: 2.7% at 1e4, up to 4.3% between 1e4 and 1e5. Pinned
fields stay put and only the free ones move; with d_model pinned and n_head free, n_head is
the largest divisor of d_model up to max(1, L // 2).

Serving (the family's decode capability: ``kv_cache``, ``prefill``, ``decode_step``, written
once for the decoder families in ``models/attention.py``): a ``KVCache`` holds every layer's
keys and values, preallocated for the prompt and the tokens to come, as servers keep it;
``GPT.forward(idx, cache)`` writes the new positions' keys and values into it and attends over
all the cached ones, so a decode step costs one token's matmuls plus a read of the cache.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from scaling_bench.core.errors import ConfigError
from scaling_bench.models import attention
from scaling_bench.models.attention import CausalSelfAttention, KVCache, cached_forward
from scaling_bench.models.batches import token_batch
from scaling_bench.models.sizing import fit_free_knobs

DEFAULT_BATCH_SIZE = 16
INPUT = "tokens"  # the kind of input it takes: which datasets can feed it
#: The config field that repeats identical blocks: activations grow linearly in it.
DEPTH_FIELD = "n_layer"
ASPECT_RATIO = 64  # widest d_model per layer in the sizing ladder


@dataclass(frozen=True)
class GPTConfig:
    n_layer: int
    d_model: int
    n_head: int
    vocab_size: int = 256
    seq_len: int = 256
    bias: bool = True
    qk_layernorm: bool = False

    def __post_init__(self) -> None:
        check_fields(vars(self))

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    @property
    def n_kv_head(self) -> int:
        """Multi-head attention: every head has its own keys and values (for the KV cache)."""
        return self.n_head


Config = GPTConfig


def check_fields(values: Mapping[str, object]) -> None:
    """The config's rules on whichever of its fields ``values`` holds: all of them at birth, the
    pinned ones before sizing. The sizing rule derives fields from the pinned ones (``d_model``
    from ``n_head``), so a bad value must be caught, and named, as the user set it."""
    for name in ("n_layer", "d_model", "n_head", "vocab_size", "seq_len"):
        if name in values and values[name] < 1:
            raise ConfigError(f"{name}={values[name]} must be at least 1")
    if "d_model" in values and "n_head" in values and values["d_model"] % values["n_head"]:
        raise ConfigError(f"d_model={values['d_model']} is not divisible by "
                          f"n_head={values['n_head']}")  # fmt: skip


def param_count(cfg: GPTConfig) -> int:
    d, b = cfg.d_model, int(cfg.bias)
    qk_norms = 2 * (1 + b) * cfg.head_dim if cfg.qk_layernorm else 0
    per_layer = 12 * d * d + (2 + 11 * b) * d + qk_norms
    return (cfg.vocab_size + cfg.seq_len) * d + cfg.n_layer * per_layer + (1 + b) * d


def tokens_per_sample(cfg: GPTConfig) -> int:
    return cfg.seq_len


def forward_flops_per_token(cfg: GPTConfig) -> int:
    """Projections and MLP 24·d² per layer, QKᵀ and AV 4·T·d per layer (dense), head 2·d·V."""
    d, L = cfg.d_model, cfg.n_layer
    return 2 * (12 * L * d * d + 2 * L * cfg.seq_len * d + d * cfg.vocab_size)


def train_flops_per_token(cfg: GPTConfig) -> int:
    """Forward plus input and weight gradients of every matmul (the lookup is not a matmul)."""
    return 3 * forward_flops_per_token(cfg)


def forward_flops_per_sample(cfg: GPTConfig) -> int:
    return forward_flops_per_token(cfg) * cfg.seq_len


def train_flops_per_sample(cfg: GPTConfig) -> int:
    return train_flops_per_token(cfg) * cfg.seq_len


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.d_model, bias=cfg.bias)
        self.attn = CausalSelfAttention(
            cfg.d_model, cfg.n_head, bias=cfg.bias, qk_layernorm=cfg.qk_layernorm
        )
        self.ln_2 = nn.LayerNorm(cfg.d_model, bias=cfg.bias)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.d_model, 4 * cfg.d_model, bias=cfg.bias),
            nn.GELU(),
            nn.Linear(4 * cfg.d_model, cfg.d_model, bias=cfg.bias),
        )

    def forward(
        self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor] | None = None, start: int = 0
    ) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), kv, start)
        return x + self.mlp(self.ln_2(x))


CHECKPOINT_BLOCKS = (Block,)  # what --activation-checkpointing recomputes


kv_cache = attention.kv_cache  # the decode capability, shared by the decoder families
kv_cache_bytes = attention.kv_cache_bytes
context_length = attention.context_length
prefill = attention.prefill
decode_step = attention.decode_step
generate = attention.generate


class GPT(nn.Module):
    """Token ids ``(B, T)`` with ``T <= seq_len`` -> next-token logits ``(B, T, vocab_size)``.

    With a ``cache``, the ids are the positions after those it holds; their keys and values are
    written into it (and its length advanced), and they attend over every cached position."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.wpe = nn.Embedding(cfg.seq_len, cfg.d_model)
        self.h = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model, bias=cfg.bias)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight
        self._init_weights(cfg.n_layer)

    def _init_weights(self, n_layer: int) -> None:
        """nanoGPT's init: with PyTorch's N(0, 1) embeddings the tied head's first logits are
        about sqrt(d_model) large, which would make the first losses, and convergence runs,
        meaningless. Residual projections are scaled down by sqrt(2·n_layer) (GPT-2)."""
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif p.dim() > 1:  # LayerNorm weights keep their ones
                std = 0.02 / math.sqrt(2 * n_layer) if name.endswith("c_proj.weight") else 0.02
                nn.init.normal_(p, std=std)

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        start = cache.length if cache is not None else 0
        pos = torch.arange(start, start + idx.shape[1], device=idx.device)
        x = cached_forward(self.h, self.wte(idx) + self.wpe(pos), cache)
        return self.lm_head(self.ln_f(x))


def build(
    cfg: GPTConfig, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> nn.Module:
    with torch.device(device):
        model = GPT(cfg)
    return model.to(dtype=dtype)


sample_batch = token_batch


def _default_n_head(n_layer: int) -> int:
    return max(1, n_layer // 2)


def config_for(target_params: float, **overrides: object) -> GPTConfig:
    check_fields(overrides)

    def heads(n_layer: int) -> int:
        if "n_head" in overrides:
            return overrides["n_head"]
        if "d_model" in overrides:  # the most heads up to the default that divide d_model
            rule = _default_n_head(n_layer)
            return max(h for h in range(1, rule + 1) if overrides["d_model"] % h == 0)
        return _default_n_head(n_layer)

    def make(n_layer: int, k: int) -> GPTConfig:
        """Depth ``n_layer``, width rung ``k``; pinned fields override both."""
        n_layer = overrides.get("n_layer", n_layer)
        n_head = heads(n_layer)
        fields = {"n_layer": n_layer, "d_model": k * n_head, "n_head": n_head}
        return GPTConfig(**(fields | overrides))

    def count(n_layer: int, k: int) -> int:
        return param_count(make(n_layer, k))

    def max_width(n_layer: int) -> int:
        return max(1, ASPECT_RATIO * n_layer // heads(n_layer))

    return make(
        *fit_free_knobs(
            count,
            target_params,
            max_width,
            depth_pinned="n_layer" in overrides,
            width_pinned="d_model" in overrides,
        )
    )
