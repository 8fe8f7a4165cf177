"""The report's serving plots, from the inference workload's figures: latency percentiles against
N, throughput against latency across batch sizes (one line per model size), decode tokens/s
beside its bandwidth roofline, and what each precision costs and saves (the compression table).

Only figures some record measured are drawn (a CPU run has no GPU bandwidth, a family that does
not decode no TTFT): a panel with nothing measured is left out, never drawn at zero.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace

from matplotlib.figure import Figure

from scaling_bench.config.case import Case
from scaling_bench.core.metrics import spec
from scaling_bench.core.units import fmt_bytes
from scaling_bench.meters.specs import PERCENTILES
from scaling_bench.report.tables import metric_label
from scaling_bench.workloads.catalog import INFERENCE_NAME as NAME
from scaling_bench.workloads.catalog import INFERENCE_REFERENCE_PRECISION as REFERENCE_PRECISION

#: The three latencies a request can have: one forward, the prompt's (TTFT), a decode step's.
PHASES = {
    NAME: "request: one forward pass of the batch",
    f"{NAME}_prefill": "prefill: time to first token (TTFT)",
    f"{NAME}_decode": "decode step: time per output token (TPOT)",
}
LINESTYLES = ("-", "--", "-.", ":")
_P50 = "latency_p50_s"


def _value(record: dict, name: str) -> float | None:
    m = record["metrics"].get(name)
    value = m.get("value") if isinstance(m, dict) else None
    return value if isinstance(value, int | float) else None


def _records(groups: dict[str, list[dict]]) -> list[dict]:
    return [r for g in groups.values() for r in g]


def _figure(n_panels: int) -> tuple[Figure, list]:
    fig = Figure(figsize=(5.2 * n_panels, 3.9), layout="constrained")
    return fig, fig.subplots(1, n_panels, squeeze=False).ravel().tolist()


def percentiles_figure(groups: dict[str, list[dict]], styles: dict) -> Figure | None:
    """Per phase, p50/p90/p95/p99 against N: one colour per series, one line style per
    percentile."""
    phases = [p for p in PHASES if any(_value(r, f"{p}_{_P50}") for r in _records(groups))]
    if not phases:
        return None
    fig, axes = _figure(len(phases))
    for ax, phase in zip(axes, phases, strict=True):
        for series, group in groups.items():
            for i, name in enumerate(PERCENTILES):
                rows = [
                    (r["params"], v) for r in group if (v := _value(r, f"{phase}_latency_{name}_s"))
                ]
                if rows:
                    ax.plot(*zip(*rows, strict=True), linestyle=LINESTYLES[i], **styles[series],
                            label=series if i == 0 else None)  # fmt: skip
        ax.set(xscale="log", yscale="log", xlabel="parameters", ylabel="seconds per call")
        styles_note = ", ".join(f"{s} {p}" for s, p in zip(LINESTYLES, PERCENTILES, strict=True))
        ax.set_title(f"{PHASES[phase]}\n({styles_note})", fontsize="medium")
        ax.legend(fontsize="x-small")
    return fig


def _batch(record: dict) -> int:
    """The batch a record's requests had, as the inference workload noted it."""
    return record["metrics"][f"{NAME}_{_P50}"]["batch_size"]


def _curve_key(record: dict) -> tuple[str, int]:
    """A line of the throughput–latency plot: every axis but the batch size, and the size."""
    case = Case.from_dict(record["case"])
    return replace(case, batch_size=None).series_id, record["params"]


def throughput_latency_figure(groups: dict[str, list[dict]]) -> Figure | None:
    """Throughput against the median latency, a point per batch size, one line per model
    size: the request's forward pass, and where measured the decode step's tokens/s."""
    panels = [
        (f"{NAME}_{_P50}", f"{NAME}_samples_per_s", "request"),
        (f"{NAME}_decode_{_P50}", f"{NAME}_decode_tokens_per_s", "decode step"),
    ]
    records = _records(groups)
    panels = [p for p in panels if any(_value(r, p[1]) for r in records)]
    if not panels:
        return None
    lines: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for r in records:
        lines[_curve_key(r)].append(r)
    fig, axes = _figure(len(panels))
    for ax, (x_name, y_name, what) in zip(axes, panels, strict=True):
        for i, ((series, params), rs) in enumerate(sorted(lines.items())):
            rows = sorted(
                (x, y, _batch(r))
                for r in rs
                if (x := _value(r, x_name)) and (y := _value(r, y_name))
            )
            if not rows:
                continue
            xs, ys, _ = zip(*rows, strict=True)
            line = ax.plot(xs, ys, marker="o", color=f"C{i % 10}", label=f"{series} {params:,}")
            for x, y, batch in rows:
                ax.annotate(f"B={batch}", (x, y), fontsize="x-small", color=line[0].get_color(),
                            xytext=(3, 3), textcoords="offset points")  # fmt: skip
        ax.set(xscale="log", yscale="log", xlabel=f"{metric_label(x_name)} (s)",
               ylabel=spec(y_name).unit, title=f"Throughput against latency: {what}")  # fmt: skip
        ax.legend(fontsize="x-small")
    return fig


