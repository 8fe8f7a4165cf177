"""One record from several worker processes of the same case, as asv's ``processes`` does.

Samples inside one process share its state (its memory layout, the threads' placement, the
machine's load while it ran), so a test over one process's samples understates how much a
figure moves from run to run. With ``--processes K`` each case runs in K workers, one after
another; the record keeps every sample and, per metric, each process's value in
``process_values``. ``compare`` tests those per-process values against each other, which is
what makes the gate hold on a noisy machine.

A process that did not end ``ok`` decides the record: its status and error (prefixed with which
process it was), with the figures of the processes that finished.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from scaling_bench.core.errors import UserError
from scaling_bench.core.stats import summarize


def combine_processes(fields: Sequence[dict[str, Any]], planned: int) -> dict[str, Any]:
    """The record fields of one case from each of its processes' fields, in order, of the
    ``planned`` processes (the runs stops a case at its first failed process)."""
    if planned == 1:
        return dict(fields[0])
    ok = [f for f in fields if f.get("status", "ok") == "ok"]
    failed = next(((i, f) for i, f in enumerate(fields) if f.get("status", "ok") != "ok"), None)
    base = dict(failed[1] if failed else fields[0])
    if failed:
        base["error"] = f"process {failed[0] + 1} of {planned}: {base.get('error') or ''}"
    if ok:
        base["metrics"] = _metrics([f.get("metrics") or {} for f in ok])
    return base


def _metrics(per_process: list[dict[str, dict]]) -> dict[str, dict]:
    """Each metric every process has: its samples pooled, each process's value kept; a metric
    without samples takes the median of the processes' values (of those that have one: a null
    value, which the schema allows for a figure a process could not give, is left out)."""
    names = [n for n in per_process[0] if all(n in m for m in per_process)]
    out = {}
    for name in names:
        metrics = [m[name] for m in per_process]
        values = [m["value"] for m in metrics]
        first = metrics[0]
        if all("samples" in m for m in metrics):
            pooled = [s for m in metrics for s in m["samples"]]
            merged = first | summarize(pooled, first.get("unit", ""))
        else:
            given = [v for v in values if v is not None]
            value = statistics.median(given) if given else None
            merged = {k: v for k, v in first.items() if k not in ("median", "p10", "p90", "iqr")}
            merged |= {"value": value, "n": sum(m.get("n", 1) for m in metrics)}
        if any("settled" in m for m in metrics):
            merged["settled"] = all(m.get("settled", True) for m in metrics)
        if any("busy" in m for m in metrics):  # timed on a busy machine in any process
            merged["busy"] = any(m.get("busy") is True for m in metrics)
        if "settled_within" in first:
            merged["settled_within"] = f"{len(metrics)} processes"
        out[name] = merged | {"process_values": values}
    return out


def check_parallel(parallel: int, device: str, strategy: str | None) -> None:
    """``--parallel N`` pins each of N slots to one GPU: it needs N GPUs on the node and one
    process per case (torchrun's ranks take the GPUs themselves).

    ``device`` is the grid's device as resolved (``grid.resolve_device``): ``auto``, ``cuda`` and
    ``cuda:0`` all resolve to ``cuda:0``, which is each slot's own GPU, since a slot's workers see
    only theirs (``CUDA_VISIBLE_DEVICES``). A GPU past the first (``cuda:1``) is one GPU named,
    which no slot but one has."""
    if parallel == 1:
        return
    import torch

    if device != "cuda:0":
        raise UserError(
            f"--parallel {parallel}: runs one case per GPU, with --device cuda (the "
            f"grid's device is {device})"
        )
    if strategy is not None:
        raise UserError(f"--parallel {parallel}: cannot be combined with --strategy {strategy}")
    found = torch.cuda.device_count()
    if found < parallel:
        raise UserError(f"--parallel {parallel}: this node has {found} CUDA devices")
