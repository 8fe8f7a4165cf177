import itertools
import math
import random

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from scaling_bench.core.errors import ConfigError
from scaling_bench.models import gpt
from scaling_bench.models.gpt import GPTConfig

GPT2_SMALL = GPTConfig(n_layer=12, d_model=768, n_head=12, vocab_size=50257, seq_len=1024)


def built_params(cfg: GPTConfig, device: str = "meta") -> int:
    return sum(p.numel() for p in gpt.build(cfg, device=device).parameters())


def random_configs(n_per_combo: int) -> list[GPTConfig]:
    rng = random.Random(0)
    return [
        GPTConfig(
            n_layer=rng.randint(1, 3),
            d_model=(n_head := rng.randint(1, 4)) * rng.randint(1, 8),
            n_head=n_head,
            vocab_size=rng.randint(1, 50),
            seq_len=rng.randint(1, 20),
            bias=bias,
            qk_layernorm=qk_layernorm,
        )
        for bias, qk_layernorm in itertools.product((True, False), repeat=2)
        for _ in range(n_per_combo)
    ]


@pytest.mark.parametrize("cfg", random_configs(10), ids=str)
def test_param_count_matches_built_module(cfg: GPTConfig) -> None:
    assert gpt.param_count(cfg) == built_params(cfg)


def test_gpt2_small_has_124_439_808_parameters() -> None:
    assert gpt.param_count(GPT2_SMALL) == built_params(GPT2_SMALL) == 124_439_808


def test_lm_head_is_tied_to_token_embedding() -> None:
    model = gpt.build(GPTConfig(n_layer=1, d_model=8, n_head=2), device="meta")
    assert model.lm_head.weight is model.wte.weight


@pytest.mark.parametrize("cfg", random_configs(1), ids=str)
def test_flops_match_flop_counter(cfg: GPTConfig) -> None:
    # The fused CPU flash-attention kernel is invisible to FlopCounterMode; the math backend
    # computes QKᵀ and AV as visible matmuls.
    batch_size = 3
    model = gpt.build(cfg)
    x, y = gpt.sample_batch(cfg, batch_size)
    with sdpa_kernel(SDPBackend.MATH):
        with FlopCounterMode(display=False) as forward:
            model(x)
        with FlopCounterMode(display=False) as train:
            out = model(x)
            F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1)).backward()
    assert forward.get_total_flops() == gpt.forward_flops_per_sample(cfg) * batch_size
    assert train.get_total_flops() == gpt.train_flops_per_sample(cfg) * batch_size
    assert gpt.train_flops_per_sample(cfg) == gpt.train_flops_per_token(cfg) * cfg.seq_len


def test_train_flops_are_6n_plus_attention_less_the_parameters_without_matmuls() -> None:
    cfg, d, L, T = GPT2_SMALL, 768, 12, 1024
    vector_params = L * 13 * d + 2 * d  # biases and LayerNorm weights
    expected = 6 * (gpt.param_count(cfg) - T * d - vector_params) + 12 * L * d * T
    assert gpt.train_flops_per_token(cfg) == expected


def test_sizing_error_at_1e4_is_as_documented() -> None:
    assert gpt.param_count(gpt.config_for(1e4)) == pytest.approx(1e4, rel=0.03)


@pytest.mark.parametrize(
    "pinned",
    [
        {"vocab_size": 50257},
        {"seq_len": 1024, "bias": False, "qk_layernorm": True},
        {"n_layer": 6},
        {"n_head": 8},
        {"d_model": 768},
        {"n_layer": 6, "n_head": 4},
    ],
    ids=str,
)
def test_pinned_fields_are_kept_and_the_free_ones_fit_the_target(pinned: dict) -> None:
    cfg = gpt.config_for(1e8, **pinned)
    assert {name: getattr(cfg, name) for name in pinned} == pinned
    assert gpt.param_count(cfg) == pytest.approx(1e8, rel=0.02)


def test_all_sized_fields_pinned_returns_the_config_as_is() -> None:
    pinned = {"n_layer": 2, "d_model": 64, "n_head": 4, "vocab_size": 100}
    assert gpt.config_for(1e9, **pinned) == GPTConfig(**pinned)


@pytest.mark.parametrize(
    "fields",
    [
        {"n_layer": 0, "d_model": 8, "n_head": 2},
        {"n_layer": 1, "d_model": 10, "n_head": 3},
        {"n_layer": 1, "d_model": 8, "n_head": 2, "vocab_size": 0},
        {"n_layer": 1, "d_model": 8, "n_head": 2, "seq_len": 0},
    ],
    ids=str,
)
def test_invalid_configs_raise_config_error(fields: dict) -> None:
    with pytest.raises(ConfigError):
        GPTConfig(**fields)


def test_sizing_with_incompatible_pins_raises_config_error() -> None:
    with pytest.raises(ConfigError):
        gpt.config_for(1e6, d_model=100, n_head=3)


def test_initial_loss_is_near_that_of_uniform_predictions() -> None:
    cfg = GPTConfig(n_layer=2, d_model=64, n_head=2, seq_len=16)
    torch.manual_seed(0)
    x, y = gpt.sample_batch(cfg, 8)
    out = gpt.build(cfg)(x)
    loss = F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))
    assert loss.item() == pytest.approx(math.log(cfg.vocab_size), abs=0.2)


def test_sample_batch_gives_next_token_logits_and_a_finite_loss() -> None:
    cfg = GPTConfig(n_layer=2, d_model=16, n_head=2, vocab_size=30, seq_len=12)
    x, y = gpt.sample_batch(cfg, 4)
    out = gpt.build(cfg)(x)
    assert out.shape == (4, 12, 30)
    assert y.dtype == torch.int64
    torch.testing.assert_close(x[:, 1:], y[:, :-1])
    assert torch.isfinite(F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1)))
