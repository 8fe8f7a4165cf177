"""The contract every family keeps: exact counts and FLOPs, sizing within 2% from 1e5, monotone
sizing, nothing allocated to plan a 1e10-parameter model, and a batch that trains."""

from __future__ import annotations

import random

import pytest
import torch
from sizes import log_grid
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from scaling_bench.models import FAMILY_NAMES, family, mlp
from scaling_bench.models.loss import loss_of
from scaling_bench.models.mlp import MLPConfig


def counted(name: str, cfg: object) -> int:
    return sum(p.numel() for p in family(name).build(cfg, device="meta").parameters())


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_sizing_is_within_2_percent_from_1e5_to_1e10(name: str) -> None:
    fam = family(name)
    for target in log_grid(5, 10, 61):
        assert fam.param_count(fam.config_for(target)) == pytest.approx(target, rel=0.02)


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_larger_targets_never_give_fewer_parameters(name: str) -> None:
    fam = family(name)
    counts = [fam.param_count(fam.config_for(t)) for t in log_grid(4, 10, 301)]
    assert counts == sorted(counts)


@pytest.mark.parametrize("name", FAMILY_NAMES)
@pytest.mark.parametrize("target", [1e4, 1e6, 1e10])
def test_sized_models_have_their_closed_form_count(name: str, target: float) -> None:
    cfg = family(name).config_for(target)
    assert counted(name, cfg) == family(name).param_count(cfg)


@pytest.mark.parametrize("name", FAMILY_NAMES)
@pytest.mark.parametrize("target", [1e4, 3e5])
def test_flops_of_sized_models_match_the_flop_counter(name: str, target: float) -> None:
    fam = family(name)
    cfg = fam.config_for(target)
    model = fam.build(cfg)
    batch = fam.sample_batch(cfg, 2)
    # FlopCounterMode cannot see the fused CPU attention kernel; the math backend is matmuls.
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as forward:
        model(batch[0])
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as train:
        loss_of(model, batch).backward()
    assert forward.get_total_flops() == 2 * fam.forward_flops_per_sample(cfg)
    assert train.get_total_flops() == 2 * fam.train_flops_per_sample(cfg)


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_a_sized_model_trains_on_its_sample_batch(name: str) -> None:
    fam = family(name)
    cfg = fam.config_for(2e4)
    model = fam.build(cfg)
    batch = fam.sample_batch(cfg, 4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(8):
        optimizer.zero_grad()
        loss = loss_of(model, batch)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]


def random_mlp_configs(n: int) -> list[MLPConfig]:
    rng = random.Random(0)
    return [
        MLPConfig(rng.randint(1, 300), rng.randint(1, 6), rng.randint(1, 900), rng.randint(1, 50))
        for _ in range(n)
    ]


@pytest.mark.parametrize("cfg", random_mlp_configs(20), ids=str)
def test_mlp_param_count_matches_the_built_module(cfg: MLPConfig) -> None:
    assert mlp.param_count(cfg) == counted("mlp", cfg)


def test_mlp_pinned_depth_is_kept_and_width_fits_the_target() -> None:
    cfg = mlp.config_for(1e6, n_layer=8)
    assert cfg.n_layer == 8
    assert mlp.param_count(cfg) == pytest.approx(1e6, rel=0.01)


def test_mlp_config_refuses_a_zero_width() -> None:
    from scaling_bench.core.errors import ConfigError

    with pytest.raises(ConfigError, match="d_hidden=0"):
        MLPConfig(d_hidden=0)
