"""The compute-optimal frontier's figures, drawn from what the folder's records hold.

The IsoFLOP curves (loss against N per budget, the parabola and its vertex), the frontier (loss
against compute, one point per run, their lower envelope and approach 3's compute-optimal loss),
N_opt and D_opt against compute (approach 2's vertices with their intervals, approach 3's line
with its bootstrap band), and time on this machine (tokens/s against N, and the loss a training
time buys at each size, the time-optimal size marked). A figure with nothing to draw is left
out; the report's lines say why.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure

from scaling_bench.core.units import fmt_count
from scaling_bench.frontier.analysis import FrontierAnalysis, envelope
from scaling_bench.report.figures import png_base64


@dataclass(frozen=True)
class FrontierPlot:
    anchor: str
    title: str
    png_base64: str


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
        if fit.n_opt is not None and fit.loss_opt is not None:  # both, where fitted
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
            title=f"Loss after {duration(best.seconds)} of training",
        )
        loss_ax.legend(fontsize="small")
    else:
        loss_ax.set_visible(False)
    return fig


def duration(seconds: float) -> str:
    """Seconds as the unit a reader thinks in: s, min or h."""
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
