import random
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
import torchvision
from sizes import log_grid
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from scaling_bench.core.errors import ConfigError
from scaling_bench.models import vit
from scaling_bench.models.vit import ViTConfig

VIT_B_16 = ViTConfig(
    n_layer=12, d_model=768, n_head=12, patch_size=16, image_size=224, n_classes=1000
)


def built_params(cfg: ViTConfig) -> int:
    return sum(p.numel() for p in vit.build(cfg, device="meta").parameters())


def random_configs(n: int) -> list[ViTConfig]:
    rng = random.Random(0)
    edge = [ViTConfig(n_layer=1, d_model=1, n_head=1, mlp_ratio=1, patch_size=1, image_size=1)]
    configs = []
    for _ in range(n):
        n_head, patch_size = rng.randint(1, 4), rng.randint(1, 8)
        configs.append(
            ViTConfig(
                n_layer=rng.randint(1, 4),
                d_model=n_head * rng.randint(1, 16),
                n_head=n_head,
                mlp_ratio=rng.randint(1, 4),
                patch_size=patch_size,
                image_size=patch_size * rng.randint(1, 6),
                n_classes=rng.randint(1, 20),
            )
        )
    return edge + configs


@pytest.mark.parametrize("cfg", random_configs(30), ids=str)
def test_param_count_matches_built_module(cfg: ViTConfig) -> None:
    assert vit.param_count(cfg) == built_params(cfg)


def test_vit_b_16_has_86_567_656_parameters_in_torchvision_shapes() -> None:
    with torch.device("meta"):
        reference = torchvision.models.vit_b_16()
    ours = vit.build(VIT_B_16, device="meta")
    shapes = lambda m: {k: v.shape for k, v in m.state_dict().items()}  # noqa: E731
    assert shapes(ours) == shapes(reference)
    assert vit.param_count(VIT_B_16) == built_params(VIT_B_16) == 86_567_656


@pytest.mark.parametrize(
    "cfg",
    [
        ViTConfig(n_layer=2, d_model=32, n_head=4),
        ViTConfig(n_layer=1, d_model=1, n_head=1, mlp_ratio=1, patch_size=32),
        ViTConfig(n_layer=3, d_model=12, n_head=3, mlp_ratio=2, patch_size=3, image_size=9),
    ],
    ids=str,
)
def test_flops_match_flop_counter(cfg: ViTConfig) -> None:
    """Under the math SDPA backend: FlopCounterMode does not see the fused CPU attention kernel."""
    batch_size = 2
    model = vit.build(cfg)
    x, y = vit.sample_batch(cfg, batch_size)
    with sdpa_kernel(SDPBackend.MATH):
        with FlopCounterMode(display=False) as forward:
            model(x)
        with FlopCounterMode(display=False) as train:
            F.cross_entropy(model(x), y).backward()
    assert forward.get_total_flops() == vit.forward_flops_per_sample(cfg) * batch_size
    assert train.get_total_flops() == vit.train_flops_per_sample(cfg) * batch_size


def test_sizing_error_below_1e5_is_as_documented() -> None:
    assert vit.param_count(vit.config_for(1e4)) == pytest.approx(1e4, rel=0.03)
    for target in log_grid(4, 5, 41):
        assert vit.param_count(vit.config_for(target)) == pytest.approx(target, rel=0.04)


def test_sizing_ladder_has_vit_b_width_at_12_layers() -> None:
    cfg = vit.config_for(vit.param_count(ViTConfig(n_layer=12, d_model=768, n_head=6)))
    assert (cfg.n_layer, cfg.d_model, cfg.n_head) == (12, 768, 6)


def test_pinned_depth_is_kept_and_width_fits_the_target() -> None:
    cfg = vit.config_for(1e7, n_layer=4, n_classes=100, patch_size=8)
    assert (cfg.n_layer, cfg.n_classes, cfg.patch_size) == (4, 100, 8)
    assert vit.param_count(cfg) == pytest.approx(1e7, rel=0.02)


def test_pinned_width_is_kept_and_heads_divide_it() -> None:
    cfg = vit.config_for(5e7, d_model=510)
    error = lambda depth: abs(vit.param_count(replace(cfg, n_layer=depth)) - 5e7)  # noqa: E731
    assert cfg.d_model == 510
    assert error(cfg.n_layer) <= min(error(cfg.n_layer - 1), error(cfg.n_layer + 1))
    assert cfg.d_model % cfg.n_head == 0


def test_pinned_heads_make_width_a_multiple_of_them() -> None:
    cfg = vit.config_for(3e6, n_head=12)
    assert cfg.n_head == 12
    assert cfg.d_model % 12 == 0
    assert vit.param_count(cfg) == pytest.approx(3e6, rel=0.05)


def test_pinned_depth_and_width_return_the_config_as_is() -> None:
    fields = {"n_layer": 3, "d_model": 96, "n_head": 8}
    assert vit.config_for(1e9, **fields) == ViTConfig(**fields)


@pytest.mark.parametrize(
    "fields",
    [
        {"d_model": 0},
        {"n_layer": 0},
        {"d_model": 100, "n_head": 3},
        {"image_size": 30, "patch_size": 4},
        {"mlp_ratio": 0},
        {"n_classes": 0},
    ],
    ids=str,
)
def test_invalid_configs_raise_config_error(fields: dict) -> None:
    with pytest.raises(ConfigError):
        ViTConfig(**fields)
    with pytest.raises(ConfigError):
        vit.config_for(1e6, **fields)


def test_sample_batch_gives_class_logits_and_a_finite_loss() -> None:
    cfg = ViTConfig(n_layer=1, d_model=16, n_head=2, n_classes=7)
    x, y = vit.sample_batch(cfg, 4)
    out = vit.build(cfg)(x)
    assert x.shape == (4, 3, 32, 32)
    assert out.shape == (4, 7)
    assert y.dtype == torch.int64
    assert torch.isfinite(F.cross_entropy(out, y))
