"""Records made readable: one self-contained HTML file with plots, and a markdown summary.

The HTML embeds every plot as a base64 PNG, so it can be mailed, attached to a CI run or opened
from a laptop without the results folder. Plots are drawn on bare ``matplotlib.figure.Figure``
objects (the Agg canvas, no pyplot state), so reports can be built in any process or thread.

Each plot puts theory beside measurement: dotted lines are predictions (throughput at the FLOP/s of
the series' largest case, predicted memory and checkpoint bytes), dashed lines are fitted power
laws, and the ratio panels shade the ±25% band outside which a case is flagged.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
from rich.table import Table

from scaling_bench.analysis.fits import (
    CONFIDENCE,
    FAILED_STATUSES,
    STABILITY_METRICS,
    THEORY_TOLERANCE,
    WORKLOADS,
    Comparison,
    ScalingFit,
    TheoryCheck,
    by_series,
    flops_per_sample,
    flops_rate,
    scaling_fits,
    theory_checks,
)
from scaling_bench.core.errors import UserError
from scaling_bench.core.units import fmt_bytes
from scaling_bench.store.records import TRAIN_PEAK_NAMES

MARKERS = "osD^v<>ph*"
LINESTYLES = ("-", "--", "-.")
LINESTYLE_NAMES = ("solid", "dashed", "dash-dot")
PEAK_METRICS = tuple(TRAIN_PEAK_NAMES.values())
#: Fingerprint keys shown first; the rest follow in their own order.
MACHINE_KEYS = ("gpu_name", "cpu_model", "hostname", "torch_version", "git_commit")


def fmt_value(value: float, unit: str) -> str:
    """A figure in the unit people read it in."""
    if unit == "bytes":
        return fmt_bytes(value)
    if unit == "s":
        for scale, suffix in ((1, "s"), (1e3, "ms")):
            if value * scale >= 1:
                return f"{value * scale:.3g} {suffix}"
        return f"{value * 1e6:.3g} µs"
    if unit == "fraction":
        return f"{value:.1%}"
    return f"{value:,.0f} {unit}".rstrip() if value >= 1000 else f"{value:.3g} {unit}".rstrip()


def _exponent(fit: ScalingFit) -> str:
    if fit.fit.ci is None:
        return f"{fit.fit.exponent:.2f}"
    lo, hi = fit.fit.ci
    return f"{fit.fit.exponent:.2f} [{lo:.2f}, {hi:.2f}]"


def _theory(fit: ScalingFit) -> str:
    if fit.theory_exponent is None:
        return ""
    mark = {True: " ✓", False: " ✗", None: ""}[fit.agrees_with_theory]
    return f"{fit.theory_exponent:.2f}{mark}"


# --- plots ------------------------------------------------------------------------------------


def png_bytes(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def _base64(fig: Figure) -> str:
    return base64.b64encode(png_bytes(fig)).decode("ascii")


def _styles(series: Sequence[str]) -> dict[str, dict]:
    """A colour and marker per series, the same in every plot of the report."""
    colors = [f"C{i % 10}" for i in range(len(series))]
    return {
        s: {"color": c, "marker": MARKERS[i % len(MARKERS)]}
        for i, (s, c) in enumerate(zip(series, colors, strict=True))
    }


def _figure(n_panels: int, width: float = 5.2, height: float = 3.8) -> tuple[Figure, list]:
    cols = min(n_panels, 3)
    rows = math.ceil(n_panels / cols)
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes[:n_panels]


def _bytes_axis(ax) -> None:
    """Ticks at powers of 4 bytes (16 KiB, 64 KiB, 256 KiB, 1 MiB), labelled in binary units."""

    def label(v: float, _: object) -> str:
        exponent = min(int(math.log(max(v, 1), 1024)), 4)
        return f"{v / 1024**exponent:g} {('B', 'KiB', 'MiB', 'GiB', 'TiB')[exponent]}"

    ax.yaxis.set_major_locator(LogLocator(base=4))
    ax.yaxis.set_major_formatter(FuncFormatter(label))
    ax.yaxis.set_minor_formatter(NullFormatter())


def _plain_ticks(ax) -> None:
    """``3`` rather than ``3×10⁰`` on a log axis that spans less than a decade."""
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.2g}"))
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:.2g}"))


def _metric(record: dict, name: str) -> dict | None:
    m = record["metrics"].get(name)
    return m if isinstance(m, dict) and isinstance(m.get("value"), int | float) else None


def _present(groups: dict, names: Sequence[str]) -> list[str]:
    """The names among ``names`` that some record of some series has measured."""
    return [n for n in names if any(_metric(r, n) for g in groups.values() for r in g)]


def _points(group: list[dict], value: Callable[[dict], float | None]) -> tuple[list, list]:
    pairs = [(r["params"], v) for r in group if (v := value(r)) is not None]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _plot_metric(ax, group: list[dict], name: str, style: dict, label: str) -> None:
    """Median with its p10–p90 range as an error bar, joined by a line."""
    rows = [(r["params"], m) for r in group if (m := _metric(r, name))]
    if not rows:
        return
    xs = [n for n, _ in rows]
    ys = [m["value"] for _, m in rows]
    lo = [max(m["value"] - m.get("p10", m["value"]), 0) for _, m in rows]
    hi = [max(m.get("p90", m["value"]) - m["value"], 0) for _, m in rows]
    ax.errorbar(xs, ys, yerr=[lo, hi], label=label, capsize=3, **style)


def _throughput_figure(groups: dict, styles: dict) -> Figure | None:
    """Samples/s against N, with time ∝ FLOPs drawn at the FLOP/s of the series' largest case."""
    present = [w for w in WORKLOADS if _present(groups, [f"{w}_samples_per_s"])]
    if not present:
        return None
    fig, axes = _figure(len(present))
    for ax, w in zip(axes, present, strict=True):
        for series, group in groups.items():
            _plot_metric(ax, group, f"{w}_samples_per_s", styles[series], series)
            rate = flops_rate(group, w)
            xs, flops = _points(group, lambda r, w=w: flops_per_sample(r, w))
            if rate and xs:
                ax.plot(xs, [rate / f for f in flops], ":", color=styles[series]["color"])
        ax.set(
            xscale="log",
            yscale="log",
            xlabel="parameters",
            ylabel="samples / s",
            title=f"{w} throughput (dotted: time ∝ FLOPs)",
        )
        ax.legend(fontsize="small")
    return fig


