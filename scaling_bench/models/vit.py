"""Vision Transformer (torchvision's ``VisionTransformer``), width and depth scaled.

Sizing rule: a ladder over depth ``L = n_layer`` and width rung ``k``, with
``n_head = max(1, L // 2)`` and ``d_model = k·n_head``. Depth ``L`` holds the widths up to
``d_model ≈ 64·L`` (ViT-B's aspect ratio: 12 layers, width 768), so the head dimension grows to
128 at the widest config of a depth. A rung changes the count by about ``2·n_head/d_model`` of
itself. The nearest rung is within 1.6% of any target from 1e5 to 1e10 (the steps are coarsest
near 1e5, where ``d_model`` is about 60 with one head); below 1e5 the steps grow as ``d_model``
shrinks: within 4% from 1e4 to 1e5, 2.8% at 1e4 itself.

Pinning ``n_layer`` or ``d_model`` through the overrides leaves sizing only the other knob. An
unpinned ``n_head`` is the largest divisor of ``d_model`` up to ``max(1, L // 2)`` (it does not
change the count); ``n_head`` pinned alone makes the width rungs multiples of it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

import torch
from torch import nn

from scaling_bench.core.errors import ConfigError
from scaling_bench.models.batches import image_batch, image_shape
from scaling_bench.models.sizing import fit_free_knobs

DEFAULT_BATCH_SIZE = 128
INPUT = "image"  # the kind of input it takes: which datasets can feed it
#: The config field that repeats identical blocks: activations grow linearly in it.
DEPTH_FIELD = "n_layer"


def __getattr__(name: str) -> object:
    """``CHECKPOINT_BLOCKS``, what --activation-checkpointing recomputes, from torchvision when
    asked: importing it costs 1.5 s, which sizing and a cached plan do not need."""
    if name == "CHECKPOINT_BLOCKS":
        from torchvision.models.vision_transformer import EncoderBlock

        return (EncoderBlock,)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class ViTConfig:
    n_layer: int = 6
    d_model: int = 384
    n_head: int = 6
    mlp_ratio: int = 4
    patch_size: int = 4
    image_size: int = 32
    n_classes: int = 10

    def __post_init__(self) -> None:
        check_fields(vars(self))


Config = ViTConfig


def check_fields(values: Mapping[str, object]) -> None:
    """The config's rules on whichever of its fields ``values`` holds: all of them at birth, the
    pinned ones before sizing. The sizing rule derives fields from the pinned ones (``d_model``
    from ``n_head``), so a bad value must be caught, and named, as the user set it."""
    for name in ("n_layer", "d_model", "n_head", "mlp_ratio", "patch_size", "n_classes"):
        if name in values and values[name] < 1:
            raise ConfigError(f"{name}={values[name]} must be at least 1")
    if "d_model" in values and "n_head" in values and values["d_model"] % values["n_head"]:
        raise ConfigError(f"d_model={values['d_model']} is not divisible by "
                          f"n_head={values['n_head']}")  # fmt: skip
    if "image_size" in values and "patch_size" in values:
        image, patch = values["image_size"], values["patch_size"]
        if image < 1 or image % patch:
            raise ConfigError(
                f"image_size={image} is not a positive multiple of patch_size={patch}"
            )


def _n_patches(cfg: ViTConfig) -> int:
    return (cfg.image_size // cfg.patch_size) ** 2


def param_count(cfg: ViTConfig) -> int:
    """Patch embedding, class token, position embedding, blocks, final norm and classifier.

    A block holds two LayerNorms (4d), the fused QKV and output projections (4d² + 4d) and the
    MLP (2·d·m + m + d).
    """
    d, m = cfg.d_model, cfg.mlp_ratio * cfg.d_model
    patch_embedding = 3 * cfg.patch_size**2 * d + d
    tokens = (1 + _n_patches(cfg) + 1) * d  # class token and one position per token
    block = 4 * d * d + 2 * d * m + 9 * d + m
    return patch_embedding + tokens + cfg.n_layer * block + 2 * d + (d + 1) * cfg.n_classes


def _patch_and_total_flops(cfg: ViTConfig) -> tuple[int, int]:
    d, m = cfg.d_model, cfg.mlp_ratio * cfg.d_model
    seq_len = _n_patches(cfg) + 1
    patch = 2 * _n_patches(cfg) * d * 3 * cfg.patch_size**2
    projections = 2 * seq_len * (3 * d * d + d * d + 2 * d * m)
    attention = 2 * 2 * seq_len * seq_len * d  # Q·Kᵀ and A·V over all heads, dense
    classifier = 2 * d * cfg.n_classes  # on the class token only
    return patch, patch + cfg.n_layer * (projections + attention) + classifier


def forward_flops_per_sample(cfg: ViTConfig) -> int:
    """Patch conv, projections, dense (non-causal) attention and the classifier, 2·m·n·k each.

    On CPU, ``FlopCounterMode`` sees the attention matmuls only under the math SDPA backend: it
    has no formula for the fused CPU flash kernel and counts none of its FLOPs.
    """
    return _patch_and_total_flops(cfg)[1]


def train_flops_per_sample(cfg: ViTConfig) -> int:
    """Forward, then weight gradients for every layer and input gradients for all but the first.

    The input images do not require grad, so autograd skips the patch conv's input gradient.
    """
    patch, total = _patch_and_total_flops(cfg)
    return 3 * total - patch


def build(
    cfg: ViTConfig, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> nn.Module:
    from torchvision.models.vision_transformer import VisionTransformer

    with torch.device(device):
        model = VisionTransformer(
            image_size=cfg.image_size,
            patch_size=cfg.patch_size,
            num_layers=cfg.n_layer,
            num_heads=cfg.n_head,
            hidden_dim=cfg.d_model,
            mlp_dim=cfg.mlp_ratio * cfg.d_model,
            num_classes=cfg.n_classes,
        )
    return model.to(dtype=dtype)


sample_batch = image_batch
input_shape = image_shape


def _n_head(n_layer: int, d_model: int | None = None) -> int:
    """``max(1, n_layer // 2)`` heads, lowered to a divisor of ``d_model`` when it is given."""
    heads = max(1, n_layer // 2)
    if d_model is not None:
        heads = max(h for h in range(1, heads + 1) if d_model % h == 0)
    return heads


#: The fields the sizing rule sets; it leaves the others at their defaults or the overrides.
SIZED = ("n_layer", "d_model", "n_head")


def config_for(target_params: float, **overrides: object) -> ViTConfig:
    unsized = {k: v for k, v in vars(ViTConfig()).items() if k not in SIZED}
    check_fields(unsized | overrides)

    def heads(depth: int) -> int:
        if "n_head" in overrides:
            return overrides["n_head"]
        return _n_head(overrides.get("n_layer", depth), overrides.get("d_model"))

    def make(depth: int, width: int) -> ViTConfig:
        fields = {"n_layer": depth, "n_head": heads(depth), "d_model": width * heads(depth)}
        return replace(ViTConfig(), **(fields | overrides))

    depth, width = fit_free_knobs(
        lambda d, k: param_count(make(d, k)),
        target_params,
        lambda d: max(1, 64 * d // heads(d)),
        depth_pinned="n_layer" in overrides,
        width_pinned="d_model" in overrides,
    )
    return make(depth, width)
