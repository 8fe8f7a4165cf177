"""The llama family against published shapes, Hugging Face's LlamaForCausalLM, the FLOP
counter, and its grouped-query KV cache (the family contract itself is tests/test_families.py)."""

from __future__ import annotations

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from scaling_bench.core.errors import ConfigError
from scaling_bench.models import family, llama
from scaling_bench.models.llama import LlamaConfig
from scaling_bench.models.loss import loss_of

LLAMA_3_2_1B = LlamaConfig(n_layer=16, d_model=2048, n_head=32, n_kv_head=8, d_ff=8192,
                           vocab_size=128_256, seq_len=2048, tie_embeddings=True)  # fmt: skip
LLAMA_3_8B = LlamaConfig(n_layer=32, d_model=4096, n_head=32, n_kv_head=8, d_ff=14336,
                         vocab_size=128_256, seq_len=2048)  # fmt: skip
SMALL = LlamaConfig(n_layer=2, d_model=64, n_head=4, n_kv_head=2, d_ff=176, vocab_size=96,
                    seq_len=24)  # fmt: skip


def counted(cfg: LlamaConfig) -> int:
    return sum(p.numel() for p in llama.build(cfg, device="meta").parameters())


@pytest.mark.parametrize(
    ("cfg", "expected"), [(LLAMA_3_2_1B, 1_235_814_400), (LLAMA_3_8B, 8_030_261_248)]
)
def test_published_llama_shapes_have_their_published_parameter_counts(cfg, expected) -> None:
    assert llama.param_count(cfg) == counted(cfg) == expected


def test_published_shapes_are_kept_whole_when_every_field_is_pinned() -> None:
    fields = {f: getattr(LLAMA_3_8B, f) for f in ("n_layer", "d_model", "n_head", "n_kv_head",
                                                  "d_ff", "vocab_size", "seq_len")}  # fmt: skip
    assert llama.config_for(1e6, **fields) == LLAMA_3_8B


def test_sizing_keeps_four_query_heads_per_kv_head_and_an_8_3_mlp() -> None:
    cfg = llama.config_for(1e10)
    assert cfg.n_head == 4 * cfg.n_kv_head
    assert 8 / 3 <= cfg.d_ff / cfg.d_model < 8 / 3 * 1.05
    assert cfg.head_dim % 2 == 0


def _hugging_face(cfg: LlamaConfig) -> torch.nn.Module:
    transformers = pytest.importorskip("transformers")
    hf = transformers.LlamaConfig(
        hidden_size=cfg.d_model,
        intermediate_size=cfg.d_ff,
        num_hidden_layers=cfg.n_layer,
        num_attention_heads=cfg.n_head,
        num_key_value_heads=cfg.n_kv_head,
        vocab_size=cfg.vocab_size,
        max_position_embeddings=cfg.seq_len,
        tie_word_embeddings=cfg.tie_embeddings,
        rope_theta=cfg.rope_theta,
        rms_norm_eps=cfg.norm_eps,
        attn_implementation="sdpa",
    )
    with torch.device("meta"):
        return transformers.LlamaForCausalLM(hf)


@pytest.mark.parametrize("cfg", [LLAMA_3_2_1B, LLAMA_3_8B, SMALL], ids=["1B", "8B", "small"])
def test_counts_equal_hugging_faces_llama_built_on_the_meta_device(cfg: LlamaConfig) -> None:
    assert llama.param_count(cfg) == sum(p.numel() for p in _hugging_face(cfg).parameters())


def _flops(model: torch.nn.Module, idx: torch.Tensor, train: bool) -> int:
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        out = model(idx)
        logits = out.logits if hasattr(out, "logits") else out
        if train:
            logits.float().sum().backward()
    return counter.get_total_flops()


@pytest.mark.parametrize("train", [False, True], ids=["forward", "train"])
def test_flops_equal_hugging_faces_and_the_flop_counter(train: bool) -> None:
    idx = torch.randint(0, SMALL.vocab_size, (2, SMALL.seq_len))
    ours = _flops(llama.build(SMALL), idx, train)
    per_sample = llama.train_flops_per_sample if train else llama.forward_flops_per_sample
    assert ours == 2 * per_sample(SMALL)
    assert _flops(_hugging_face(SMALL), idx.to("meta"), train) == ours


def test_a_training_step_lowers_the_loss_with_grouped_heads() -> None:
    model = llama.build(SMALL)
    batch = llama.sample_batch(SMALL, 4)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(6):
        opt.zero_grad()
        loss = loss_of(model, batch)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
@torch.inference_mode()
def test_greedy_generation_with_the_gqa_cache_equals_generation_without_it(tied: bool) -> None:
    cfg = LlamaConfig(**{**vars(SMALL), "tie_embeddings": tied})
    model = llama.build(cfg).eval()
    prompt = torch.randint(0, cfg.vocab_size, (3, 7))
    cached = llama.generate(model, prompt, 12, use_cache=True)
    assert cached.shape == (3, 19)
    assert torch.equal(cached, llama.generate(model, prompt, 12, use_cache=False))


@torch.inference_mode()
def test_a_prompt_fed_in_chunks_gives_the_logits_of_one_forward_pass() -> None:
    model = llama.build(SMALL).eval()
    tokens = torch.randint(0, SMALL.vocab_size, (2, 17))
    cache = llama.kv_cache(SMALL, 2, 17)
    chunks = [model(tokens[:, a:b], cache) for a, b in ((0, 5), (5, 6), (6, 17))]
    torch.testing.assert_close(torch.cat(chunks, dim=1), model(tokens), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_cache_holds_only_the_kv_heads(dtype: torch.dtype) -> None:
    cache = llama.kv_cache(SMALL, 5, 20, dtype=dtype)
    expected = 2 * SMALL.n_layer * 5 * 20 * SMALL.n_kv_head * SMALL.head_dim * dtype.itemsize
    assert cache.nbytes == llama.kv_cache_bytes(SMALL, 5, 20, dtype.itemsize) == expected


@pytest.mark.parametrize(
    ("fields", "named"),
    [({"n_head": 4, "n_kv_head": 3}, "n_kv_head=3"), ({"d_model": 60, "n_head": 4}, "n_head=4"),
     ({"rope_theta": 0.0}, "rope_theta=0.0")],
)  # fmt: skip
def test_bad_shapes_are_refused_naming_the_field(fields: dict, named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        llama.config_for(1e6, **fields)


@pytest.mark.parametrize("name", ["llama", "moe"])
def test_a_model_allocated_from_the_meta_device_gets_its_rotary_tables_back(name: str) -> None:
    """FSDP's ranks build on meta, ``to_empty`` and call every ``reset_parameters``: the tables
    (buffers no state dict holds) must come back, or every forward reads uninitialised memory."""
    fam = family(name)
    cfg = fam.config_for(1e4)
    reference = fam.build(cfg)
    model = fam.build(cfg, device="meta").to_empty(device="cpu")
    for module in model.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    assert torch.equal(model.rope_cos, reference.rope_cos)
    assert torch.equal(model.rope_sin, reference.rope_sin)
