"""The report's plots, drawn on bare ``matplotlib.figure.Figure`` objects (the Agg canvas, no
pyplot state), so reports can be built in any process or thread.

Each plot puts theory beside measurement: dotted lines are predictions (throughput at the FLOP/s of
the series' largest case, predicted memory and checkpoint bytes), dashed lines are fitted power
laws, and the ratio panels shade the ±25% band outside which a case is flagged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from scaling_bench.analysis.compare import Comparison
from scaling_bench.analysis.fits import (
    ScalingFit,
    behaviour_specs,
    flops_per_sample,
    own_model_workloads,
    paired_metrics,
    throughput_metric,
    timed_workloads,
)
from scaling_bench.analysis.theory import THEORY_TOLERANCE, flops_rate
from scaling_bench.core.errors import UserError
from scaling_bench.core.metrics import spec
from scaling_bench.predict.phases import PHASES
from scaling_bench.report.batches import batch_plots
from scaling_bench.report.plotting import (
    bounded_legend,
    bytes_axis,
    figure_of_panels,
    measured_names,
    plain_ticks,
    plot_metric,
    png_base64,
    png_bytes,
    series_points,
    series_styles,
    shown_metric,
    unit_label,
)
from scaling_bench.report.serving import serving_plots
from scaling_bench.report.tables import machine_line, metric_label
from scaling_bench.workloads.base import declarations
from scaling_bench.workloads.catalog import LOSS_UNIT

LINESTYLES = ("-", "--", "-.", (0, (3, 1, 1, 1, 1, 1)))
LINESTYLE_NAMES = ("solid", "dashed", "dash-dot", "dash-dot-dot")
NOTHING_MEASURED = "Nothing measured for this plot."


def _no_behaviour() -> str:
    """How to get the plots of workloads that train their own models (the convergence study)."""
    names = ",".join(w.name for w in own_model_workloads())
    return f"run with --workloads {names}."


def _throughput_figure(groups: dict, styles: dict) -> Figure | None:
    """Samples/s against N, with time ∝ FLOPs drawn at the FLOP/s of the series' largest case."""
    present = [w for w in timed_workloads() if measured_names(groups, [throughput_metric(w)])]
    if not present:
        return None
    fig, axes = figure_of_panels(len(present))
    for ax, w in zip(axes, present, strict=True):
        metric = spec(throughput_metric(w))
        for series, group in groups.items():
            plot_metric(ax, group, metric.name, styles[series], series)
            rate = flops_rate(group, w)
            xs, flops = series_points(group, lambda r, w=w: flops_per_sample(r, w))
            if rate and xs:
                ax.plot(xs, [rate / f for f in flops], ":", color=styles[series]["color"])
        ax.set(
            xscale="log",
            yscale="log",
            xlabel="parameters",
            ylabel=metric.unit,
            title=f"{metric_label(metric.name)} (dotted: time ∝ FLOPs)",
        )
        bounded_legend(ax)
    return fig


def _mfu_figure(groups: dict, styles: dict) -> Figure | None:
    present = [w for w in timed_workloads() if measured_names(groups, [f"{w}_mfu"])]
    if not present:
        return None
    fig, axes = figure_of_panels(len(present))
    for ax, w in zip(axes, present, strict=True):
        metric = spec(f"{w}_mfu")
        for series, group in groups.items():
            plot_metric(ax, group, metric.name, styles[series], series)
        ax.set(xscale="log", xlabel="parameters", ylabel="MFU", title=metric_label(metric.name))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.0%}"))
        ax.set_ylim(bottom=0)
        bounded_legend(ax)
    return fig


def _tensor_and_rss(record: dict, workload: str) -> tuple[float, float] | None:
    """The exact tensor peak and the RSS peak above baseline of one case, where it has both."""
    tensor = shown_metric(record, f"{workload}_peak_cpu_tensor_bytes")
    rss = shown_metric(record, f"{workload}_peak_cpu_rss_above_baseline_bytes")
    return (tensor["value"], rss["value"]) if tensor and rss else None


def _rss_overhead_panels(axes: list, groups: dict, styles: dict, workload: str) -> None:
    """What RSS holds beyond the live tensors (allocator, oneDNN, runtime): bytes and share."""
    absolute, share = axes
    for series, group in groups.items():
        rows = [(r["params"], *both) for r in group if (both := _tensor_and_rss(r, workload))]
        xs = [n for n, _, _ in rows]
        absolute.plot(xs, [max(rss - t, 1) for _, t, rss in rows], **styles[series], label=series)
        share.plot(xs, [(rss - t) / rss for _, t, rss in rows], **styles[series], label=series)
    absolute.set(xscale="log", yscale="log", xlabel="parameters", ylabel="bytes")
    absolute.set_title(f"{workload}: RSS above baseline − tensor peak", fontsize="medium")
    bytes_axis(absolute)
    share.set(xscale="log", xlabel="parameters", ylabel="share of RSS")
    share.set_title(f"{workload}: RSS overhead as a share of RSS", fontsize="medium")
    share.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.0%}"))
    bounded_legend(share)


