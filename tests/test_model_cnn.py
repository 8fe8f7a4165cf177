import random

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from scaling_bench.core.errors import ConfigError
from scaling_bench.models import cnn
from scaling_bench.models.cnn import CNNConfig


def built_params(cfg: CNNConfig, device: str = "meta") -> int:
    return sum(p.numel() for p in cnn.build(cfg, device=device).parameters())


def random_configs(n: int) -> list[CNNConfig]:
    rng = random.Random(0)
    return [CNNConfig(rng.uniform(0.01, 3.0), rng.randint(1, 20)) for _ in range(n)]


@pytest.mark.parametrize("cfg", random_configs(20), ids=str)
def test_param_count_matches_built_module(cfg: CNNConfig) -> None:
    assert cnn.param_count(cfg) == built_params(cfg)


def test_tutorial_net_has_62_006_parameters() -> None:
    assert cnn.param_count(CNNConfig()) == built_params(CNNConfig()) == 62_006


@pytest.mark.parametrize("cfg", [CNNConfig(0.1), CNNConfig(1.0), CNNConfig(1.7, 3)], ids=str)
def test_flops_match_flop_counter(cfg: CNNConfig) -> None:
    batch_size = 3
    model = cnn.build(cfg)
    x, y = cnn.sample_batch(cfg, batch_size)
    with FlopCounterMode(display=False) as forward:
        model(x)
    with FlopCounterMode(display=False) as train:
        F.cross_entropy(model(x), y).backward()
    assert forward.get_total_flops() == cnn.forward_flops_per_sample(cfg) * batch_size
    assert train.get_total_flops() == cnn.train_flops_per_sample(cfg) * batch_size


def test_sizing_error_at_1e4_is_as_documented() -> None:
    assert cnn.param_count(cnn.config_for(1e4)) == pytest.approx(1e4, rel=0.01)


def test_sizing_ladder_includes_the_tutorial_net() -> None:
    assert cnn.channels(cnn.config_for(62_006)) == (6, 16, 120, 84)


def test_pinned_n_classes_is_kept_and_width_fits_the_target() -> None:
    cfg = cnn.config_for(1e6, n_classes=100)
    assert cfg.n_classes == 100
    assert cnn.param_count(cfg) == pytest.approx(1e6, rel=0.02)


def test_pinned_width_returns_the_config_as_is() -> None:
    assert cnn.config_for(1e8, width_mult=0.5) == CNNConfig(width_mult=0.5)


@pytest.mark.parametrize(
    "fields",
    [
        {"width_mult": 0.0},
        {"width_mult": -1.0},
        {"width_mult": float("nan")},
        {"width_mult": float("inf")},
        {"n_classes": 0},
    ],
    ids=str,
)
def test_invalid_configs_raise_config_error(fields: dict) -> None:
    with pytest.raises(ConfigError):
        CNNConfig(**fields)


def test_sample_batch_gives_class_logits_and_a_finite_loss() -> None:
    cfg = CNNConfig(width_mult=0.5, n_classes=7)
    x, y = cnn.sample_batch(cfg, 4)
    out = cnn.build(cfg)(x)
    assert out.shape == (4, 7)
    assert y.dtype == torch.int64
    assert torch.isfinite(F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1)))