def _mfu_figure(groups: dict, styles: dict) -> Figure | None:
    present = [w for w in WORKLOADS if _present(groups, [f"{w}_mfu"])]
    if not present:
        return None
    fig, axes = _figure(len(present))
    for ax, w in zip(axes, present, strict=True):
        for series, group in groups.items():
            _plot_metric(ax, group, f"{w}_mfu", styles[series], series)
        ax.set(
            xscale="log", xlabel="parameters", ylabel="MFU", title=f"{w} model FLOPs utilisation"
        )
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.0%}"))
        ax.set_ylim(bottom=0)
        ax.legend(fontsize="small")
    return fig


def _measured_vs_predicted_figure(
    groups: dict, styles: dict, names: Sequence[str], title: str
) -> Figure | None:
    """Bytes measured (markers) and predicted (dotted), and their ratio against the ±25% band;
    one line style per metric of ``names`` that has a prediction, one colour per series."""
    present = [
        n
        for n in _present(groups, names)
        if any(n in r["predicted"] for g in groups.values() for r in g)
    ]
    if not present:
        return None
    fig, axes = _figure(2)
    absolute, ratio = axes
    for series, group in groups.items():
        for i, name in enumerate(present):
            style = dict(styles[series], linestyle=LINESTYLES[i])
            label = series if i == 0 else None
            _plot_metric(absolute, group, name, style, label)
            pairs = [
                (r["params"], m["value"], r["predicted"][name]["value"])
                for r in group
                if (m := _metric(r, name)) and name in r["predicted"]
            ]
            xs = [p[0] for p in pairs]
            absolute.plot(xs, [p[2] for p in pairs], ":", color=style["color"])
            ratio.plot(xs, [p[1] / p[2] for p in pairs], **style, label=label)
    styles_note = ", ".join(f"{LINESTYLE_NAMES[i]}: {n}" for i, n in enumerate(present))
    absolute.set(xscale="log", yscale="log", xlabel="parameters", ylabel="bytes")
    absolute.set_title(f"{title}\n({styles_note}; dotted: predicted)", fontsize="medium")
    _bytes_axis(absolute)
    absolute.legend(fontsize="small")
    ratio.axhspan(1 - THEORY_TOLERANCE, 1 + THEORY_TOLERANCE, color="0.9", zorder=0)
    ratio.axhline(1, color="0.5", linewidth=0.8)
    ratio.set(xscale="log", yscale="log", xlabel="parameters", ylabel="measured / predicted")
    ratio.set_title(f"{title}: measured / predicted\n(band: ±{THEORY_TOLERANCE:.0%})")
    _plain_ticks(ratio)  # after the scale is set: setting it resets the tick labels
    return fig


