"""A ``channels_last`` axis: the model's 4-D weights in channels-last memory order, a grid
dimension (oneDNN's and cuDNN's convolutions then run channels-last too).

The axis recipe of docs/architecture.md: two edits and no new file. ``ENTRY`` goes into ``AXES``
(``config/axes.py``) before ``overrides``; ``use``'s one line goes into ``CaseSetup.build``
(``workloads/setup.py``) after the model is converted to its precision.
``tests/test_doc_recipes.py`` makes both edits in a copy of the package and runs a grid of both
values.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from scaling_bench.config.axes import Axis

ENTRY = Axis(
    "channels_last",
    bool,
    False,
    "channels-last memory order for the model's 4-D weights: false, true or both",
    flag="--channels-last",
    key="channels_last",
    env="SCALING_BENCH_CHANNELS_LAST",
    multi=True,
    token=lambda c: "channels-last" if c.channels_last else None,
    group="recipe",
)


def use(model: nn.Module, case: Any) -> nn.Module:
    return model.to(memory_format=torch.channels_last) if case.channels_last else model
