"""The moe family against Mixtral's published shape, the FLOP counter, its routing and its
KV cache (the family contract itself is tests/test_families.py)."""

from __future__ import annotations

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import scaling_bench.workloads  # noqa: F401  (registers the workloads' metric specs)
from scaling_bench.core.metrics import spec
from scaling_bench.models import moe
from scaling_bench.models.loss import loss_of
from scaling_bench.models.moe import MoEConfig
from scaling_bench.workloads import compiled, family_metrics
from scaling_bench.workloads.steps import train_step

MIXTRAL_8X7B = MoEConfig(n_layer=32, d_model=4096, n_head=32, n_kv_head=8, d_expert=14336,
                         vocab_size=32_000, seq_len=4096, n_expert=8, top_k=2)  # fmt: skip
SMALL = MoEConfig(n_layer=2, d_model=32, n_head=4, n_kv_head=2, d_expert=48, vocab_size=64,
                  seq_len=16, n_expert=4, top_k=2, n_shared_expert=1)  # fmt: skip


def test_mixtral_8x7b_shape_has_its_total_and_active_counts() -> None:
    built = sum(p.numel() for p in moe.build(MIXTRAL_8X7B, device="meta").parameters())
    assert moe.param_count(MIXTRAL_8X7B) == built == 46_702_792_704
    assert moe.active_param_count(MIXTRAL_8X7B) == 12_879_925_248


def test_top_k_moves_the_active_count_and_not_the_total() -> None:
    one, four = moe.config_for(1e7, top_k=1), moe.config_for(1e7, top_k=4)
    assert moe.param_count(one) == moe.param_count(four)
    assert moe.active_param_count(one) < moe.active_param_count(four) < moe.param_count(four)


@pytest.mark.parametrize("train", [False, True], ids=["forward", "train"])
def test_flops_of_the_active_path_equal_the_flop_counter_with_shared_experts(train) -> None:
    model = moe.build(SMALL)
    batch = moe.sample_batch(SMALL, 3)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        loss = loss_of(model, batch)
        if train:
            loss.backward()
    per_sample = moe.train_flops_per_sample if train else moe.forward_flops_per_sample
    assert counter.get_total_flops() == 3 * per_sample(SMALL)


def test_the_loss_holds_the_load_balancing_loss_and_routing_is_recorded() -> None:
    model = moe.build(SMALL)
    batch = moe.sample_batch(SMALL, 2)
    loss = loss_of(model, batch)
    aux = model.aux_loss
    assert aux is not None and aux.item() >= SMALL.aux_loss_coef * (1 - 1e-6)  # 1 when balanced
    tokens = [block.mlp.tokens_per_expert for block in model.h]
    assert all(int(t.sum()) == 2 * SMALL.seq_len * SMALL.top_k for t in tokens)
    assert moe.load_imbalance(model) >= 1.0
    loss.backward()
    assert model.h[0].mlp.router.weight.grad.abs().sum() > 0


def test_the_forward_pass_is_deterministic() -> None:
    model = moe.build(SMALL)
    idx = moe.sample_batch(SMALL, 2)[0]
    assert torch.equal(model(idx), model(idx))


@torch.inference_mode()
def test_greedy_generation_with_the_cache_equals_generation_without_it() -> None:
    model = moe.build(SMALL).eval()
    prompt = torch.randint(0, SMALL.vocab_size, (3, 5))
    cached = moe.generate(model, prompt, 9, use_cache=True)
    assert cached.shape == (3, 14)
    assert torch.equal(cached, moe.generate(model, prompt, 9, use_cache=False))


def test_top_k_above_the_experts_is_refused_naming_both() -> None:
    with pytest.raises(moe.ConfigError, match="top_k=9 exceeds n_expert=8"):
        moe.config_for(1e6, top_k=9)


def test_the_routing_is_recorded_under_each_timed_workload_and_only_for_moe() -> None:
    """The family-metrics seam: moe declares its figure once, every timed workload records it
    under its own prefix, and a family that declares none gets none."""
    model = moe.build(SMALL)
    x = moe.sample_batch(SMALL, 2)[0]
    with torch.no_grad():
        model(x)
    figures = family_metrics.read("train", "moe", model)
    assert set(figures) == {"train_expert_load_imbalance"}
    routing = figures["train_expert_load_imbalance"]
    assert routing["value"] == moe.load_imbalance(model)
    assert routing["tokens_per_expert"] == [b.mlp.tokens_per_expert.tolist() for b in model.h]
    assert spec("forward_expert_load_imbalance").unit == "ratio"
    assert family_metrics.read("train", "llama", model) == {}


def test_a_compiled_train_step_compiles_once_whatever_the_routing() -> None:
    # Tokens per expert are data: traced as symbolic sizes, a new routing is no new graph.
    cfg = MoEConfig(n_layer=1, d_model=16, n_head=2, n_kv_head=1, d_expert=16, vocab_size=32,
                    seq_len=8, n_expert=4, top_k=1)  # fmt: skip
    model = moe.build(cfg)
    step = train_step(
        compiled.compile_model(model, "default"),
        torch.optim.SGD(model.parameters(), lr=0.1),
        moe.sample_batch(cfg, 2),
    )
    first = compiled.first_step("train", step, torch.device("cpu"))
    assert first["train_compiled_frames"]["value"] == 1
    assert first["train_graph_breaks"]["value"] == 0
    frames, routings = compiled.compiled_frames_now(), set()
    router = model.h[0].mlp
    for expert in range(cfg.n_expert):  # the routing pulled to each expert in turn
        with torch.no_grad():
            router.router.weight.zero_()
            router.router.weight[expert] = 100.0
        step()
        routings.add(tuple(router.tokens_per_expert.tolist()))
    assert len(routings) == cfg.n_expert and all(0 in r for r in routings)  # idle experts too
    assert compiled.recompiles("train", frames)["train_recompiles"]["value"] == 0