def _phase_panel(ax, groups: dict, peak_name: str) -> bool:
    """The largest case's peak in each phase of its step, predicted and measured, with the
    predicted parts at the step's peak stacked beside them."""
    cases = [
        r
        for g in groups.values()
        for r in g
        if (m := shown_metric(r, peak_name)) and m.get("phase_peaks")
        and r["predicted"].get(peak_name, {}).get("phases")
    ]  # fmt: skip
    if not cases:
        return False
    r = max(cases, key=lambda r: r["params"])
    predicted = r["predicted"][peak_name]["phases"]
    measured = r["metrics"][peak_name]["phase_peaks"]
    phases = [p for p in PHASES if p in predicted]
    xs = range(len(phases))
    ax.bar([x - 0.2 for x in xs], [predicted[p] for p in phases], 0.4, label="predicted")
    ax.bar([x + 0.2 for x in xs], [measured.get(p, 0) for p in phases], 0.4, label="measured")
    bottom = 0
    for part, nbytes in r["predicted"][peak_name].get("parts", {}).items():
        if nbytes:
            ax.bar(len(phases), nbytes, 0.4, bottom=bottom, label=part)
            bottom += nbytes
    ax.set_xticks([*xs, len(phases)], [*phases, "parts at peak"])
    ax.set(ylabel="bytes", title=f"{r['case_id']}: peak by phase")
    bounded_legend(ax, fontsize="x-small")
    return True


def _measured_vs_predicted_figure(
    groups: dict, styles: dict, names: Sequence[str], title: str, workload: str = ""
) -> Figure | None:
    """Bytes measured (markers) and predicted (dotted), and their ratio against the ±25% band;
    one line style per metric of ``names`` that has a prediction, one colour per series. Where
    the prediction is held against the exact tensor peak, RSS's overhead is shown apart (bytes
    and share), and the largest case's peak phase by phase."""
    present = [
        n
        for n in measured_names(groups, names)
        if any(n in r["predicted"] for g in groups.values() for r in g)
    ]
    if not present:
        return None
    with_rss = any(_tensor_and_rss(r, workload) for g in groups.values() for r in g)
    with_phases = any(
        r["predicted"].get(n, {}).get("phases") for g in groups.values() for r in g for n in present
    )
    fig, axes = figure_of_panels(2 + 2 * with_rss + with_phases)
    absolute, ratio = axes[:2]
    if with_rss:
        _rss_overhead_panels(axes[2:4], groups, styles, workload)
    if with_phases:
        for name in present:
            if _phase_panel(axes[-1], groups, name):
                break
    for series, group in groups.items():
        for i, name in enumerate(present):
            style = dict(styles[series], linestyle=LINESTYLES[i % len(LINESTYLES)])
            label = series if i == 0 else None
            plot_metric(absolute, group, name, style, label)
            pairs = [
                (r["params"], m["value"], r["predicted"][name]["value"])
                for r in group
                if (m := shown_metric(r, name)) and name in r["predicted"]
            ]
            xs = [p[0] for p in pairs]
            absolute.plot(xs, [p[2] for p in pairs], ":", color=style["color"])
            ratio.plot(xs, [p[1] / p[2] for p in pairs], **style, label=label)
    styles_note = ", ".join(
        f"{LINESTYLE_NAMES[i % len(LINESTYLES)]}: {metric_label(n)}" for i, n in enumerate(present)
    )
    absolute.set(xscale="log", yscale="log", xlabel="parameters", ylabel="bytes")
    absolute.set_title(f"{title}\n({styles_note}; dotted: predicted)", fontsize="medium")
    bytes_axis(absolute)
    bounded_legend(absolute)
    ratio.axhspan(1 - THEORY_TOLERANCE, 1 + THEORY_TOLERANCE, color="0.9", zorder=0)
    ratio.axhline(1, color="0.5", linewidth=0.8)
    ratio.set(xscale="log", yscale="log", xlabel="parameters", ylabel="measured / predicted")
    ratio.set_title(f"{title}: measured / predicted\n(band: ±{THEORY_TOLERANCE:.0%})")
    plain_ticks(ratio)  # after the scale is set: setting it resets the tick labels
    return fig


