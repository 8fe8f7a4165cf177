"""What the documents and ``compare`` tabulate, and how each figure in a table is written.

``Findings`` computes once what the HTML report and the markdown summary both show, as rows of
formatted text, so the templates only lay them out; ``comparison_tables`` and ``gate_line`` are
``compare``'s terminal output, as ``FittedTable``s: a rich table where it fits the console, one
block per row where it would not (a CI log is 80 columns wide and no terminal), so no figure is
ever cut off.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from rich.console import RenderableType
from rich.text import Text

from scaling_bench.analysis.busy import busy_comparison_line, machine_busy_line
from scaling_bench.analysis.compare import FAILED_STATUSES, Comparison
from scaling_bench.analysis.fits import CONFIDENCE, ScalingFit, by_series, scaling_fits
from scaling_bench.analysis.theory import THEORY_TOLERANCE, theory_checks
from scaling_bench.analysis.unpaired import WHAT_INSTEAD
from scaling_bench.core.metrics import find
from scaling_bench.core.units import fmt_bytes
from scaling_bench.report import n_choice, sections
from scaling_bench.report.summary import (
    BUSY_LEGEND,
    UNSETTLED_MARK,
    UNSETTLED_NOTE,
    busy,
    summary_table,
    unsettled,
)
from scaling_bench.report.terminal import FittedTable, TextColumn
from scaling_bench.report.text import printable

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


def metric_label(metric: str) -> str:
    """What a person reads for ``metric``: its spec's label, else its name."""
    s = find(metric)
    return (s.label if s else "") or metric


def fmt_exponent(fit: ScalingFit) -> str:
    """``k [lo, hi]``, or ``k`` alone where two sizes leave no interval."""
    if fit.fit.ci is None:
        return f"{fit.fit.exponent:.2f}"
    lo, hi = fit.fit.ci
    return f"{fit.fit.exponent:.2f} [{lo:.2f}, {hi:.2f}]"


def fmt_theory(fit: ScalingFit) -> str:
    """The theory exponent, ✓ inside the fitted interval and ✗ outside."""
    if fit.theory_exponent is None:
        return ""
    mark = {True: " ✓", False: " ✗", None: ""}[fit.agrees_with_theory]
    return f"{fit.theory_exponent:.2f}{mark}"


def machines(records: list[dict]) -> list[dict]:
    """The distinct fingerprints among the records (usually one)."""
    seen: dict[str, dict] = {}
    for r in records:
        env = r.get("env") or {}
        seen.setdefault(repr(sorted(env.items())), env)
    return list(seen.values())


def machine_line(env: dict) -> str:
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


def machine_rows(env: dict) -> list[tuple[str, str]]:
    """A fingerprint as (key, value) rows, the keys that tell machines apart first."""
    keys = [k for k in MACHINE_KEYS if k in env] + [k for k in env if k not in MACHINE_KEYS]
    return [(k, str(env[k])) for k in keys]


def status_counts(records: list[dict]) -> str:
    """``7 ok, 1 oom``: the statuses in the order they first appear."""
    counts = Counter(r["status"] for r in records)
    return ", ".join(f"{n} {s}" for s, n in counts.items())


class Findings:
    """Everything a report shows (fits, theory checks, failures, machines), computed once for
    both documents; rows are formatted text."""

    def __init__(self, records: list[dict], source: str, confidence: float = CONFIDENCE) -> None:
        self.records = records
        self.source = source
        self.confidence = confidence
        self.tolerance = THEORY_TOLERANCE
        #: The records a registered section claims (``report.sections``: a frontier's runs
        #: each train their own D): that section shows them, not the series against N.
        self.claimed = sections.claimed(records)
        scaled = sections.unclaimed(records)
        self.groups = by_series(scaled)
        self.fits = scaling_fits(scaled, confidence)
        active = scaling_fits(scaled, confidence, against="active_params")
        self.fit_table = n_choice.beside_each_other(self.fits, active)
        self.checks = theory_checks(records)
        self.flagged = [c for c in self.checks if c.flagged]
        self.failed = [r for r in records if r["status"] != "ok"]
        self.machines = machines(records)
        self.machine_summary = "; ".join(machine_line(env) for env in self.machines)
        self.status_counts = status_counts(records)

    @property
    def fit_rows(self) -> list[tuple[str, ...]]:
        """(series, quantity, k [CI], theory k, R², sizes) for each fit."""
        return [
            (
                f.series,
                n_choice.label(f),
                fmt_exponent(f),
                fmt_theory(f),
                f"{f.fit.r2:.3f}",
                str(f.fit.n_points) + f" ({f.unsettled}{UNSETTLED_MARK})" * bool(f.unsettled),
            )
            for f in self.fit_table
        ]

    @property
    def figure_table(self) -> tuple[list[str], list[list[str]]]:
        """The run's summary table (header, rows) as the terminal prints it, unsettled figures
        marked."""
        table = summary_table(self.records, "")
        return [c.header for c in table.columns], [list(map(str, row)) for row in table.rows]

    @property
    def unsettled_note(self) -> str | None:
        return UNSETTLED_NOTE if unsettled(self.records) else None

    @property
    def busy_note(self) -> str | None:
        """The busy mark's legend and how busy the machine was, where a figure is marked."""
        return f"{BUSY_LEGEND}. {machine_busy_line(self.records)}." if busy(self.records) else None

    @property
    def flag_rows(self) -> list[tuple[str, ...]]:
        """(case, quantity, measured, predicted, ratio) for each check beyond the tolerance; the
        quantity by its spec's label."""
        return [
            (
                c.case_id,
                metric_label(c.quantity),
                fmt_value(c.measured, c.unit),
                fmt_value(c.predicted, c.unit),
                f"{c.ratio:.2f}",
            )
            for c in self.flagged
        ]

    @property
    def case_rows(self) -> list[tuple[str, ...]]:
        """(case, params, status, duration, error's first 160 characters) for every record."""
        return [
            (
                r["case_id"],
                f"{r['params']:,}" if r["params"] else "",
                r["status"],
                f"{r['duration_s']:.1f} s",
                (r.get("error") or "")[:160],
            )
            for r in self.records
        ]

    @property
    def machine_tables(self) -> list[list[tuple[str, str]]]:
        """One (key, value) table per distinct machine among the records."""
        return [machine_rows(env) for env in self.machines]


