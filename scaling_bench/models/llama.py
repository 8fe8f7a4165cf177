"""Llama-style decoder: RMSNorm, SwiGLU MLP, rotary positions, grouped-query attention.

Each block is ``x + attn(norm_1(x))`` then ``x + mlp(norm_2(x))`` with ``nn.RMSNorm``; attention
(``models/attention.py``) makes ``n_head`` query heads and ``n_kv_head`` key/value heads in one
fused projection, rotates q and k by RoPE (``rope_theta``) and calls
``F.scaled_dot_product_attention(is_causal=True, enable_gqa=...)``; the MLP is SwiGLU,
``down(silu(gate(x)) · up(x))`` with ``d_ff`` hidden units. No biases anywhere. A final RMSNorm
and an ``lm_head`` (tied to the token embedding where ``tie_embeddings``) close the stack. There
is no position table: rotary positions have no parameters.

Parameters, with d = d_model, h = head_dim = d / n_head, V = vocab_size:
``V·d·(2 − tied) + L·(d·(n_head + 2·n_kv_head)·h + n_head·h·d + 3·d·d_ff + 2d) + d``.
Llama-3.2-1B's shape (16 layers, d 2048, 32 heads, 8 KV heads, d_ff 8192, V 128,256, tied) is
1,235,814,400; Llama-3-8B's (32, 4096, 32, 8, 14336, 128,256, untied) is 8,030,261,248, as
Hugging Face's ``LlamaForCausalLM`` counts them.

FLOPs are matmul FLOPs as ``torch.utils.flop_counter.FlopCounterMode`` counts them. Per token,
forward = ``2·(L·(d·(n_head + 2·n_kv_head)·h + n_head·h·d + 3·d·d_ff) + d·V) + 4·L·T·n_head·h``:
the projections, the MLP, the head, and QKᵀ and AV over T positions for every query head (dense,
no causal halving, as FlopCounterMode counts them; grouped heads share keys, not the products).
Training = 3 × forward, as for gpt: every matmul's input needs a gradient. Norms, RoPE and SiLU
are elementwise and counted as no FLOPs.

Sizing rule: depth and width grow together as in gpt. Depth L has ``n_head = max(1, L // 2)``
query heads and ``n_kv_head`` the largest divisor of n_head up to n_head / 4 (Llama 3's grouping
of 4, so the ratio is kept as the model grows; n_head is rounded down to whole groups of 4 from 4
heads up); the head size grows in steps of 2 (RoPE rotates pairs) up to d_model ≈ 64·L;
``d_ff`` = 8/3·d_model rounded up to a multiple of ``ffn_multiple(d_model)`` (Llama rounds to
256; small models to d_model/16 rounded down to a power of two), and between two head sizes one
rung widens d_ff alone to the next one's width, which halves each step of the count. Measured
with the default vocab and context: within 1.3% of any target from 1e5 to 1e10. Pinned fields
stay put (a published shape through ``--set`` pins them all).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from scaling_bench.core.errors import ConfigError
from scaling_bench.models import attention
from scaling_bench.models.attention import (
    CausalSelfAttention,
    KVCache,
    cached_forward,
    rotary_tables,
)
from scaling_bench.models.batches import token_batch
from scaling_bench.models.sizing import fit_free_knobs

DEFAULT_BATCH_SIZE = 16
INPUT = "tokens"  # the kind of input it takes: which datasets can feed it
#: The config field that repeats identical blocks: activations grow linearly in it.
DEPTH_FIELD = "n_layer"
ASPECT_RATIO = 64  # widest d_model per layer in the sizing ladder
KV_GROUP = 4  # query heads per key/value head, as Llama 3 groups them
LLAMA_FFN_MULTIPLE = 256


@dataclass(frozen=True)
class LlamaConfig:
    n_layer: int
    d_model: int
    n_head: int
    n_kv_head: int
    d_ff: int
    vocab_size: int = 256
    seq_len: int = 256
    tie_embeddings: bool = False
    rope_theta: float = 500000.0
    norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        check_fields(vars(self))

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head


Config = LlamaConfig


def check_fields(values: Mapping[str, object]) -> None:
    """The config's rules on whichever of its fields ``values`` holds (all of them at birth, the
    pinned ones before sizing), named as the user set them."""
    for name in ("n_layer", "d_model", "n_head", "n_kv_head", "d_ff", "vocab_size", "seq_len"):
        if name in values and values[name] < 1:
            raise ConfigError(f"{name}={values[name]} must be at least 1")
    for name in ("rope_theta", "norm_eps"):
        if name in values and not values[name] > 0:
            raise ConfigError(f"{name}={values[name]} must be positive")
    if "d_model" in values and "n_head" in values:
        d, h = values["d_model"], values["n_head"]
        if d % h or (d // h) % 2:
            raise ConfigError(f"d_model={d} must split into n_head={h} heads of an even size")
    if "n_head" in values and "n_kv_head" in values and values["n_head"] % values["n_kv_head"]:
        raise ConfigError(f"n_head={values['n_head']} is not divisible by "
                          f"n_kv_head={values['n_kv_head']}")  # fmt: skip


def _matmul_params_per_layer(cfg: LlamaConfig) -> int:
    qkv = cfg.d_model * (cfg.n_head + 2 * cfg.n_kv_head) * cfg.head_dim
    return qkv + cfg.n_head * cfg.head_dim * cfg.d_model + 3 * cfg.d_model * cfg.d_ff


def param_count(cfg: LlamaConfig) -> int:
    embeddings = cfg.vocab_size * cfg.d_model * (1 if cfg.tie_embeddings else 2)
    per_layer = _matmul_params_per_layer(cfg) + 2 * cfg.d_model
    return embeddings + cfg.n_layer * per_layer + cfg.d_model


def tokens_per_sample(cfg: LlamaConfig) -> int:
    return cfg.seq_len


def forward_flops_per_token(cfg: LlamaConfig) -> int:
    """Projections, SwiGLU and head 2 FLOPs per weight; QKᵀ and AV 4·T·n_head·h per layer."""
    matmuls = cfg.n_layer * _matmul_params_per_layer(cfg) + cfg.d_model * cfg.vocab_size
    return 2 * matmuls + 4 * cfg.n_layer * cfg.seq_len * cfg.n_head * cfg.head_dim


def train_flops_per_token(cfg: LlamaConfig) -> int:
    """Forward plus input and weight gradients of every matmul (the lookup is not a matmul)."""
    return 3 * forward_flops_per_token(cfg)


def forward_flops_per_sample(cfg: LlamaConfig) -> int:
    return forward_flops_per_token(cfg) * cfg.seq_len


def train_flops_per_sample(cfg: LlamaConfig) -> int:
    return train_flops_per_token(cfg) * cfg.seq_len


class SwiGLU(nn.Module):
    def __init__(self, d_model: int, d_ff: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(d_model, d_ff, bias=False)
        self.up_proj = nn.Linear(d_model, d_ff, bias=False)
        self.down_proj = nn.Linear(d_ff, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, cfg: LlamaConfig, mlp: nn.Module | None = None) -> None:
        super().__init__()
        self.norm_1 = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.attn = CausalSelfAttention(cfg.d_model, cfg.n_head, cfg.n_kv_head, bias=False)
        self.norm_2 = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.mlp = mlp if mlp is not None else SwiGLU(cfg.d_model, cfg.d_ff)

    def forward(
        self,
        x: torch.Tensor,
        kv: tuple[torch.Tensor, torch.Tensor] | None = None,
        start: int = 0,
        *,
        rotary: attention.Rotary,
    ) -> torch.Tensor:
        T = x.shape[1]
        cos, sin = (t[start : start + T] for t in rotary)
        x = x + self.attn(self.norm_1(x), kv, start, (cos, sin))
        return x + self.mlp(self.norm_2(x))


CHECKPOINT_BLOCKS = (Block,)  # what --activation-checkpointing recomputes


class Llama(nn.Module):
    """Token ids ``(B, T)`` with ``T <= seq_len`` -> next-token logits ``(B, T, vocab_size)``;
    with a ``cache``, the ids are the positions after those it holds (as ``GPT``).

    ``block`` makes one block from the config (the moe family's routed MLP goes in here)."""

    #: The rotary tables: buffers, filled in ``__init__`` and again by ``reset_parameters``.
    rope_cos: torch.Tensor
    rope_sin: torch.Tensor

    def __init__(self, cfg: LlamaConfig, block: type[nn.Module] = Block) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.h = nn.ModuleList(block(cfg) for _ in range(cfg.n_layer))
        self.norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        cos, sin = rotary_tables(cfg.head_dim, cfg.seq_len, cfg.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self._init_weights(cfg.n_layer)

    def reset_parameters(self) -> None:
        """Fill the rotary tables again. A model built on the meta device and allocated with
        ``to_empty`` (FSDP's ranks) gets its values from each module's ``reset_parameters``; the
        tables are buffers no state dict holds, so without this they would stay uninitialised
        memory and every forward would be garbage."""
        cos, sin = rotary_tables(self.cfg.head_dim, self.cfg.seq_len, self.cfg.rope_theta)
        with torch.no_grad():
            self.rope_cos.copy_(cos)
            self.rope_sin.copy_(sin)

    def _init_weights(self, n_layer: int) -> None:
        """N(0, 0.02) for every matrix, residual projections scaled by 1/sqrt(2·n_layer), as for
        gpt, so first losses sit near ln(vocab_size) and convergence runs start sane."""
        for name, p in self.named_parameters():
            if p.dim() > 1:  # RMSNorm weights keep their ones
                residual = name.endswith(("c_proj.weight", "down_proj.weight"))
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * n_layer) if residual else 0.02)

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        rotary = (self.rope_cos, self.rope_sin)
        x = cached_forward(self.h, self.embed(idx), cache, rotary=rotary)
        return self.lm_head(self.norm(x))