#: How the curves of each metric that keeps them are drawn, in the order the metrics come.
CURVE_STYLES = ("-", "--", "-.", ":")


def curve_metrics(groups: dict) -> list[str]:
    """The metrics whose records keep loss curves (``metric["curves"]``), in spec order."""
    present = {
        name
        for g in groups.values()
        for r in g
        for name, m in r["metrics"].items()
        if isinstance(m, dict) and m.get("curves")
    }
    return [s.name for s in behaviour_specs() if s.name in present]


def loss_curves(record: dict, metric: str) -> list[tuple[list[float], list[float]]]:
    """The ``(steps, losses)`` of each seed at the case's best LR, from ``metric["curves"]``
    (``"lr=1e-3,seed=0"`` -> ``[[step, loss], …]``; a non-finite loss is null and left out)."""
    curves = (record["metrics"].get(metric) or {}).get("curves") or {}
    best = (record["metrics"].get("best_lr") or {}).get("value")
    prefix = f"lr={best:g}," if isinstance(best, int | float) else ""
    out = []
    for key, points in sorted(curves.items()):
        if key.startswith(prefix):
            finite = [(s, v) for s, v in points if v is not None]
            out.append(([s for s, _ in finite], [v for _, v in finite]))
    return out


def _loss_curve_figure(groups: dict) -> Figure | None:
    """One panel per series: every size's seeds at its best LR, coloured from small to large."""
    metrics = curve_metrics(groups)
    curves = tuple(zip(metrics, CURVE_STYLES, strict=False))
    panels = {
        series: [r for r in group if any(loss_curves(r, m) for m, _ in curves)]
        for series, group in groups.items()
    }
    panels = {series: group for series, group in panels.items() if group}
    if not panels:
        return None
    fig, axes = figure_of_panels(len(panels))
    for ax, (series, group) in zip(axes, panels.items(), strict=True):
        for i, r in enumerate(group):
            color = colormaps["viridis"](i / max(len(group) - 1, 1))
            for k, (metric, linestyle) in enumerate(curves):
                for j, (steps, losses) in enumerate(loss_curves(r, metric)):
                    label = f"{r['params']:,}" if j == 0 and k == 0 else None
                    ax.plot(steps, losses, linestyle, color=color, linewidth=1, label=label)
        what = ", ".join(f"{metric_label(m)} {style}" for m, style in curves)
        ylabel = unit_label(spec(curves[0][0]).unit) or "loss"
        ax.set(yscale="log", xlabel="step", ylabel=ylabel, title=f"{series} ({what})")
        plain_ticks(ax)
        bounded_legend(ax, "sizes", title="parameters")
    return fig


def _convergence_figure(groups: dict, styles: dict) -> Figure | None:
    """Every behaviour figure some case measured, one panel each; losses that vary on a log
    axis."""
    specs = {s.name: s for s in behaviour_specs()}
    names = measured_names(groups, list(specs))
    if not names:
        return None
    fig, axes = figure_of_panels(len(names))
    for ax, name in zip(axes, names, strict=True):
        for series, group in groups.items():
            plot_metric(ax, group, name, styles[series], series)
        s = specs[name]
        ax.set(xscale="log", xlabel="parameters", ylabel=unit_label(s.unit))
        ax.set_title(metric_label(s.name))
        values = [m["value"] for g in groups.values() for r in g if (m := shown_metric(r, name))]
        if s.unit == LOSS_UNIT and all(v > 0 for v in values) and len(set(values)) > 1:
            ax.set_yscale("log")
            plain_ticks(ax)
        bounded_legend(ax)
    return fig


def _fit_figure(fits: list[ScalingFit], styles: dict) -> Figure | None:
    """Each fitted quantity's points and its power law, one panel per quantity."""
    quantities = [q for q in dict.fromkeys(f.quantity for f in fits) if q.plotted]
    if not quantities:
        return None
    fig, axes = figure_of_panels(len(quantities), width=4.4, height=3.4)
    for ax, quantity in zip(axes, quantities, strict=True):
        for f in (f for f in fits if f.quantity is quantity):
            xs = [p[0] for p in f.points]
            style = styles[f.series]
            ax.plot(xs, [p[1] for p in f.points], linestyle="none", **style)
            grid = [min(xs) * (max(xs) / min(xs)) ** (i / 20) for i in range(21)]
            ax.plot(
                grid,
                [f.fit(x) for x in grid],
                "--",
                color=style["color"],
                label=f"{f.series}: k={f.fit.exponent:.2f}",
            )
        ax.set(xscale="log", yscale="log", xlabel="parameters", ylabel=unit_label(quantity.unit))
        ax.set_title(quantity.label)
        if quantity.unit == "bytes":
            bytes_axis(ax)
        bounded_legend(ax, fontsize="x-small")
    return fig


