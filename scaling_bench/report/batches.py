"""The report's batch-size plot: throughput and peak memory against the batch size, one line per
case of the run that was measured at two batch sizes or more (``--batch-sizes 1,8,64,max``).

Throughput is measured only (nothing predicts a step's time); memory is drawn measured (markers)
beside its prediction (dotted), under the measured peak's name the workload predicts. A ``max``
case sits at the batch its search settled on. Nothing measured, nothing drawn.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import replace

from matplotlib.figure import Figure

from scaling_bench.analysis.fits import paired_metrics, throughput_metric, timed_workloads
from scaling_bench.config.case import Case
from scaling_bench.report.tables import metric_label

MISSING = "No case was measured at two batch sizes or more (--batch-sizes 8,64,max)."


def _value(record: dict, section: str, name: str) -> float | None:
    m = record[section].get(name)
    value = m.get("value") if isinstance(m, dict) else None
    return value if isinstance(value, int | float) else None


def batch_of(record: dict, workload: str) -> int | None:
    """The batch a record's ``workload`` ran at: throughput × step time (exact: one is the other
    scaled by the batch), so a family's default and a ``max`` batch read alike; None where the
    two give no batch (one missing, or a hand-edited figure whose product overflows)."""
    rate = _value(record, "metrics", throughput_metric(workload))
    step = _value(record, "metrics", f"{workload}_step_s")
    batch = rate * step if rate and step else math.nan
    return round(batch) if math.isfinite(batch) else None


def _lines(groups: dict[str, list[dict]], workload: str) -> dict[str, list[tuple[int, dict]]]:
    """Records by their case without its batch size, each with its batch; two batches or more."""
    lines: dict[str, list[tuple[int, dict]]] = defaultdict(list)
    for record in (r for g in groups.values() for r in g):
        if (batch := batch_of(record, workload)) is not None:
            case = replace(Case.from_dict(record["case"]), batch_size=None)
            lines[case.case_id].append((batch, record))
    return {k: sorted(v, key=lambda p: p[0]) for k, v in lines.items() if len(v) > 1}


def batch_figure(groups: dict[str, list[dict]], workload: str) -> Figure | None:
    lines = _lines(groups, workload)
    if not lines:
        return None
    fig = Figure(figsize=(10.4, 3.9), layout="constrained")
    rate_ax, memory_ax = fig.subplots(1, 2)
    for i, (line, points) in enumerate(sorted(lines.items())):
        colour = f"C{i % 10}"
        batches = [b for b, _ in points]
        rates = [_value(r, "metrics", throughput_metric(workload)) for _, r in points]
        rate_ax.plot(batches, rates, "o-", color=colour, label=line)
        paired = {s.name for _, r in points for s in paired_metrics(r)}
        for name in sorted(n for n in paired if n.startswith(f"{workload}_")):
            rows = [
                (b, m, p)
                for b, r in points
                if (m := _value(r, "metrics", name)) and (p := _value(r, "predicted", name))
            ]
            if rows:
                xs, measured, predicted = zip(*rows, strict=True)
                memory_ax.plot(xs, measured, "o-", color=colour, label=line)
                memory_ax.plot(xs, predicted, ":", color=colour)
    rate_ax.set(
        xscale="log",
        yscale="log",
        xlabel="batch size",
        ylabel="samples/s",
        title=f"{metric_label(throughput_metric(workload))} against batch size",
    )
    memory_ax.set(xscale="log", yscale="log", xlabel="batch size", ylabel="bytes",
                  title=f"{workload} peak memory (dotted: predicted)")  # fmt: skip
    rate_ax.legend(fontsize="x-small")
    return fig


def batch_plots(groups: dict[str, list[dict]], styles: dict) -> list[tuple]:
    """``(anchor, title, figure, missing)`` per timed workload measured at several batches."""
    return [
        (f"{w}-batch", f"{w}: throughput and memory against batch size", fig, MISSING)
        for w in timed_workloads()
        if (fig := batch_figure(groups, w)) is not None
    ]
