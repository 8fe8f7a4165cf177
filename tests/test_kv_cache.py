"""gpt's KV cache: the same tokens as recomputing the whole sequence, and the bytes it claims."""

from __future__ import annotations

import pytest
import torch

from scaling_bench.core.errors import ConfigError
from scaling_bench.models import gpt
from scaling_bench.models.gpt import GPTConfig

CONFIGS = [
    GPTConfig(n_layer=2, d_model=32, n_head=4, vocab_size=64, seq_len=40),
    GPTConfig(n_layer=3, d_model=24, n_head=2, vocab_size=50, seq_len=40, bias=False,
              qk_layernorm=True),
]  # fmt: skip


@pytest.fixture(params=CONFIGS, ids=["biases", "qk-layernorm-no-bias"])
def model(request: pytest.FixtureRequest) -> torch.nn.Module:
    return gpt.build(request.param).eval()


@torch.inference_mode()
def test_greedy_generation_with_the_cache_equals_generation_without_it(model) -> None:
    prompt = torch.randint(0, model.cfg.vocab_size, (3, 9))
    cached = gpt.generate(model, prompt, 20, use_cache=True)
    recomputed = gpt.generate(model, prompt, 20, use_cache=False)
    assert cached.shape == (3, 29)
    assert torch.equal(cached, recomputed)


@torch.inference_mode()
def test_a_prompt_fed_in_chunks_gives_the_logits_of_one_forward_pass(model) -> None:
    tokens = torch.randint(0, model.cfg.vocab_size, (2, 17))
    cache = gpt.kv_cache(model.cfg, 2, 17)
    chunks = [model(tokens[:, a:b], cache) for a, b in ((0, 5), (5, 6), (6, 17))]
    assert cache.length == 17
    torch.testing.assert_close(torch.cat(chunks, dim=1), model(tokens), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cache_bytes_are_2_layers_batch_positions_width_itemsize(dtype: torch.dtype) -> None:
    cfg = CONFIGS[0]
    cache = gpt.kv_cache(cfg, 5, 33, dtype=dtype)
    expected = 2 * cfg.n_layer * 5 * 33 * cfg.d_model * dtype.itemsize
    assert cache.nbytes == gpt.kv_cache_bytes(cfg, 5, 33, dtype.itemsize) == expected


def test_a_cache_longer_than_the_context_is_refused() -> None:
    with pytest.raises(ConfigError, match="seq_len=40"):
        gpt.kv_cache(CONFIGS[0], 1, 41)


def test_the_cache_adds_no_parameters_or_state_dict_keys() -> None:
    cfg = CONFIGS[0]
    model = gpt.build(cfg)
    with torch.inference_mode():
        model(torch.zeros(1, 4, dtype=torch.long), gpt.kv_cache(cfg, 1, 4))
    assert sum(p.numel() for p in model.parameters()) == gpt.param_count(cfg)
    assert not any("cache" in key for key in model.state_dict())
