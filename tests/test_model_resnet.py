import random
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
import torchvision
from sizes import log_grid
from torch.utils.flop_counter import FlopCounterMode

from scaling_bench.core.errors import ConfigError
from scaling_bench.models import resnet
from scaling_bench.models.resnet import ResNetConfig

RESNET18 = ResNetConfig(n_classes=1000)


def built_params(cfg: ResNetConfig) -> int:
    return sum(p.numel() for p in resnet.build(cfg, device="meta").parameters())


def random_configs(n: int) -> list[ResNetConfig]:
    rng = random.Random(0)
    four = lambda low, high: tuple(rng.randint(low, high) for _ in range(4))  # noqa: E731
    edge = [ResNetConfig(widths=(1, 1, 1, 1), layers=(1, 1, 1, 1), n_classes=1)]
    return edge + [
        ResNetConfig(widths=four(1, 24), layers=four(1, 3), n_classes=rng.randint(1, 20))
        for _ in range(n)
    ]


@pytest.mark.parametrize("cfg", random_configs(30), ids=str)
def test_param_count_matches_built_module(cfg: ResNetConfig) -> None:
    assert resnet.param_count(cfg) == built_params(cfg)


def test_resnet18_has_11_689_512_parameters_in_torchvision_shapes() -> None:
    with torch.device("meta"):
        reference = torchvision.models.resnet18()
    ours = resnet.build(RESNET18, device="meta")
    shapes = lambda m: {k: v.shape for k, v in m.state_dict().items()}  # noqa: E731
    assert shapes(ours) == shapes(reference)
    assert resnet.param_count(RESNET18) == built_params(RESNET18) == 11_689_512


@pytest.mark.parametrize(
    "cfg",
    [
        ResNetConfig(widths=(8, 16, 32, 64)),
        ResNetConfig(widths=(1, 1, 1, 1), layers=(1, 1, 1, 1), image_size=17),
        ResNetConfig(widths=(3, 5, 7, 2), layers=(1, 3, 2, 1), n_classes=3, image_size=33),
        ResNetConfig(widths=(4, 8, 8, 16), layers=(2, 1, 1, 2), image_size=64),
    ],
    ids=str,
)
def test_flops_match_flop_counter(cfg: ResNetConfig) -> None:
    batch_size = 2
    model = resnet.build(cfg)
    x, y = resnet.sample_batch(cfg, batch_size)
    with FlopCounterMode(display=False) as forward:
        model(x)
    with FlopCounterMode(display=False) as train:
        F.cross_entropy(model(x), y).backward()
    assert forward.get_total_flops() == resnet.forward_flops_per_sample(cfg) * batch_size
    assert train.get_total_flops() == resnet.train_flops_per_sample(cfg) * batch_size


def test_resnet18_forward_flops_at_224_match_torchvisions_1_81_gflops() -> None:
    cfg = ResNetConfig(n_classes=1000, image_size=224)
    assert resnet.forward_flops_per_sample(cfg) == pytest.approx(2 * 1.81e9, rel=0.01)


def test_sizing_error_below_1e5_is_as_documented() -> None:
    assert resnet.param_count(resnet.config_for(1e4)) == pytest.approx(1e4, rel=0.015)
    for target in log_grid(4, 5, 41):
        assert resnet.param_count(resnet.config_for(target)) == pytest.approx(target, rel=0.05)


def test_sizing_ladder_includes_resnet18() -> None:
    assert resnet.config_for(resnet.param_count(ResNetConfig())) == ResNetConfig()


def test_pinned_layers_are_kept_and_width_fits_the_target() -> None:
    cfg = resnet.config_for(1e7, layers=(1, 2, 3, 1), n_classes=100)
    assert (cfg.layers, cfg.n_classes) == ((1, 2, 3, 1), 100)
    assert resnet.param_count(cfg) == pytest.approx(1e7, rel=0.02)


def test_pinned_widths_are_kept_and_depth_is_nearest_to_the_target() -> None:
    cfg = resnet.config_for(5e7, widths=(64, 128, 256, 512))
    assert cfg.widths == (64, 128, 256, 512)
    error = lambda depth: abs(resnet.param_count(replace(cfg, layers=(depth,) * 4)) - 5e7)  # noqa: E731
    depth = cfg.layers[0]
    assert error(depth) <= min(error(depth - 1), error(depth + 1))


def test_pinned_depth_and_width_return_the_config_as_is() -> None:
    fields = {"widths": (2, 4, 6, 8), "layers": (3, 1, 1, 1)}
    assert resnet.config_for(1e9, **fields) == ResNetConfig(**fields)


@pytest.mark.parametrize(
    "fields",
    [
        {"widths": (0, 1, 1, 1)},
        {"widths": (8, 8, 8)},
        {"layers": (2, 2, 0, 2)},
        {"n_classes": 0},
        {"image_size": 0},
    ],
    ids=str,
)
def test_invalid_configs_raise_config_error(fields: dict) -> None:
    with pytest.raises(ConfigError):
        ResNetConfig(**fields)
    with pytest.raises(ConfigError):
        resnet.config_for(1e6, **fields)


def test_sample_batch_gives_class_logits_and_a_finite_loss() -> None:
    cfg = ResNetConfig(widths=(4, 8, 8, 16), layers=(1, 1, 1, 1), n_classes=7)
    x, y = resnet.sample_batch(cfg, 4)
    out = resnet.build(cfg)(x)
    assert x.shape == (4, 3, 32, 32)
    assert out.shape == (4, 7)
    assert y.dtype == torch.int64
    assert torch.isfinite(F.cross_entropy(out, y))
