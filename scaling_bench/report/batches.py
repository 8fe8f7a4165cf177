"""The report's batch-size plot: throughput and peak memory against the batch size, one line per
case of the run that was measured at two batch sizes or more (``--batch-sizes 1,8,64,max``).

Throughput is measured only (nothing predicts a step's time); memory is drawn measured (markers)
beside its prediction (dotted), under the measured peak's name the workload predicts. A ``max``
case sits at the batch its search settled on. Nothing measured, nothing drawn. The lines of one
series (every size of it) share a colour, an artist and a legend entry: a grid of thousands of
cases draws in time linear in its records, with a legend that stays readable.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import replace

from matplotlib.figure import Figure

from scaling_bench.analysis.fits import paired_metrics, throughput_metric, timed_workloads
from scaling_bench.config.case import Case
from scaling_bench.report.plotting import bounded_legend, joined
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


def _by_series(lines: dict[str, list[tuple[int, dict]]]) -> dict[str, list[list[tuple[int, dict]]]]:
    """The lines grouped by their series (the case without batch and size): one colour and one
    legend entry each, however many sizes the grid has."""
    series: dict[str, list[list[tuple[int, dict]]]] = defaultdict(list)
    for points in lines.values():
        case = replace(Case.from_dict(points[0][1]["case"]), batch_size=None)
        series[case.series_id].append(points)
    return dict(sorted(series.items()))


def batch_figure(groups: dict[str, list[dict]], workload: str) -> Figure | None:
    series = _by_series(_lines(groups, workload))
    if not series:
        return None
    fig = Figure(figsize=(10.4, 3.9), layout="constrained")
    rate_ax, memory_ax = fig.subplots(1, 2)
    rate_name = throughput_metric(workload)
    for i, (name, lines) in enumerate(series.items()):
        colour = f"C{i % 10}"
        rates = [[(b, _value(r, "metrics", rate_name)) for b, r in points] for points in lines]
        rate_ax.plot(*joined(rates), "o-", color=colour, label=name)
        paired = {s.name for points in lines for _, r in points for s in paired_metrics(r)}
        for metric in sorted(n for n in paired if n.startswith(f"{workload}_")):
            rows = [
                [
                    (b, m, p)
                    for b, r in points
                    if (m := _value(r, "metrics", metric)) and (p := _value(r, "predicted", metric))
                ]
                for points in lines
            ]
            if not any(rows):
                continue
            memory_ax.plot(*joined([[(b, m) for b, m, _ in row] for row in rows]), "o-",
                           color=colour)  # fmt: skip
            memory_ax.plot(*joined([[(b, p) for b, _, p in row] for row in rows]), ":",
                           color=colour)  # fmt: skip
    rate_ax.set(
        xscale="log",
        yscale="log",
        xlabel="batch size",
        ylabel="samples/s",
        title=f"{metric_label(rate_name)} against batch size",
    )
    memory_ax.set(xscale="log", yscale="log", xlabel="batch size", ylabel="bytes",
                  title=f"{workload} peak memory (dotted: predicted)")  # fmt: skip
    bounded_legend(rate_ax, "series", "x-small")
    return fig


def batch_plots(groups: dict[str, list[dict]], styles: dict) -> list[tuple]:
    """``(anchor, title, figure, missing)`` per timed workload measured at several batches."""
    return [
        (f"{w}-batch", f"{w}: throughput and memory against batch size", fig, MISSING)
        for w in timed_workloads()
        if (fig := batch_figure(groups, w)) is not None
    ]