#: Where the convergence workload keeps its curves, and how each is drawn.
CURVES = (("final_loss_mean", "train", "-"), ("heldout_loss", "held-out", "--"))


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
    panels = {
        series: [r for r in group if any(loss_curves(r, m) for m, _, _ in CURVES)]
        for series, group in groups.items()
    }
    panels = {series: group for series, group in panels.items() if group}
    if not panels:
        return None
    fig, axes = _figure(len(panels))
    for ax, (series, group) in zip(axes, panels.items(), strict=True):
        for i, r in enumerate(group):
            color = colormaps["viridis"](i / max(len(group) - 1, 1))
            for metric, _, linestyle in CURVES:
                for j, (steps, losses) in enumerate(loss_curves(r, metric)):
                    label = f"{r['params']:,}" if j == 0 and linestyle == "-" else None
                    ax.plot(steps, losses, linestyle, color=color, linewidth=1, label=label)
        what = ", ".join(f"{name} {style}" for _, name, style in CURVES)
        ax.set(yscale="log", xlabel="step", ylabel="loss", title=f"{series} ({what})")
        _plain_ticks(ax)
        ax.legend(title="parameters", fontsize="small")
    return fig


def _convergence_figure(groups: dict, styles: dict) -> Figure | None:
    names = _present(groups, ("final_loss_mean", "heldout_loss", *STABILITY_METRICS))
    if not names:
        return None
    fig, axes = _figure(len(names))
    for ax, name in zip(axes, names, strict=True):
        for series, group in groups.items():
            _plot_metric(ax, group, name, styles[series], series)
        ax.set(xscale="log", xlabel="parameters", title=name)
        if name in ("final_loss_mean", "heldout_loss"):
            ax.set_yscale("log")
            _plain_ticks(ax)
        ax.legend(fontsize="small")
    return fig


def _fit_figure(fits: list[ScalingFit], styles: dict) -> Figure | None:
    """Each fitted quantity's points and its power law, one panel per quantity."""
    quantities = [
        q for q in dict.fromkeys(f.quantity for f in fits) if not q.name.endswith("_samples_per_s")
    ]  # throughput is time per sample upside down, and has its own plot
    if not quantities:
        return None
    fig, axes = _figure(len(quantities), width=4.4, height=3.4)
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
        ax.set(xscale="log", yscale="log", xlabel="parameters", ylabel=quantity.unit)
        ax.set_title(quantity.label)
        if quantity.unit == "bytes":
            _bytes_axis(ax)
        ax.legend(fontsize="x-small")
    return fig


# --- documents --------------------------------------------------------------------------------


def _machines(records: list[dict]) -> list[dict]:
    """The distinct fingerprints among the records (usually one)."""
    seen: dict[str, dict] = {}
    for r in records:
        env = r.get("env") or {}
        seen.setdefault(repr(sorted(env.items())), env)
    return list(seen.values())


def _machine_line(env: dict) -> str:
    """``NVIDIA H200, host gpu-3, torch 2.5.1, commit 1a2b3c4d (dirty)``: what tells runs apart."""
    parts = [str(env[k]) for k in ("gpu_name", "cpu_model") if env.get(k)]
    parts += [
        f"{label} {env[k]}"
        for k, label in (("hostname", "host"), ("torch_version", "torch"))
        if env.get(k)
    ]
    if env.get("git_commit"):
        dirty = " (dirty)" if env.get("git_dirty") else ""
        parts.append(f"commit {str(env['git_commit'])[:8]}{dirty}")
    return ", ".join(parts) or "unknown machine"


