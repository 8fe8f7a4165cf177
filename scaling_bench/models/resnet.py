"""ResNet with basic blocks (torchvision's ``ResNet`` and ``BasicBlock``), width and depth scaled.

torchvision hard-codes the stem and the stage widths 64/128/256/512; ``WidthScaledResNet``
(``resnet_net``) takes them from the config instead, so resnet18 is ``widths=(64, 128, 256, 512)``,
``layers=(2, 2, 2, 2)``.

Sizing rule: a ladder over depth ``L`` (``layers=(L, L, L, L)``) and width rung ``k``
(``widths=(k/8, k/4, k/2, k)``, each rounded half up and at least 1). Depth ``L`` holds the widths
up to ``max_width(L) = 256·L``, so resnet18's width ends the ``L=2`` segment. A rung moves ``k``
and at most one narrower width, a step of about ``2.3/k`` of the count. The nearest rung is within
1.6% of any target from 1e5 to 1e10 (the steps are coarsest near 1e5, where ``k`` is about 70);
below 1e5 they grow as ``k`` shrinks: within 5% from 1e4 to 1e5, 1.1% at 1e4 itself. Pinning
``layers`` or ``widths`` through the overrides leaves sizing only the other knob.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from scaling_bench.core.errors import ConfigError
from scaling_bench.models.batches import image_batch, image_shape
from scaling_bench.models.sizing import fit_free_knobs

DEFAULT_BATCH_SIZE = 128
INPUT = "image"  # the kind of input it takes: which datasets can feed it
#: The config field that repeats identical blocks: activations grow linearly in it.
DEPTH_FIELD = "layers"


def __getattr__(name: str) -> object:
    """``CHECKPOINT_BLOCKS``, what --activation-checkpointing recomputes, from torchvision when
    asked: importing it costs 1.5 s, which sizing and a cached plan do not need."""
    if name == "CHECKPOINT_BLOCKS":
        from torchvision.models.resnet import BasicBlock

        return (BasicBlock,)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class ResNetConfig:
    widths: tuple[int, int, int, int] = (64, 128, 256, 512)
    layers: tuple[int, int, int, int] = (2, 2, 2, 2)
    n_classes: int = 10
    image_size: int = 32

    def __post_init__(self) -> None:
        for name in ("widths", "layers"):
            values = getattr(self, name)
            if len(values) != 4 or min(values) < 1:
                raise ConfigError(f"{name}={values} must be four integers, each at least 1")
        for name in ("n_classes", "image_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)} must be at least 1")


Config = ResNetConfig


def _halve(size: int) -> int:
    """Output size of every stride-2 layer here (7x7 pad 3, 3x3 pad 1, 1x1 pad 0, max-pool)."""
    return (size - 1) // 2 + 1


def _convs(cfg: ResNetConfig) -> list[tuple[int, int, int, int]]:
    """``(in_channels, out_channels, kernel, output_size)`` of every conv, stem first.

    Every conv is bias-free and followed by a BatchNorm, so this list drives both the parameter
    count and the FLOPs.
    """
    size = _halve(cfg.image_size)
    convs = [(3, cfg.widths[0], 7, size)]
    size = _halve(size)
    c_in = cfg.widths[0]
    for stage, (width, blocks) in enumerate(zip(cfg.widths, cfg.layers, strict=True)):
        if stage:
            size = _halve(size)
            convs.append((c_in, width, 1, size))
        convs.append((c_in, width, 3, size))
        convs.append((width, width, 3, size))
        convs += [(width, width, 3, size)] * (2 * (blocks - 1))
        c_in = width
    return convs


def param_count(cfg: ResNetConfig) -> int:
    """Conv weights and BatchNorm affine parameters, plus the classifier."""
    convs = sum(c_in * c_out * k * k + 2 * c_out for c_in, c_out, k, _ in _convs(cfg))
    return convs + (cfg.widths[3] + 1) * cfg.n_classes


def _stem_and_total_flops(cfg: ResNetConfig) -> tuple[int, int]:
    per_conv = [2 * c_out * size * size * c_in * k * k for c_in, c_out, k, size in _convs(cfg)]
    return per_conv[0], sum(per_conv) + 2 * cfg.widths[3] * cfg.n_classes


def forward_flops_per_sample(cfg: ResNetConfig) -> int:
    """Convolutions (2·output elements·in_channels·k²) and the classifier matmul."""
    return _stem_and_total_flops(cfg)[1]


def train_flops_per_sample(cfg: ResNetConfig) -> int:
    """Forward, then weight gradients for every layer and input gradients for all but the stem.

    The input images do not require grad, so autograd skips the stem's input gradient.
    """
    stem, total = _stem_and_total_flops(cfg)
    return 3 * total - stem


def build(
    cfg: ResNetConfig, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> nn.Module:
    from scaling_bench.models.resnet_net import WidthScaledResNet

    with torch.device(device):
        model = WidthScaledResNet(cfg)
    return model.to(dtype=dtype)


sample_batch = image_batch
input_shape = image_shape


def _widths(k: int) -> tuple[int, int, int, int]:
    """``k/8, k/4, k/2, k`` rounded half up: a rung then moves at most two of the four widths.

    (Python's ``round`` rounds half to even, which can move three at once.)
    """

    def scaled(divisor: int) -> int:
        return max(1, (k + divisor // 2) // divisor)

    return scaled(8), scaled(4), scaled(2), k


def config_for(target_params: float, **overrides: object) -> ResNetConfig:
    base = replace(ResNetConfig(), **overrides)

    def make(depth: int, width: int) -> ResNetConfig:
        return replace(
            base,
            layers=overrides.get("layers", (depth,) * 4),
            widths=overrides.get("widths", _widths(width)),
        )

    depth, width = fit_free_knobs(
        lambda d, k: param_count(make(d, k)),
        target_params,
        lambda d: 256 * d,
        depth_pinned="layers" in overrides,
        width_pinned="widths" in overrides,
    )
    return make(depth, width)
