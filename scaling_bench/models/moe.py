"""Sparse mixture-of-experts decoder: the llama block with a routed SwiGLU expert layer.

Each block is llama's (RMSNorm, rotary grouped-query attention) with the MLP replaced by
``n_expert`` SwiGLU experts of width ``d_expert`` behind a router ``Linear(d_model, n_expert)``:
softmax over the experts, each token goes to its ``top_k`` most probable ones, their outputs
weighted by those probabilities renormalised over the chosen k (as Mixtral). ``n_shared_expert``
experts of the same width see every token and are added unweighted (as DeepSeek's shared ones).

Dispatch is dropless and loops over experts, never tokens: the (token, choice) pairs are sorted
by expert (a stable sort, so deterministic), gathered with ``index_select`` into one buffer,
each expert runs on its own contiguous slice, and the outputs go back to token order with the
inverse permutation and a weighted sum over the k choices (no ``index_add_``, whose CUDA atomics
would add in a varying order). Each expert's matmuls are over its own tokens, so the matmul FLOPs
are exactly those of ``tokens·top_k`` tokens through one expert, whatever the routing.

How many tokens each expert gets is data, which fake and meta tensors (the memory predictor's
replay, the meta-device traces) do not have. There the split is the balanced one
(``tokens·top_k / n_expert`` each, the remainder one by one): the tensors autograd saves are
linear in each expert's share, so their total is exact for any routing; only one expert's
transient buffers at a time follow its real share. A capacity-factor formulation would give
fixed shapes, but it drops tokens, so a cached decode would not equal the full forward.
Under ``torch.compile`` the shares are symbolic sizes (the compile recipe captures scalar reads),
so a step compiles once, in one graph, whatever the routing.

The load-balancing loss (Switch / Mixtral): ``n_expert · Σ_e f_e · P_e`` with ``f_e`` the
fraction of (token, choice) pairs routed to e and ``P_e`` its mean router probability, averaged
over the layers, times ``aux_loss_coef``: the model's ``aux_loss`` after each forward, which
``models.loss.loss_of`` adds. Each layer keeps its last forward's tokens per expert;
``load_imbalance`` reads max/mean from them, and ``metrics`` records both after each timed
workload (``workloads/family_metrics.py``: ``train_expert_load_imbalance``; their specs in
``models/moe_specs.py``).

Parameters (with llama's attention A = d·(n_head + 2·n_kv_head)·h + n_head·h·d, and an expert's
S = 3·d·d_expert): total = ``V·d·(2 − tied) + L·(A + d·n_expert + (n_expert + n_shared)·S + 2d)
+ d``; active (what one token touches) has ``top_k + n_shared`` experts in place of
``n_expert + n_shared``. Mixtral-8x7B's shape (32 layers, d 4096, 32 heads, 8 KV heads,
d_expert 14336, V 32,000, untied, 8 experts, top-2) is 46,702,792,704 total and 12,879,925,248
active. FLOPs per token follow the active path plus the router: llama's with the MLP's 3·d·d_ff
replaced by ``d·n_expert + (top_k + n_shared)·S``; training is 3 × forward. Softmax, top-k,
the gathers and the weighted sum are not matmuls and count as none, as the FLOP counter has it.

Sizing targets the total count on llama's ladder (``llama.fit_ladder``, d_expert in place of
d_ff, with the routing fields as set); ``--set top_k=…`` then moves only the active count.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensor

from scaling_bench.core.errors import ConfigError
from scaling_bench.core.stats import single
from scaling_bench.models import llama
from scaling_bench.models.llama import SwiGLU

DEFAULT_BATCH_SIZE = llama.DEFAULT_BATCH_SIZE
INPUT = llama.INPUT
DEPTH_FIELD = llama.DEPTH_FIELD
FFN_RUNGS = 6  # expert widths per head size on the sizing ladder: within 1.5% from 1e5


@dataclass(frozen=True)
class MoEConfig:
    n_layer: int
    d_model: int
    n_head: int
    n_kv_head: int
    d_expert: int
    vocab_size: int = 256
    seq_len: int = 256
    tie_embeddings: bool = False
    rope_theta: float = 500000.0
    norm_eps: float = 1e-5
    n_expert: int = 8
    top_k: int = 2
    n_shared_expert: int = 0
    aux_loss_coef: float = 0.01

    def __post_init__(self) -> None:
        check_fields(vars(self))

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head


Config = MoEConfig


def check_fields(values: Mapping[str, object]) -> None:
    """llama's rules plus the routing's, on whichever fields ``values`` holds."""
    llama.check_fields(values)
    for name in ("d_expert", "n_expert", "top_k"):
        if name in values and values[name] < 1:
            raise ConfigError(f"{name}={values[name]} must be at least 1")
    for name in ("n_shared_expert", "aux_loss_coef"):
        if name in values and values[name] < 0:
            raise ConfigError(f"{name}={values[name]} must not be negative")
    top_k, n_expert = values.get("top_k", 2), values.get("n_expert", 8)
    if top_k > n_expert:
        raise ConfigError(f"top_k={top_k} exceeds n_expert={n_expert}")


def _attention_params(cfg: MoEConfig) -> int:
    h = cfg.head_dim
    return cfg.d_model * (cfg.n_head + 2 * cfg.n_kv_head) * h + cfg.n_head * h * cfg.d_model


def _matmul_params_per_layer(cfg: MoEConfig, experts: int) -> int:
    """Attention, router and ``experts`` SwiGLU experts: the weights of one layer's matmuls."""
    expert = 3 * cfg.d_model * cfg.d_expert
    return _attention_params(cfg) + cfg.d_model * cfg.n_expert + experts * expert


