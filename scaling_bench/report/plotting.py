"""What every plot of the report is drawn with: figures of panels, axes in bytes or plain
numbers, a colour and marker per series, a figure's median-and-range line, a legend that stays
bounded however many series a run has, and the PNG a figure becomes.

A series of many cases is drawn as a few artists (``joined``): a report of 100k records draws in
time linear in its records.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Callable, Sequence

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogFormatter, LogLocator, NullFormatter

from scaling_bench.report.text import drawn_literally

MARKERS = "osD^v<>ph*"
#: Entries a legend lists at most; its title says how many it leaves out.
LEGEND_ENTRIES = 12
#: Points drawn on an axes above which its legend goes to a fixed corner (``bounded_legend``).
BEST_PLACE_POINTS = 1000


def unit_label(unit: str) -> str:
    return {"s": "seconds", "fraction": "", "1": ""}.get(unit, unit)


def png_bytes(fig: Figure) -> bytes:
    """The figure as PNG at 100 dpi, cropped to what is drawn."""
    buffer = io.BytesIO()
    drawn_literally(fig).savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def png_base64(fig: Figure) -> str:
    """The figure as base64 PNG, for a ``data:`` URL: the report needs no files beside it."""
    return base64.b64encode(png_bytes(fig)).decode("ascii")


def series_styles(series: Sequence[str]) -> dict[str, dict]:
    """A colour and marker per series, the same in every plot of the report."""
    colors = [f"C{i % 10}" for i in range(len(series))]
    return {
        s: {"color": c, "marker": MARKERS[i % len(MARKERS)]}
        for i, (s, c) in enumerate(zip(series, colors, strict=True))
    }


def figure_of_panels(n_panels: int, width: float = 5.2, height: float = 3.8) -> tuple[Figure, list]:
    cols = min(n_panels, 3)
    rows = math.ceil(n_panels / cols)
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes[:n_panels]


def bytes_axis(ax) -> None:
    """Ticks at powers of 4 bytes (16 KiB, 64 KiB, 256 KiB, 1 MiB), labelled in binary units."""

    def label(v: float, _: object) -> str:
        exponent = min(int(math.log(max(v, 1), 1024)), 4)
        return f"{v / 1024**exponent:g} {('B', 'KiB', 'MiB', 'GiB', 'TiB')[exponent]}"

    ax.yaxis.set_major_locator(LogLocator(base=4))
    ax.yaxis.set_major_formatter(FuncFormatter(label))
    ax.yaxis.set_minor_formatter(NullFormatter())


def plain_ticks(ax) -> None:
    """``3`` rather than ``3×10⁰`` on a log axis; its minor ticks labelled only where it spans
    less than a decade (matplotlib's thresholds): over several decades they would overlap."""
    ax.yaxis.set_major_formatter(LogFormatter())
    ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False))


def shown_metric(record: dict, name: str) -> dict | None:
    m = record["metrics"].get(name)
    return m if isinstance(m, dict) and isinstance(m.get("value"), int | float) else None


def measured_names(groups: dict, names: Sequence[str]) -> list[str]:
    """The names among ``names`` that some record of some series has measured."""
    return [n for n in names if any(shown_metric(r, n) for g in groups.values() for r in g)]


def series_points(group: list[dict], value: Callable[[dict], float | None]) -> tuple[list, list]:
    pairs = [(r["params"], v) for r in group if (v := value(r)) is not None]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def plot_metric(ax, group: list[dict], name: str, style: dict, label: str | None) -> None:
    """Median joined by a line, with its p10–p90 range as a bar: the bars are one artist (NaN
    between them), so drawing them costs one path however many cases the series has."""
    rows = [(r["params"], m) for r in group if (m := shown_metric(r, name))]
    if not rows:
        return
    ranges = []
    for n, m in rows:
        value = m["value"]
        ranges.append([(n, min(m.get("p10", value), value)), (n, max(m.get("p90", value), value))])
    ax.plot(*joined(ranges), color=style["color"], linewidth=1)
    ax.plot([n for n, _ in rows], [m["value"] for _, m in rows], label=label, **style)


def joined(lines: list[list[tuple[float, float]]]) -> tuple[list[float], list[float]]:
    """Several lines as one, NaN between them: one artist draws them all, as separate lines."""
    xs: list[float] = []
    ys: list[float] = []
    for line in lines:
        xs += [x for x, _ in line] + [math.nan]
        ys += [y for _, y in line] + [math.nan]
    return xs, ys


def bounded_legend(
    ax: Axes, noun: str = "series", fontsize: str = "small", title: str = ""
) -> None:
    """A legend of at most ``LEGEND_ENTRIES`` entries, its title saying how many there are
    where it lists fewer: a grid of many series stays readable, and drawing it stays cheap.
    Over ``BEST_PLACE_POINTS`` points it sits in a fixed corner: matplotlib finds its "best"
    place by testing every point drawn against every place it could go."""
    handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return
    shown = min(len(handles), LEGEND_ENTRIES)
    if shown < len(handles):
        title = f"{title}: " * bool(title) + f"first {shown} of {len(handles)} {noun}"
    drawn = sum(len(line.get_xdata()) for line in ax.get_lines())
    loc = "best" if drawn <= BEST_PLACE_POINTS else "upper left"
    ax.legend(handles[:shown], labels[:shown], fontsize=fontsize, title=title or None,
              title_fontsize=fontsize, loc=loc)  # fmt: skip
