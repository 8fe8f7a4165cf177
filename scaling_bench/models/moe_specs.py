"""What moe's own figures mean (``moe.metrics`` reads them off the model), declared without torch
so that readers of records know them without importing the family (``workloads/family_metrics``).
"""

from __future__ import annotations

from scaling_bench.core.metrics import LOWER, MetricSpec

#: What ``moe.metrics`` records, before a workload's prefix.
METRIC_SPECS = (
    MetricSpec("expert_load_imbalance", "ratio", LOWER, gated=False,
               label="tokens per expert, max/mean (worst layer; 1: balanced)"),
)  # fmt: skip