def build(
    cfg: LlamaConfig, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> nn.Module:
    with torch.device(device):
        model = Llama(cfg)
    return model.to(dtype=dtype)


sample_batch = token_batch


kv_cache = attention.kv_cache  # the decode capability, shared by the decoder families
kv_cache_bytes = attention.kv_cache_bytes
context_length = attention.context_length
prefill = attention.prefill
decode_step = attention.decode_step
generate = attention.generate


def ffn_multiple(d_model: int) -> int:
    """What d_ff is rounded up to: Llama's 256, or d_model/16 as a power of two when smaller."""
    return max(1, min(LLAMA_FFN_MULTIPLE, 1 << max(0, (d_model // 16).bit_length() - 1)))


def ffn_width(d_model: int) -> int:
    """8/3·d_model rounded up to ``ffn_multiple`` (Llama's SwiGLU width for a multiplier of 1)."""
    multiple = ffn_multiple(d_model)
    return -(-(8 * d_model) // (3 * multiple)) * multiple


def ffn_between(d_model: int, d_next: int, step: int, rungs: int) -> int:
    """Llama's d_ff on rung ``step`` of ``rungs`` between two head sizes: d_model's width, then
    equal steps up to d_next's (two rungs: half the count's step each)."""
    narrow, wide = ffn_width(d_model), ffn_width(d_next)
    return narrow + (wide - narrow) * step // (rungs - 1)


def kv_heads(n_head: int) -> int:
    """The largest divisor of ``n_head`` up to n_head / ``KV_GROUP`` (at least one)."""
    return max(g for g in range(1, max(1, n_head // KV_GROUP) + 1) if n_head % g == 0)


def config_for(target_params: float, **overrides: object) -> LlamaConfig:
    check_fields(overrides)
    return fit_ladder(target_params, overrides, LlamaConfig, param_count, "d_ff")


def fit_ladder(
    target_params: float,
    overrides: Mapping[str, object],
    make_config: Callable[..., object],
    count_of: Callable[[object], int],
    ffn_field: str,
    ffn_rungs: int = 2,
    ffn_of: Callable[[int, int, int, int], int] | None = None,
) -> object:
    """The config nearest to ``target_params`` on the llama ladder, made by ``make_config``
    (counted by ``count_of``) with the SwiGLU width in ``ffn_field``: ``ffn_rungs`` rungs per
    head size, the width of each ``ffn_of(d_model, next d_model, rung, ffn_rungs)``
    (``ffn_between``; the moe family, whose experts dominate its count, steps finer)."""
    ffn_of = ffn_of or ffn_between

    def heads(n_layer: int) -> int:
        if "n_head" in overrides:
            return overrides["n_head"]
        rule = max(1, n_layer // 2)
        if "n_kv_head" in overrides:  # whole groups of the pinned key/value heads
            kv = overrides["n_kv_head"]
            rule = max(kv, rule // kv * kv)
        else:  # whole groups of query heads once there are any
            rule = rule // KV_GROUP * KV_GROUP or rule
        if "d_model" in overrides:  # the most heads up to the rule with an even head size
            d = overrides["d_model"]
            return max((h for h in range(1, rule + 1) if d % h == 0 and (d // h) % 2 == 0),
                       default=1)  # fmt: skip
        return rule

    def make(n_layer: int, k: int) -> object:
        """Depth ``n_layer``, width rung ``k``; pinned fields override both. Every
        ``ffn_rungs``-th rung steps the head size by 2 (RoPE rotates pairs), the rungs in
        between widen d_ff (``ffn_of``), so each step moves the count by a fraction as much."""
        n_layer = overrides.get("n_layer", n_layer)
        n_head = heads(n_layer)
        size, step = divmod(k + ffn_rungs - 1, ffn_rungs)
        d_model = overrides.get("d_model", 2 * n_head * size)
        d_next = overrides.get("d_model", d_model + 2 * n_head)
        ffn = ffn_of(d_model, d_next, step, ffn_rungs)
        fields = {
            "n_layer": n_layer,
            "d_model": d_model,
            "n_head": n_head,
            "n_kv_head": kv_heads(n_head),
            ffn_field: ffn,
        }
        return make_config(**(fields | overrides))

    def count(n_layer: int, k: int) -> int:
        return count_of(make(n_layer, k))

    def max_width(n_layer: int) -> int:
        return max(1, ASPECT_RATIO * n_layer * ffn_rungs // (2 * heads(n_layer)))

    return make(
        *fit_free_knobs(
            count,
            target_params,
            max_width,
            depth_pinned="n_layer" in overrides,
            width_pinned="d_model" in overrides,
        )
    )
