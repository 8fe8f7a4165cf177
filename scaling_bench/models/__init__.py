"""The model families, by name.

Each family is one module that provides: ``Config`` (a frozen dataclass validated in
``__post_init__``), ``DEFAULT_BATCH_SIZE``, ``param_count(cfg)`` (exact, closed form),
``forward_flops_per_sample(cfg)`` and ``train_flops_per_sample(cfg)`` (matmul and convolution
FLOPs, 2·m·n·k, as ``torch.utils.flop_counter`` counts them), ``build(cfg, device, dtype)``,
``sample_batch(cfg, batch_size, device, dtype)`` returning ``(inputs, targets)`` for a
cross-entropy loss, and ``config_for(target_params, **overrides)`` (the sizing rule).
``INPUT`` names the kind of input it takes (``"vector"``, ``"image"``: with ``input_shape(cfg)``
and a ``n_classes`` field; ``"tokens"``: with ``vocab_size`` and ``seq_len`` fields), which
decides the datasets that can feed it. Sequence families also provide ``tokens_per_sample(cfg)``;
decoders that serve with a KV cache ``kv_cache``, ``kv_cache_bytes``, ``context_length``,
``prefill`` and ``decode_step`` (``models/attention.py``). A family may declare figures of its own
that the timed workloads record after their steps: ``metrics(model)``, with their specs
(``METRIC_SPECS``) in a module of their own, ``{family}_specs.py``, which imports no torch
(``workloads/family_metrics.py``; moe's load imbalance).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, cast

from scaling_bench.core.errors import UserError
from scaling_bench.models.protocol import Decoder, Family

FAMILY_NAMES = ("mlp", "cnn", "resnet", "vit", "gpt", "llama", "moe")


def family(name: str) -> Family:
    """The family module for ``name``; a clear error for a name we do not know."""
    if name not in FAMILY_NAMES:
        raise UserError(f"unknown family {name!r}; choose from {', '.join(FAMILY_NAMES)}")
    return cast(Family, importlib.import_module(f"scaling_bench.models.{name}"))


def tokens_per_sample(name: str, cfg: object) -> int | None:
    """Tokens in one sample for sequence families, ``None`` for the others."""
    fn = getattr(family(name), "tokens_per_sample", None)
    return fn(cfg) if fn else None


if TYPE_CHECKING:  # every family module is a Family: mypy checks each against the protocol
    from scaling_bench.models import cnn, gpt, llama, mlp, moe, resnet, vit

    _FAMILIES: tuple[Family, ...] = (mlp, cnn, resnet, vit, gpt, llama, moe)
    _DECODERS: tuple[Decoder, ...] = (gpt, llama, moe)
