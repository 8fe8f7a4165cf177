"""The compute-optimal frontier in the report: its tables, its lines and ``frontier.json``.

The report shows what the folder's records hold: fits are recomputed from them, with the time
budget and target loss of the folder's last ``frontier.json`` where it has one. The HTML draws
the figures (``frontier.figures``); the markdown summary lays out the same rows.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TypedDict

from scaling_bench.core.units import fmt_count
from scaling_bench.frontier.analysis import COUNTING, FrontierAnalysis, analyse
from scaling_bench.frontier.design import load_design
from scaling_bench.frontier.figures import FrontierPlot, duration, frontier_plots
from scaling_bench.frontier.fit import Interval

FRONTIER_JSON = "frontier.json"


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
        rows: list[tuple[str, ...]] = []
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
            ("training time", duration(best.seconds)),
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
                duration(r["seconds"]) if r["seconds"] is not None else "–",
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


class SavedChoices(TypedDict, total=False):
    """The keywords of ``analyse`` that a folder's last analysis fixes (``saved_choices``)."""

    seconds: float
    target_loss: float
    bootstrap: int


def _positive(value: object) -> float | None:
    return value if isinstance(value, int | float) and value > 0 else None


def saved_choices(folder: Path) -> SavedChoices:
    """The time budget, target loss and bootstrap size of the folder's last analysis (so the
    report repeats ``frontier.json``'s figures), else the time budget of its design."""
    choices = SavedChoices()
    try:
        saved = json.loads((folder / FRONTIER_JSON).read_text(encoding="utf-8"))
        if (seconds := _positive((saved.get("time_optimal") or {}).get("seconds"))) is not None:
            choices["seconds"] = seconds
        if (target := _positive(saved.get("target_loss"))) is not None:
            choices["target_loss"] = target
        bootstrap = (saved.get("approach3") or {}).get("bootstrap")
        if isinstance(bootstrap, int) and bootstrap > 0:
            choices["bootstrap"] = bootstrap
    except (OSError, ValueError, AttributeError):
        design = load_design(folder)
        return (
            SavedChoices(seconds=design.options.seconds)
            if design and design.options.seconds
            else {}
        )
    return choices


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
            f"time-optimal for {duration(best.seconds)} here: N = {_count(best.params)}, "
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