def roofline_figure(groups: dict[str, list[dict]], styles: dict) -> Figure | None:
    """Decode tokens/s against N, with the bandwidth roofline dotted (the device's bandwidth
    times the batch over the bytes a step reads), and the bandwidth utilisation beside it."""
    tokens, utilisation = f"{NAME}_decode_tokens_per_s", f"{NAME}_bandwidth_utilisation"
    if not any(_value(r, tokens) for r in _records(groups)):
        return None
    fig, (ax, util) = _figure(2)
    for series, group in groups.items():
        rows = [(r["params"], v) for r in group if (v := _value(r, tokens))]
        if rows:
            ax.plot(*zip(*rows, strict=True), **styles[series], label=series)
        roof = [
            (r["params"], bw * _batch(r) / step)
            for r in group
            if (bw := _value(r, f"{NAME}_memory_bandwidth_bytes_per_s"))
            and (step := _value(r, f"{NAME}_decode_bytes_per_step"))
        ]
        if roof:
            ax.plot(*zip(*roof, strict=True), ":", color=styles[series]["color"])
        used = [(r["params"], v) for r in group if (v := _value(r, utilisation))]
        if used:
            util.plot(*zip(*used, strict=True), **styles[series], label=series)
    ax.set(xscale="log", yscale="log", xlabel="parameters", ylabel="tokens/s",
           title="Decode tokens/s (dotted: memory-bandwidth roofline)")  # fmt: skip
    ax.legend(fontsize="x-small")
    util.set(xscale="log", xlabel="parameters", ylabel="fraction of memory bandwidth",
             title=metric_label(utilisation))  # fmt: skip
    util.set_ylim(bottom=0)
    if util.get_legend_handles_labels()[0]:
        util.legend(fontsize="x-small")
    return fig


#: The compression table's columns: (header, metric, format).
COMPRESSION_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("checkpoint", f"{NAME}_checkpoint_bytes", "bytes"),
    ("p50 s", f"{NAME}_{_P50}", "{:.3g}"),
    ("p99 s", f"{NAME}_latency_p99_s", "{:.3g}"),
    ("TTFT s", f"{NAME}_prefill_{_P50}", "{:.3g}"),
    ("TPOT s", f"{NAME}_decode_{_P50}", "{:.3g}"),
    ("top-1", f"{NAME}_top1_agreement", "{:.4f}"),
    ("KL nats", f"{NAME}_kl_divergence", "{:.2e}"),
    ("held-out", f"{NAME}_heldout_loss", "{:.4f}"),
)


def compression_rows(records: Sequence[dict]) -> tuple[list[str], list[list[str]]]:
    """One row per case that ran inference, cases of one model and batch together, each
    precision's bytes, latency and quality (the reference precision's quality is its own)."""
    shown = [c for c in COMPRESSION_COLUMNS if any(_value(r, c[1]) is not None for r in records)]
    header = ["case", *(c[0] for c in shown)]
    ran = [r for r in records if _value(r, f"{NAME}_{_P50}") is not None]

    def key(r: dict) -> tuple:
        case = Case.from_dict(r["case"])
        other = replace(case, precision=REFERENCE_PRECISION).case_id
        return other, case.precision != REFERENCE_PRECISION, case.precision

    rows = []
    for r in sorted(ran, key=key):
        cells = [r["case_id"]]
        for _, name, fmt in shown:
            v = _value(r, name)
            cells.append("" if v is None else fmt_bytes(v) if fmt == "bytes" else fmt.format(v))
        rows.append(cells)
    return header, rows


def compression_figure(groups: dict[str, list[dict]]) -> Figure | None:
    """The compression table, drawn (the report's sections are figures)."""
    header, rows = compression_rows(_records(groups))
    if not rows:
        return None
    fig = Figure(figsize=(2.2 + 1.1 * len(header), 0.6 + 0.3 * len(rows)), layout="constrained")
    ax = fig.subplots()
    ax.axis("off")
    table = ax.table(cellText=rows, colLabels=header, loc="center", cellLoc="right")
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    table.auto_set_column_width(list(range(len(header))))
    return fig


def serving_plots(groups: dict[str, list[dict]], styles: dict) -> list[tuple]:
    """The report's serving sections ``(anchor, title, figure, missing)``; none for a run
    without the inference workload."""
    if not any(_value(r, f"{NAME}_{_P50}") for r in _records(groups)):
        return []
    missing = f"Nothing measured for this plot (run with --workloads {NAME})."
    return [
        ("latency", "Latency percentiles against parameters", percentiles_figure(groups, styles),
         missing),
        ("throughput-latency", "Throughput against latency across batch sizes",
         throughput_latency_figure(groups), missing),
        ("decode-roofline", "Decode tokens/s and the memory-bandwidth roofline",
         roofline_figure(groups, styles), "No decode measured (a family with a KV cache: gpt)."),
        ("compression", "Compression: bytes, latency and quality per precision",
         compression_figure(groups), missing),
    ]  # fmt: skip
