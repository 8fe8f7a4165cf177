"""The compute-optimal frontier in the report: figures, tables, ``frontier.json`` and a summary.

Figures: the IsoFLOP curves (loss against N per budget, the parabola and its vertex), the
frontier (loss against compute, one point per run, their lower envelope and approach 3's
compute-optimal loss), N_opt and D_opt against compute (approach 2's vertices with their
intervals, approach 3's line with its bootstrap band), and time on this machine (tokens/s
against N, and the loss a training time buys at each size, the time-optimal size marked).
The report shows what the folder's records hold: fits are recomputed from them, with the time
budget and target loss of the folder's last ``frontier.json`` where it has one.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from scaling_bench.analysis.frontier import (
    COUNTING,
    FrontierAnalysis,
    Interval,
    analyse,
    envelope,
)
from scaling_bench.core.units import fmt_count
from scaling_bench.engine.frontier import load_design
from scaling_bench.report.figures import png_base64

FRONTIER_JSON = "frontier.json"


@dataclass(frozen=True)
class FrontierPlot:
    anchor: str
    title: str
    png_base64: str


def _ci(i: Interval | None, fmt: str = "{:.3g}") -> str:
    if i is None:
        return "–"
    if i.low is None or i.high is None:
        return fmt.format(i.value)
    return f"{fmt.format(i.value)} [{fmt.format(i.low)}, {fmt.format(i.high)}]"


def _count(i: Interval | None) -> str:
    if i is None:
        return "–"
    text = fmt_count(i.value)
    if i.low is None or i.high is None:
        return text
    return f"{text} [{fmt_count(i.low)}, {fmt_count(i.high)}]"


def _colors(n: int) -> list[str]:
    return [f"C{i % 10}" for i in range(n)]


def _isoflop_figure(a: FrontierAnalysis) -> Figure:
    fig = Figure(figsize=(6.4, 4.4), layout="constrained")
    ax = fig.subplots()
    for fit, color in zip(a.approach2.budgets, _colors(len(a.approach2.budgets)), strict=True):
        ns = [r.params for r in fit.runs]
        ax.plot(ns, [r.loss for r in fit.runs], "o", color=color, label=f"C = {fit.flops:.2g}")
        if fit.coefficients is not None:
            grid = np.geomspace(min(ns), max(ns), 100)
            style = "-" if fit.fitted else ":"
            ax.plot(grid, np.polyval(fit.coefficients, np.log(grid)), style, color=color)
        if fit.fitted:
            n = fit.n_opt
            err = None
            if n.low is not None and n.high is not None:
                err = [[n.value - n.low], [n.high - n.value]]
            ax.errorbar([n.value], [fit.loss_opt], xerr=err, fmt="*", ms=12, color=color, capsize=3)
    ax.set(
        xscale="log",
        xlabel="parameters N",
        ylabel="held-out loss (nats)",
        title="IsoFLOP curves: star = the budget's N_opt (dotted: no interior minimum)",
    )
    ax.legend(fontsize="small", title="FLOPs")
    return fig


def _frontier_figure(a: FrontierAnalysis) -> Figure:
    fig = Figure(figsize=(6.4, 4.4), layout="constrained")
    ax = fig.subplots()
    for fit, color in zip(a.approach2.budgets, _colors(len(a.approach2.budgets)), strict=True):
        ax.plot([r.flops for r in fit.runs], [r.loss for r in fit.runs], "o", color=color)
    edge = envelope(a.runs)
    ax.plot([r.flops for r in edge], [r.loss for r in edge], "k-", label="envelope of the runs")
    law = a.approach3.law
    if law is not None:
        cs = np.geomspace(min(r.flops for r in a.runs), max(r.flops for r in a.runs), 100)
        best = [float(law.loss(law.n_opt(c), law.d_opt(c))) for c in cs]
        ax.plot(cs, best, "--", color="grey", label="L(N_opt, D_opt), approach 3")
    ax.set(
        xscale="log",
        xlabel="compute C = 6ND (FLOPs)",
        ylabel="held-out loss (nats)",
        title="Frontier: one point per run",
    )
    ax.legend(fontsize="small")
    return fig


def _band(values: list[list[float]]) -> tuple[np.ndarray, np.ndarray] | None:
    rows = np.array(values, dtype=float)
    if rows.size == 0:
        return None
    with np.errstate(all="ignore"):
        return np.nanquantile(rows, 0.025, axis=0), np.nanquantile(rows, 0.975, axis=0)


def _optimal_figure(a: FrontierAnalysis) -> Figure | None:
    """None where neither approach has an optimum to draw (the lines above say why)."""
    fitted = [b for b in a.approach2.budgets if b.fitted]
    law = a.approach3.law
    if not fitted and law is None:
        return None
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    axes = fig.subplots(1, 2)
    cs = np.geomspace(min(a.budgets) / 2, max(a.budgets) * 2, 60)
    for ax, name, label in ((axes[0], "n_opt", "N_opt"), (axes[1], "d_opt", "D_opt")):
        points = [getattr(b, name) for b in fitted]
        if points:
            lo = [p.value - p.low if p.low is not None else 0 for p in points]
            hi = [p.high - p.value if p.high is not None else 0 for p in points]
            ax.errorbar(
                [b.flops for b in fitted],
                [p.value for p in points],
                yerr=[lo, hi],
                fmt="s",
                capsize=3,
                label="approach 2 (per budget)",
            )
        if a.approach2.a is not None:
            n2 = np.array([a.approach2.n_opt(c) for c in cs])
            ax.plot(
                cs,
                n2 if name == "n_opt" else cs / (6 * n2),
                "-",
                color="C0",
                label=f"approach 2: ∝ C^{_power(a, name, 2)}",
            )
        if law is not None:
            curve = [getattr(law, name)(c) for c in cs]
            ax.plot(cs, curve, "--", color="C1", label=f"approach 3: ∝ C^{_power(a, name, 3)}")
            band = _band([[getattr(r, name)(c) for c in cs] for r in a.approach3.replicates])
            if band is not None:
                ax.fill_between(cs, *band, color="C1", alpha=0.2)
        ax.set(
            xscale="log",
            yscale="log",
            xlabel="compute C (FLOPs)",
            ylabel=label,
            title=f"{label} against compute",
        )
        ax.legend(fontsize="small")
    return fig


def _power(a: FrontierAnalysis, name: str, approach: int) -> str:
    key = "a" if name == "n_opt" else "b"
    value = getattr(a.approach2, key) if approach == 2 else a.approach3.intervals.get(key)
    return f"{value.value:.2f}" if value is not None else "?"


def _time_figure(a: FrontierAnalysis) -> Figure | None:
    t = a.throughput
    if len(t.params) < 2:
        return None
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    rate_ax, loss_ax = fig.subplots(1, 2)
    grid = np.geomspace(t.params[0], t.params[-1], 200)
    rate_ax.plot(t.params, t.tokens_per_s, "o", label="train workload, measured")
    rate_ax.plot(grid, t(grid), "-", color="C0", alpha=0.5, label="log–log interpolation")
    rate_ax.set(
        xscale="log",
        yscale="log",
        xlabel="parameters N",
        ylabel="tokens/s",
        title="Training throughput on this machine",
    )
    rate_ax.legend(fontsize="small")
    best, law = a.time_optimal, a.approach3.law
    if best is not None and law is not None:
        tokens = best.seconds * t(grid)
        loss_ax.plot(grid, law.loss(grid, tokens), "-", color="C1")
        band = _band([list(r.loss(grid, tokens)) for r in a.approach3.replicates])
        if band is not None:
            loss_ax.fill_between(grid, *band, color="C1", alpha=0.2)
        loss_ax.plot(
            [best.params.value],
            [best.loss.value],
            "*",
            ms=14,
            color="C3",
            label=f"time-optimal: N = {fmt_count(best.params.value)}",
        )
        loss_ax.set(
            xscale="log",
            xlabel="parameters N",
            ylabel="predicted held-out loss",
            title=f"Loss after {_duration(best.seconds)} of training",
        )
        loss_ax.legend(fontsize="small")
    else:
        loss_ax.set_visible(False)
    return fig


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.3g} h"
    return f"{seconds / 60:.3g} min" if seconds >= 120 else f"{seconds:.3g} s"


def frontier_plots(a: FrontierAnalysis) -> list[FrontierPlot]:
    """Every frontier figure that has something to draw, in the report's order."""
    figures = [
        ("frontier-isoflop", "IsoFLOP curves", _isoflop_figure(a)),
        ("frontier-loss", "Loss against compute", _frontier_figure(a)),
        ("frontier-optimal", "N_opt and D_opt against compute", _optimal_figure(a)),
        ("frontier-time", "Time-optimal size on this machine", _time_figure(a)),
    ]
    return [FrontierPlot(anchor, title, png_base64(f)) for anchor, title, f in figures if f]