def _count(cfg: MoEConfig, experts: int) -> int:
    embeddings = cfg.vocab_size * cfg.d_model * (1 if cfg.tie_embeddings else 2)
    per_layer = _matmul_params_per_layer(cfg, experts) + 2 * cfg.d_model
    return embeddings + cfg.n_layer * per_layer + cfg.d_model


def param_count(cfg: MoEConfig) -> int:
    """Every parameter: all experts, as memory and checkpoints hold them."""
    return _count(cfg, cfg.n_expert + cfg.n_shared_expert)


def active_param_count(cfg: MoEConfig) -> int:
    """The parameters one token touches: its top_k routed experts and the shared ones."""
    return _count(cfg, cfg.top_k + cfg.n_shared_expert)


def tokens_per_sample(cfg: MoEConfig) -> int:
    return cfg.seq_len


def forward_flops_per_token(cfg: MoEConfig) -> int:
    """2 FLOPs per active matmul weight (router included), QKᵀ and AV 4·T·n_head·h per layer."""
    per_layer = _matmul_params_per_layer(cfg, cfg.top_k + cfg.n_shared_expert)
    matmuls = cfg.n_layer * per_layer + cfg.d_model * cfg.vocab_size
    return 2 * matmuls + 4 * cfg.n_layer * cfg.seq_len * cfg.n_head * cfg.head_dim


def train_flops_per_token(cfg: MoEConfig) -> int:
    """Forward plus input and weight gradients of every matmul, as for llama."""
    return 3 * forward_flops_per_token(cfg)


def forward_flops_per_sample(cfg: MoEConfig) -> int:
    return forward_flops_per_token(cfg) * cfg.seq_len


def train_flops_per_sample(cfg: MoEConfig) -> int:
    return train_flops_per_token(cfg) * cfg.seq_len


