"""One record's metrics from every rank's, each combined as its metric spec says.

A ``max`` (or ``min``) metric is the whole metric of the rank with the largest (smallest) value:
the slowest rank's step time, the largest rank's memory peak. A ``sum`` or ``mean`` metric keeps
rank 0's shape with the combined value. Every metric keeps each rank's value in ``per_rank``.
Derived figures (throughput, MFU, bandwidths) are computed afterwards from the combined ones.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from scaling_bench.config.case import Case
from scaling_bench.core.metrics import find
from scaling_bench.core.stats import scaled
from scaling_bench.workloads.base import with_step


def combine(per_rank: list[dict[str, dict]]) -> dict[str, dict]:
    """Metrics every rank measured; one that some rank lacks (an energy window that closed on
    one rank only) has no whole value and is left out, not combined from a part."""
    metrics: dict[str, dict] = {}
    for name in (n for n in per_rank[0] if all(n in m for m in per_rank)):
        values = [m[name]["value"] for m in per_rank]
        spec = find(name)
        how = spec.reduce if spec else "max"
        if how in ("max", "min"):
            pick = max if how == "max" else min
            chosen = pick(range(len(values)), key=values.__getitem__)
            metric = dict(per_rank[chosen][name])
        else:
            total = sum(values) if how == "sum" else statistics.fmean(values)
            metric = {k: v for k, v in per_rank[0][name].items() if k != "samples"}
            metric |= {"value": total} | ({"median": total} if "median" in metric else {})
        metrics[name] = metric | {"per_rank": values}
    return metrics


def with_scaling_efficiency(
    records: list[dict[str, Any]],
) -> Callable[[Case, dict[str, Any]], dict[str, Any]]:
    """A runner ``derive`` hook: add ``{workload}_scaling_efficiency`` to a distributed case =
    global samples/s ÷ (world size × samples/s of the same case on one process), where ``records``
    hold that case ``ok`` (its id is this case's without the distributed suffix)."""
    single_process = {r["case_id"]: r for r in records if r["status"] == "ok"}

    def derive(case: Case, fields: dict[str, Any]) -> dict[str, Any]:
        base_id = replace(case, nproc_per_node=1, nnodes=1, strategy=None).case_id
        base = single_process.get(base_id)
        if base is None or fields.get("status", "ok") != "ok":
            return fields
        metrics = dict(fields["metrics"])
        for w in with_step():
            mine = metrics.get(f"{w.name}_samples_per_s")
            theirs = base["metrics"].get(f"{w.name}_samples_per_s")
            if mine and theirs:
                ideal = case.world_size * theirs["value"]
                efficiency = scaled(mine, 1 / ideal, "fraction")
                metrics[f"{w.name}_scaling_efficiency"] = efficiency | {"reference": base_id}
        return fields | {"metrics": metrics}

    return derive