@dataclass(frozen=True)
class FrontierSection:
    """What the HTML report and the markdown summary show of a frontier: both lay out these
    rows, and only the HTML draws the plots (on first use: they take seconds)."""

    analysis: FrontierAnalysis
    counting: str = COUNTING
    budget_header: tuple[str, ...] = (
        "C (FLOPs)", "sizes", "N_opt (approach 2)", "D_opt (2)", "D/N (2)",
        "N_opt (approach 3)", "D_opt (3)", "D/N (3)",
    )  # fmt: skip

    @cached_property
    def plots(self) -> list[FrontierPlot]:
        return frontier_plots(self.analysis)

    @property
    def confidence(self) -> str:
        return f"{self.analysis.approach3.confidence:.0%}"

    @property
    def law_rows(self) -> list[tuple[str, str]]:
        names = {
            "E": "E",
            "A": "A",
            "B": "B",
            "alpha": "α",
            "beta": "β",
            "a": "a = β/(α+β)",
            "b": "b = α/(α+β)",
        }
        fit = self.analysis.approach3
        return [(names[k], _ci(v)) for k, v in fit.intervals.items()]

    @property
    def budget_rows(self) -> list[tuple[str, ...]]:
        rows = []
        a3 = self.analysis.approach3
        for fit in self.analysis.approach2.budgets:
            at = a3.at(fit.flops)
            rows.append(
                (
                    f"{fit.flops:.3g}",
                    ", ".join(fmt_count(r.params) for r in fit.runs),
                    _count(fit.n_opt) if fit.fitted else f"not fitted: {fit.reason}",
                    _count(fit.d_opt),
                    _ci(fit.tokens_per_param),
                    _count(at.get("n_opt")),
                    _count(at.get("d_opt")),
                    _ci(at.get("tokens_per_param")),
                )
            )
        return rows

    @property
    def optimal_rows(self) -> list[tuple[str, str]]:
        """The time-optimal answer, figure by figure with its interval; empty without one."""
        best = self.analysis.time_optimal
        if best is None:
            return []
        return [
            ("training time", _duration(best.seconds)),
            ("N", _count(best.params)),
            ("D (tokens)", _count(best.tokens)),
            ("tokens per parameter", _ci(best.tokens_per_param)),
            ("predicted held-out loss", _ci(best.loss, "{:.3f}")),
            ("C = 6·N·D (FLOPs)", f"{best.flops:.3g}"),
        ]

    @property
    def time_rows(self) -> list[tuple[str, ...]]:
        return [
            (
                fmt_count(r["params"]),
                fmt_count(r["tokens_per_s"]),
                f"{r['floor']:.3f}" if r["floor"] is not None else "–",
                fmt_count(r["tokens"]) if r["tokens"] is not None else "unreachable",
                _duration(r["seconds"]) if r["seconds"] is not None else "–",
            )
            for r in self.analysis.time_to_target
        ]

    @property
    def run_rows(self) -> list[tuple[str, ...]]:
        return [
            (
                r.case_id,
                fmt_count(r.params),
                fmt_count(r.tokens),
                f"{r.flops:.3g}",
                f"{r.loss:.4f}",
                f"{r.duration_s:.1f} s" if r.duration_s is not None else "–",
            )
            for r in self.analysis.runs
        ]

    @property
    def lines(self) -> list[str]:
        return summary_lines(self.analysis)