def _shares(counts: torch.Tensor, pairs: int) -> list[int]:
    """Tokens per expert: the counted ones, or the balanced split where tensors hold no data."""
    if isinstance(counts, FakeTensor) or counts.device.type == "meta":
        n = counts.shape[0]
        return [pairs // n + (e < pairs % n) for e in range(n)]
    shares = counts.tolist()
    if torch.compiler.is_compiling():
        # Traced, each share is a symbolic size (``compiled.compile_model`` captures scalar
        # reads), unknown until run: what split needs to know of it, so no step recompiles.
        for share in shares:
            torch._check(share >= 0)
        torch._check(sum(shares) == pairs)
    return shares


class RoutedExperts(nn.Module):
    """Router, ``n_expert`` routed SwiGLU experts (top_k per token) and the shared ones."""

    def __init__(self, cfg: MoEConfig) -> None:
        super().__init__()
        self.top_k = cfg.top_k
        self.aux_weight = cfg.n_expert * cfg.aux_loss_coef
        self.router = nn.Linear(cfg.d_model, cfg.n_expert, bias=False)
        self.experts = nn.ModuleList(SwiGLU(cfg.d_model, cfg.d_expert) for _ in range(cfg.n_expert))
        self.shared = nn.ModuleList(
            SwiGLU(cfg.d_model, cfg.d_expert) for _ in range(cfg.n_shared_expert)
        )
        #: The last forward's (token, choice) pairs per expert, and its load-balancing loss.
        self.tokens_per_expert: torch.Tensor | None = None
        self.aux_loss: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        n_tokens, n_expert, k = flat.shape[0], len(self.experts), self.top_k
        probs = self.router(flat).float().softmax(dim=-1)
        top_p, chosen = probs.topk(k, dim=-1)
        gates = (top_p / top_p.sum(dim=-1, keepdim=True)).to(flat.dtype)
        choices = chosen.reshape(-1)
        counts = torch.zeros(n_expert, dtype=torch.long, device=flat.device)
        counts.scatter_add_(0, choices, torch.ones_like(choices))
        order = choices.argsort(stable=True)
        parts = flat.index_select(0, order // k).split(_shares(counts, n_tokens * k))
        routed = torch.cat([expert(part) for expert, part in zip(self.experts, parts, strict=True)])
        inverse = torch.empty_like(order).scatter_(
            0, order, torch.arange(order.numel(), device=order.device)
        )
        routed = routed.index_select(0, inverse).view(n_tokens, k, -1)
        out = (routed * gates.unsqueeze(-1)).sum(dim=1)
        for expert in self.shared:
            out = out + expert(flat)
        # The constants go into the routed fractions, which need no gradient: a Python number
        # times a tensor that does makes autograd save an 8-byte wrapped CPU scalar until the
        # backward, which the memory predictor's fake tensors never allocate.
        fraction = counts.to(probs.dtype) * (self.aux_weight / (n_tokens * k))
        self.aux_loss = (fraction * probs.mean(dim=0)).sum()
        self.tokens_per_expert = counts.detach()
        return out.view_as(x)


def _block(cfg: MoEConfig) -> llama.Block:
    return llama.Block(cfg, mlp=RoutedExperts(cfg))


CHECKPOINT_BLOCKS = (llama.Block,)  # what --activation-checkpointing recomputes


class MoE(llama.Llama):
    """llama's decoder with routed experts in every block; ``aux_loss`` after each forward."""

    def __init__(self, cfg: MoEConfig) -> None:
        super().__init__(cfg, block=_block)

    def _routers(self) -> list[RoutedExperts]:
        return [block.mlp for block in self.h]

    @property
    def aux_loss(self) -> torch.Tensor | None:
        """The load-balancing loss of the last forward, averaged over layers, times its weight."""
        losses = [r.aux_loss for r in self._routers() if r.aux_loss is not None]
        if not losses:
            return None
        return torch.stack(losses).mean()


def _tokens_per_expert(model: nn.Module) -> list[torch.Tensor]:
    counts = [m.tokens_per_expert for m in model.modules() if isinstance(m, RoutedExperts)]
    return [c for c in counts if c is not None]


def load_imbalance(model: nn.Module) -> float:
    """Max over mean tokens per expert in the last forward, the worst layer's (1.0: balanced)."""
    counts = torch.stack(_tokens_per_expert(model)).float()
    return (counts.max(dim=1).values / counts.mean(dim=1)).max().item()


def metrics(model: nn.Module) -> dict[str, dict]:
    """The routing of the model's last forward: each layer's (token, choice) pairs per expert,
    and their imbalance, which sets how far the busiest expert's matmuls lag the others'."""
    counts = _tokens_per_expert(model)
    if not counts:
        return {}
    per_layer = [c.tolist() for c in counts]
    return {
        "expert_load_imbalance": single(load_imbalance(model), "ratio")
        | {"tokens_per_expert": per_layer}
    }


def build(
    cfg: MoEConfig, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> nn.Module:
    with torch.device(device):
        model = MoE(cfg)
    return model.to(dtype=dtype)


sample_batch = llama.sample_batch
context_length = llama.context_length
prefill = llama.prefill  # the decode capability, shared by the decoder families
decode_step = llama.decode_step


kv_cache = llama.kv_cache
kv_cache_bytes = llama.kv_cache_bytes
generate = llama.generate


def expert_width(d_model: int, d_next: int, step: int, rungs: int) -> int:
    """d_expert on rung ``step`` of ``rungs`` at ``d_model``: llama's width, then equal steps up
    to the width whose expert area ``d_model·d_expert`` is the next head size's at llama's width,
    so stepping the head size moves the (expert-dominated) count no more than a rung does."""
    narrow = llama.ffn_width(d_model)
    wide = llama.ffn_width(d_next) * d_next // d_model
    return narrow + (wide - narrow) * step // rungs


def config_for(target_params: float, **overrides: object) -> MoEConfig:
    """The config nearest to the TOTAL count on llama's ladder (routing fields as set)."""
    check_fields(overrides)
    return llama.fit_ladder(
        target_params, overrides, MoEConfig, param_count, "d_expert", FFN_RUNGS, expert_width
    )
