"""Activation checkpointing: each repeated block of a model recomputed in the backward pass.

A family declares its repeated blocks as ``CHECKPOINT_BLOCKS`` (the ``nn.Module`` types, one line
in its module); ``apply`` makes every such block of a built model run under non-reentrant
``torch.utils.checkpoint``, so that autograd keeps only each block's inputs through the forward
pass and recomputes the block's own activations when the backward pass reaches it. The module
tree, and so the ``state_dict``, stay as they are: the block's ``forward`` is wrapped in place.
Families without repeated blocks (an MLP's layers, the small CNN) cannot be checkpointed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from types import ModuleType
from typing import Any

from torch import nn
from torch.utils.checkpoint import checkpoint

from scaling_bench.models import family


def block_types(family_name: str) -> tuple[type[nn.Module], ...]:
    return tuple(getattr(family(family_name), "CHECKPOINT_BLOCKS", ()))


def skip_reason(family_name: str, mode: str) -> str | None:
    """Why ``mode`` cannot apply to ``family_name`` (None: it can)."""
    if mode != "none" and not block_types(family_name):
        return f"--activation-checkpointing {mode}: the {family_name} family has no repeated blocks"
    return None


def blocks_of(model: nn.Module, family_name: str) -> list[nn.Module]:
    """The blocks of ``model`` that checkpointing recomputes, in forward order."""
    types = block_types(family_name)
    return [m for m in model.modules() if isinstance(m, types)]


def _recomputed(forward: Callable, preserve_rng_state: bool) -> Callable:
    @functools.wraps(forward)
    def run(*args: object, **kwargs: Any) -> object:
        return checkpoint(
            forward, *args, use_reentrant=False, preserve_rng_state=preserve_rng_state, **kwargs
        )

    return run


def apply(
    model: nn.Module,
    fam: ModuleType | str,
    mode: str = "full",
    preserve_rng_state: bool | None = None,
) -> nn.Module:
    """``model`` with each of its family's blocks recomputed in backward (``mode`` ``full``).

    Each block keeps the RNG state for its recomputation, as ``checkpoint`` does by default;
    on the meta device there is none to keep, unless ``preserve_rng_state`` says otherwise (the
    planner's replay, which counts the state's bytes as a real run holds them)."""
    if mode == "none":
        return model
    name = fam if isinstance(fam, str) else fam.__name__.rsplit(".", 1)[-1]
    if reason := skip_reason(name, mode):
        raise ValueError(reason)
    if preserve_rng_state is None:
        preserve_rng_state = not next(model.parameters()).is_meta
    for block in blocks_of(model, name):
        block.forward = _recomputed(block.forward, preserve_rng_state)
    return model