VERDICT_STYLES = {
    "regressed": "bold red",
    "improved": "green",
    "inconclusive": "yellow",
    "unchanged": "dim",
}


def comparison_tables(comparison: Comparison, show_all: bool = False) -> list[RenderableType]:
    """What a person reads after ``compare``: the moved metrics (all with ``show_all``), cases
    that could not be paired, the geometric-mean ratio per family, and a line naming the
    metrics that have no spec (not compared unless named)."""
    rows = sorted(
        (r for r in comparison.rows if show_all or r.verdict != "unchanged"),
        key=lambda r: (list(VERDICT_STYLES).index(r.verdict), r.case_id, r.metric),
    )
    moved = FittedTable(
        f"{comparison.current.source} against {comparison.base.source} "
        f"(threshold {comparison.threshold:.0%}, α {comparison.alpha:g})",
        [
            TextColumn("case"),
            TextColumn("metric"),
            *(TextColumn(name, "right") for name in ("base", "current", "ratio", "p")),
            TextColumn("verdict"),
            TextColumn("why", style="dim"),
        ],
        key_columns=2,
    )
    for r in rows:
        moved.add_row(
            r.case_id,
            r.metric,
            fmt_value(r.base, r.unit),
            fmt_value(r.current, r.unit),
            f"{r.ratio:.3f}" if r.ratio is not None else "",
            f"{r.p_value:.2g}" if r.p_value is not None else "",
            Text(r.verdict, style=VERDICT_STYLES[r.verdict]),
            r.note,
        )
    counts = {v: sum(r.verdict == v for r in comparison.rows) for v in VERDICT_STYLES}
    moved.caption = ", ".join(f"{n} {v}" for v, n in counts.items()) + (
        "" if show_all else " (--all lists the unchanged)"
    )
    tables: list[RenderableType] = [moved]
    unpaired = [
        *((c, "only in BASE", "") for c in comparison.only_base),
        *((c, "only in CURRENT", "") for c in comparison.only_current),
        *(
            (c, f"status {b} → {s}", "fails the gate" * (s in FAILED_STATUSES and b == "ok"))
            for c, b, s in comparison.status_changes
        ),
    ]
    if unpaired:
        tables.append(
            FittedTable(
                "Cases not compared",
                [TextColumn("case"), TextColumn("why"), TextColumn("gate")],
                list(unpaired),
            )
        )
    families = comparison.by_family()
    if families:
        table = FittedTable(
            f"Geometric-mean ratio CURRENT/BASE per family: "
            f"{machine_line(comparison.current.env)} vs {machine_line(comparison.base.env)}",
            [TextColumn("metric"), *(TextColumn(f, "right") for f in families)],
        )
        metrics = sorted({m for f in families.values() for m in f})
        for metric in metrics:
            cells = [families[f].get(metric) for f in families]
            table.add_row(metric, *(f"{c[0]:.3g}×" if c else "" for c in cells))
        tables.append(table)
    if comparison.unknown_metrics:
        tables.append(Text(printable(unknown_line(comparison.unknown_metrics)), style="yellow"))
    return tables


def unknown_line(names: Sequence[str]) -> str:
    """The note under ``compare``'s tables for metrics that no workload declared."""
    n = len(names)
    return (
        f"no spec: {n} metric{'s' * (n != 1)} not compared ({', '.join(names)}); "
        "name them with --metric to compare them as lower-is-better"
    )


def difference_lines(comparison: Comparison) -> str:
    """What the two runs' machines differ in (the kernels' ISA first), one note a line."""
    return "\n".join(f"note: the runs differ in {d}" for d in comparison.machine_differences)


def gate_line(comparison: Comparison) -> str:
    """The last lines of ``compare``: how the test was made, and what the exit code means, for
    a CI log. What the runs' machines differ in is said first, above the tables
    (``difference_lines``)."""
    notes = []
    if comparison.paired:
        notes.append(
            "note: paired: each ratio is the geometric mean over the rounds' ratios, each round "
            "of CURRENT beside the same round of BASE; p from a t-test of their logs"
        )
    busy = [line for line in [busy_comparison_line(comparison.rows)] if line]
    if not comparison.failed_gate and (line := comparison.drift_line()):
        return "\n".join((*notes, *busy, line))
    if comparison.within_process and comparison.drift is not None:
        notes.append(
            f"note: one process a side: a move counts only beyond run-to-run drift, where "
            f"{comparison.drift.describe(comparison.alpha)}; {WHAT_INSTEAD}"
        )
    return "\n".join((*notes, *busy, _verdict_line(comparison)))


def _verdict_line(comparison: Comparison) -> str:
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