def _status_counts(records: list[dict]) -> str:
    counts = Counter(r["status"] for r in records)
    return ", ".join(f"{n} {s}" for s, n in counts.items())


class _Analysis:
    """Everything a report shows, computed once for both documents."""

    def __init__(self, records: list[dict]) -> None:
        self.records = records
        self.groups = by_series(records)
        self.styles = _styles(list(self.groups))
        self.fits = scaling_fits(records)
        self.checks = theory_checks(records)

    @property
    def flagged(self) -> list[TheoryCheck]:
        return [c for c in self.checks if c.flagged]

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.records if r["status"] != "ok"]


def _table(header: Sequence[str], rows: Sequence[Sequence[object]], left: int = 1) -> str:
    """An HTML table; the first ``left`` columns are names (left-aligned), the rest figures."""

    def cells(tag: str, row: Sequence[object]) -> str:
        return "".join(
            f'<{tag} class="{"name" if i < left else "figure"}">{html.escape(str(c))}</{tag}>'
            for i, c in enumerate(row)
        )

    body = "".join(f"<tr>{cells('td', row)}</tr>" for row in rows)
    return f"<table><thead><tr>{cells('th', header)}</tr></thead><tbody>{body}</tbody></table>"


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
h1{font-size:1.6em}h2{margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;font-size:.9em;margin:.5em 0}
td,th{border:1px solid #ddd;padding:.25em .6em;text-align:right}
.name{text-align:left}th{background:#f4f4f4}
img{max-width:100%;display:block;margin:.5em 0}.note{color:#666;font-size:.9em}
nav a{margin-right:1em}
"""


def build_html(records: list[dict], source: str) -> str:
    """The whole report as one HTML document with its plots inline."""
    a = _Analysis(records)
    figures = [
        ("throughput", "Throughput against parameters", _throughput_figure(a.groups, a.styles)),
        ("mfu", "Model FLOPs utilisation", _mfu_figure(a.groups, a.styles)),
        (
            "memory",
            "Peak training memory, measured and predicted",
            _measured_vs_predicted_figure(a.groups, a.styles, PEAK_METRICS, "train peak memory"),
        ),
        (
            "checkpoint",
            "Checkpoint size, measured and predicted",
            _measured_vs_predicted_figure(
                a.groups,
                a.styles,
                ("checkpoint_bytes", "checkpoint_bytes_with_optimizer"),
                "checkpoint",
            ),
        ),
        ("fits", "Fitted power laws", _fit_figure(a.fits, a.styles)),
        ("loss-curves", "Loss curves per size", _loss_curve_figure(a.groups)),
        (
            "stability",
            "Convergence and stability against parameters",
            _convergence_figure(a.groups, a.styles),
        ),
    ]
    missing = {
        "loss-curves": "No loss curves: run with --workloads convergence.",
        "stability": "No convergence metrics: run with --workloads convergence.",
    }
    sections = []
    for anchor, title, fig in figures:
        if fig is None:
            note = missing.get(anchor, "Nothing measured for this plot.")
            body = f'<p class="note">{html.escape(note)}</p>'
        else:
            body = f'<img alt="{html.escape(title)}" src="data:image/png;base64,{_base64(fig)}">'
        sections.append(f'<h2 id="{anchor}">{html.escape(title)}</h2>{body}')
    fit_rows = [
        (f.series, f.quantity.label, _exponent(f), _theory(f), f"{f.fit.r2:.3f}", f.fit.n_points)
        for f in a.fits
    ]
    flag_rows = [
        (
            c.case_id,
            c.quantity,
            fmt_value(c.measured, c.unit),
            fmt_value(c.predicted, c.unit),
            f"{c.ratio:.2f}",
        )
        for c in a.flagged
    ]
    case_rows = [
        (
            r["case_id"],
            f"{r['params']:,}" if r["params"] else "",
            r["status"],
            f"{r['duration_s']:.1f} s",
            (r.get("error") or "")[:160],
        )
        for r in records
    ]
    machines = "".join(_table(("key", "value"), _machine_rows(env)) for env in _machines(records))
    nav = " ".join(f'<a href="#{anchor}">{html.escape(t)}</a>' for anchor, t, _ in figures)
    ci = f"{CONFIDENCE:.0%}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>scaling-bench report: {html.escape(source)}</title><style>{_CSS}</style></head><body>
<h1>scaling-bench report</h1>
<p>{html.escape(source)}: {len(records)} cases ({html.escape(_status_counts(records))}) on
{html.escape("; ".join(_machine_line(e) for e in _machines(records)))}.
Generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.</p>
<nav>{nav} <a href="#exponents">Exponents</a> <a href="#theory">Theory</a>
<a href="#cases">Cases</a> <a href="#machine">Machine</a></nav>
{"".join(sections)}
<h2 id="exponents">Fitted exponents: metric ∝ N<sup>k</sup></h2>
<p class="note">Least squares on log–log axes, {ci} confidence interval (Student t). Theory: the
exponent of the prediction on the same cases (FLOPs per sample for time, predicted bytes for
memory and checkpoints); ✓ inside the interval, ✗ outside.</p>
{_table(("series", "quantity", f"k [{ci} CI]", "theory k", "R²", "sizes"), fit_rows, left=2)}
<h2 id="theory">More than {THEORY_TOLERANCE:.0%} from theory</h2>
<p class="note">{len(a.flagged)} of {len(a.checks)} checks. Time per sample is predicted as FLOPs
per sample at the FLOP/s of the series' largest case, the nearest to compute-bound: a smaller case
flagged above 1 spends that share of its time on overhead that FLOPs do not count.</p>
{_table(("case", "quantity", "measured", "predicted", "ratio"), flag_rows, left=2)}
<h2 id="cases">Cases</h2>
{_table(("case", "params", "status", "duration", "error"), case_rows)}
<h2 id="machine">Machine</h2>
{machines}
</body></html>
"""


def _machine_rows(env: dict) -> list[tuple[str, str]]:
    keys = [k for k in MACHINE_KEYS if k in env] + [k for k in env if k not in MACHINE_KEYS]
    return [(k, str(env[k])) for k in keys]


def build_markdown(records: list[dict], source: str) -> str:
    """A summary for CI logs and pull-request comments: exponents, flags, failures."""
    a = _Analysis(records)
    lines = [
        f"## scaling-bench report: {source}",
        "",
        f"{len(records)} cases ({_status_counts(records)}) on "
        + "; ".join(_machine_line(e) for e in _machines(records))
        + ".",
        "",
        f"### Fitted exponents (metric ∝ N^k, {CONFIDENCE:.0%} CI)",
        "",
        "| series | quantity | k | theory k | sizes |",
        "| --- | --- | --- | --- | ---: |",
    ]
    lines += [
        f"| {f.series} | {f.quantity.label} | {_exponent(f)} | {_theory(f)} | {f.fit.n_points} |"
        for f in a.fits
    ]
    lines += [
        "",
        f"### More than {THEORY_TOLERANCE:.0%} from theory: "
        f"{len(a.flagged)} of {len(a.checks)} checks",
        "",
    ]
    if a.flagged:
        lines += [
            "| case | quantity | measured | predicted | ratio |",
            "| --- | --- | ---: | ---: | ---: |",
        ]
        lines += [
            f"| {c.case_id} | {c.quantity} | {fmt_value(c.measured, c.unit)} | "
            f"{fmt_value(c.predicted, c.unit)} | {c.ratio:.2f} |"
            for c in a.flagged
        ]
    if a.failed:
        lines += ["", "### Cases that did not finish", ""]
        lines += [
            f"- `{r['case_id']}`: {r['status']} {(r.get('error') or '')[:120]}".rstrip()
            for r in a.failed
        ]
    return "\n".join(lines) + "\n"


# --- run against run --------------------------------------------------------------------------

VERDICT_STYLES = {
    "regressed": "bold red",
    "improved": "green",
    "inconclusive": "yellow",
    "unchanged": "dim",
}


def comparison_tables(comparison: Comparison, show_all: bool = False) -> list[Table]:
    """What a person reads after ``compare``: the moved metrics (all with ``show_all``), cases
    that could not be paired, and the geometric-mean ratio per family."""
    rows = sorted(
        (r for r in comparison.rows if show_all or r.verdict != "unchanged"),
        key=lambda r: (list(VERDICT_STYLES).index(r.verdict), r.case_id, r.metric),
    )
    moved = Table(
        title=f"{comparison.current.source} against {comparison.base.source} "
        f"(threshold {comparison.threshold:.0%}, α {comparison.alpha:g})"
    )
    for name in ("case", "metric"):
        moved.add_column(name, no_wrap=True)
    for name in ("base", "current", "ratio", "p"):
        moved.add_column(name, justify="right")
    moved.add_column("verdict", no_wrap=True)
    moved.add_column("why", style="dim")
    for r in rows:
        moved.add_row(
            r.case_id,
            r.metric,
            fmt_value(r.base, r.unit),
            fmt_value(r.current, r.unit),
            f"{r.ratio:.3f}" if r.ratio is not None else "",
            f"{r.p_value:.2g}" if r.p_value is not None else "",
            f"[{VERDICT_STYLES[r.verdict]}]{r.verdict}[/]",
            r.note,
        )
    counts = {v: sum(r.verdict == v for r in comparison.rows) for v in VERDICT_STYLES}
    moved.caption = ", ".join(f"{n} {v}" for v, n in counts.items()) + (
        "" if show_all else " (--all lists the unchanged)"
    )
    tables = [moved]
    unpaired = [
        *((c, "only in BASE", "") for c in comparison.only_base),
        *((c, "only in CURRENT", "") for c in comparison.only_current),
        *(
            (c, f"status {b} → {s}", "fails the gate" * (s in FAILED_STATUSES and b == "ok"))
            for c, b, s in comparison.status_changes
        ),
    ]
    if unpaired:
        table = Table(title="Cases not compared")
        for name in ("case", "why", "gate"):
            table.add_column(name)
        for row in unpaired:
            table.add_row(*row)
        tables.append(table)
    families = comparison.by_family()
    if families:
        table = Table(
            title=f"Geometric-mean ratio CURRENT/BASE per family: "
            f"{_machine_line(comparison.current.env)} vs {_machine_line(comparison.base.env)}"
        )
        table.add_column("metric")
        for family in families:
            table.add_column(family, justify="right")
        metrics = sorted({m for f in families.values() for m in f})
        for metric in metrics:
            cells = [families[f].get(metric) for f in families]
            table.add_row(metric, *(f"{c[0]:.3g}×" if c else "" for c in cells))
        tables.append(table)
    return tables


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
    ax.set_xticks(range(len(families)), list(families))
    ax.set_yticks(range(len(metrics)), metrics, fontsize="small")
    for i, metric in enumerate(metrics):
        for j, family in enumerate(families):
            if cell := families[family].get(metric):
                ax.text(j, i, f"{cell[0]:.2f}×", ha="center", va="center", fontsize="small")
    ax.set_title(
        f"CURRENT / BASE: {_machine_line(comparison.current.env)}\n"
        f"against {_machine_line(comparison.base.env)}",
        fontsize="medium",
    )
    fig.colorbar(image, ax=ax, label="log2 of improvement (green: CURRENT better)")
    return png_bytes(fig)


def gate_line(comparison: Comparison) -> str:
    """The last line of ``compare``: what the exit code means, for a CI log."""
    if not comparison.failed_gate:
        return f"gate passed: no significant regression beyond {comparison.threshold:.0%}"
    parts = []
    if comparison.regressions:
        n = len(comparison.regressions)
        parts.append(
            f"{n} regression{'s' * (n != 1)} beyond {comparison.threshold:.0%} "
            f"(p < {comparison.alpha:g})"
        )
    if comparison.newly_failed:
        n = len(comparison.newly_failed)
        parts.append(f"{n} case{'s' * (n != 1)} that ran in BASE now fail{'s' * (n == 1)}")
    return "gate FAILED: " + ", ".join(parts)