def _folder(source: str | Path) -> Path:
    path = Path(source)
    return path if path.is_dir() else path.parent


def saved_choices(folder: Path) -> dict[str, float | int]:
    """The time budget, target loss and bootstrap size of the folder's last analysis (so the
    report repeats ``frontier.json``'s figures), else the time budget of its design."""
    try:
        saved = json.loads((folder / FRONTIER_JSON).read_text(encoding="utf-8"))
        choices = {
            "seconds": (saved.get("time_optimal") or {}).get("seconds"),
            "target_loss": saved.get("target_loss"),
            "bootstrap": (saved.get("approach3") or {}).get("bootstrap"),
        }
        return {k: v for k, v in choices.items() if isinstance(v, int | float) and v > 0}
    except (OSError, ValueError, AttributeError):
        design = load_design(folder)
        return {"seconds": design.options.seconds} if design and design.options.seconds else {}


def frontier_section(records: list[dict], source: str | Path) -> FrontierSection | None:
    """The frontier part of the report, where the records hold a design's runs."""
    a = analyse(records, **saved_choices(_folder(source)))
    return None if a is None else FrontierSection(a)


def left_out_note(runs: int, section: FrontierSection | None) -> str | None:
    """Why a frontier's runs are missing from the plots against N and the exponents."""
    if not runs:
        return None
    where = (
        "the compute-optimal frontier section shows them"
        if section is not None
        else "none has a held-out loss to fit, so there is no frontier section; the cases "
        "table lists them"
    )
    return (
        f"{runs} run(s) of an IsoFLOP design are left out of the plots against N and the "
        f"exponents: each trains its own token count, so N is not the only axis that moves; "
        f"{where}."
    )


