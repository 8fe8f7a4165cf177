"""Figures a family reads off its own model after a timed workload's steps.

A family module may declare ``metrics(model) -> dict[str, dict]`` (figures as the model stands
after the last forward: moe's tokens per expert and their imbalance), and their meanings, before a
prefix, as ``METRIC_SPECS`` in ``models/{family}_specs.py``: a module of their own without torch,
so that the catalog of what records hold (``workloads/catalog.py``) imports no family. Each timed
workload records them under its own prefix (``train_expert_load_imbalance``) once its timed block
ends, so that the routing it reports is the routing its steps ran with and no workload names a
family.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING

from scaling_bench.core.metrics import MetricSpec, prefixed
from scaling_bench.models import FAMILY_NAMES, family

if TYPE_CHECKING:
    from torch import nn


def specs(prefix: str) -> tuple[MetricSpec, ...]:
    """Every family's declared figures under ``prefix``: a workload declares them all, since
    which family a case has is known only when it runs."""
    own = (s for name in FAMILY_NAMES for s in _declared(name))
    return prefixed(prefix, dict.fromkeys(own))


def _declared(family_name: str) -> tuple[MetricSpec, ...]:
    module = f"scaling_bench.models.{family_name}_specs"
    if importlib.util.find_spec(module) is None:
        return ()
    return importlib.import_module(module).METRIC_SPECS


def read(prefix: str, family_name: str, model: nn.Module) -> dict[str, dict]:
    """The family's figures of ``model`` under ``prefix``; none where it declares none."""
    metrics = getattr(family(family_name), "metrics", None)
    if metrics is None:
        return {}
    return {f"{prefix}_{name}": m for name, m in metrics(model).items()}