@dataclass(frozen=True)
class Plot:
    """One section of the report: its anchor, title, and the PNG or why there is none."""

    anchor: str
    title: str
    png_base64: str | None
    missing: str


def paired_by_workload(groups: dict) -> list[tuple[str, list[str]]]:
    """Per workload (in run order), the bytes metrics of its specs that some case both measured
    and predicted: one measured-against-predicted plot each."""
    paired = {s.name for g in groups.values() for r in g for s in paired_metrics(r)}
    out = []
    for w in declarations():
        names = [s.name for s in w.specs if s.name in paired]
        if names:
            out.append((w.name, names))
    return out


def report_plots(groups: dict[str, list[dict]], fits: list[ScalingFit]) -> list[Plot]:
    """Every plot of the report, in order; one colour and marker per series across all of them.
    Each of the report's own figures is drawn, turned into its PNG and let go before the next
    is drawn, so a report never holds the points of all its figures at once."""
    styles = series_styles(list(groups))
    bytes_plots = [
        (
            f"{workload}-bytes",
            f"{workload}: bytes, measured and predicted",
            lambda names=names, workload=workload: _measured_vs_predicted_figure(
                groups, styles, names, f"{workload} bytes", workload
            ),
            NOTHING_MEASURED,
        )
        for workload, names in paired_by_workload(groups)
    ]
    no_behaviour = _no_behaviour()
    drawn = (
        (
            "throughput",
            "Throughput against parameters",
            lambda: _throughput_figure(groups, styles),
            NOTHING_MEASURED,
        ),
        ("mfu", "Model FLOPs utilisation", lambda: _mfu_figure(groups, styles), NOTHING_MEASURED),
        *_ready(serving_plots(groups, styles)),
        *_ready(batch_plots(groups, styles)),
        *bytes_plots,
        ("fits", "Fitted power laws", lambda: _fit_figure(fits, styles), NOTHING_MEASURED),
        (
            "loss-curves",
            "Loss curves per size",
            lambda: _loss_curve_figure(groups),
            f"No loss curves: {no_behaviour}",
        ),
        (
            "stability",
            "Convergence and stability against parameters",
            lambda: _convergence_figure(groups, styles),
            f"No convergence metrics: {no_behaviour}",
        ),
    )
    return [Plot(anchor, title, _png(draw()), missing) for anchor, title, draw, missing in drawn]


def _ready(sections: list[tuple]) -> list[tuple]:
    """Sections whose figures are drawn already, in the shape of those drawn on demand."""
    return [
        (anchor, title, lambda fig=fig: fig, missing) for anchor, title, fig, missing in sections
    ]


def _png(fig: Figure | None) -> str | None:
    """The figure as base64 PNG, its artists (and the points they hold) let go at once."""
    if fig is None:
        return None
    png = png_base64(fig)
    fig.clear()
    return png


def comparison_png(comparison: Comparison) -> bytes:
    """The hardware comparison as a heat map: per family and metric, the geometric-mean ratio
    CURRENT/BASE, coloured green where CURRENT is better and red where it is worse."""
    families = comparison.by_family()
    metrics = sorted({m for f in families.values() for m in f})
    if not metrics:
        raise UserError("no metric with a ratio to plot")
    signs = {r.metric: r.direction for r in comparison.rows}
    grid = [
        [math.log2(c[0] ** signs[m]) if (c := families[f].get(m)) else math.nan for f in families]
        for m in metrics
    ]
    finite = [abs(v) for row in grid for v in row if math.isfinite(v)]
    limit = max(max(finite, default=1.0), 0.1)
    fig = Figure(figsize=(3 + 1.5 * len(families), 1.2 + 0.32 * len(metrics)), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(grid, cmap="RdYlGn", vmin=-limit, vmax=limit, aspect="auto")
    # Names from records (a plugin's family) are drawn as typed, never parsed as mathtext.
    ax.set_xticks(range(len(families)), list(families), parse_math=False)
    ax.set_yticks(range(len(metrics)), metrics, fontsize="small", parse_math=False)
    for i, metric in enumerate(metrics):
        for j, family in enumerate(families):
            if cell := families[family].get(metric):
                ax.text(j, i, f"{cell[0]:.2f}×", ha="center", va="center", fontsize="small")
    ax.set_title(
        f"CURRENT / BASE: {machine_line(comparison.current.env)}\n"
        f"against {machine_line(comparison.base.env)}",
        fontsize="medium",
    )
    fig.colorbar(image, ax=ax, label="log2 of improvement (green: CURRENT better)")
    return png_bytes(fig)