def summary_lines(a: FrontierAnalysis) -> list[str]:
    """The study's answer in a few lines, for the terminal and the report."""
    out = [f"{len(a.runs)} runs in {len(a.budgets)} budgets ({COUNTING})."]
    if a.excluded:
        out.append(f"{a.excluded} run(s) without a held-out loss were left out.")
    a2, a3 = a.approach2, a.approach3
    if a2.a is not None:
        out.append(f"approach 2: N_opt ∝ C^{_ci(a2.a, '{:.2f}')}, D_opt ∝ C^{_ci(a2.b, '{:.2f}')}")
    else:
        out.append(f"approach 2: no exponent ({a2.reason})")
    for fit in a2.budgets:
        if not fit.fitted:
            out.append(f"  budget {fit.flops:.3g} FLOPs not fitted: {fit.reason}")
    if a3.law is not None:
        i = a3.intervals
        out.append(
            f"approach 3: L = {_ci(i['E'])} + {_ci(i['A'])}/N^{_ci(i['alpha'], '{:.2f}')} + "
            f"{_ci(i['B'])}/D^{_ci(i['beta'], '{:.2f}')}"
        )
        out.append(f"  N_opt ∝ C^{_ci(i['a'], '{:.2f}')}, D_opt ∝ C^{_ci(i['b'], '{:.2f}')}")
        top = max(a.budgets)
        at = a3.at(top)
        out.append(
            f"  at C = {top:.3g}: N_opt {_count(at['n_opt'])}, D_opt {_count(at['d_opt'])}, "
            f"{_ci(at['tokens_per_param'])} tokens per parameter"
        )
    else:
        out.append(f"approach 3: not fitted ({a3.reason})")
    best = a.time_optimal
    if best is not None:
        line = (
            f"time-optimal for {_duration(best.seconds)} here: N = {_count(best.params)}, "
            f"D = {_count(best.tokens)} ({_ci(best.tokens_per_param)} tokens per parameter), "
            f"predicted loss {_ci(best.loss, '{:.3f}')}"
        )
        out.append(line + (f"; at {best.edge}" if best.edge else ""))
    else:
        out.append(f"time-optimal: none, {a.time_optimal_reason}")
    return out


def finite_json(value: object) -> object:
    """JSON has no infinity or NaN: such figures become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_json(v) for v in value]
    return value
