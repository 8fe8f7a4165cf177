"""The table a person reads at the end of a run: one row per case, columns from the workloads.

Each workload declares its summary columns (``Workload.columns``); a column that is empty for
every record (a workload the grid did not run) is left out. Where the table is wider than the
console (80 columns in a CI log), each case is printed as a block instead, so no figure is cut.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from scaling_bench.analysis.busy import machine_busy_line
from scaling_bench.core.units import fmt_bytes
from scaling_bench.meters.specs import BUSY_SHARE, WITHIN_ONE_PROCESS
from scaling_bench.report.terminal import FittedTable, TextColumn
from scaling_bench.store.records import RESULTS_FILE, iter_records
from scaling_bench.workloads.base import declarations
from scaling_bench.workloads.catalog import FOREIGN_PROCESSES, Column

if TYPE_CHECKING:
    from rich.console import Console


def _cell(column: Column) -> Callable[[dict], str]:
    def cell(record: dict) -> str:
        section = record[column.section]
        metric = next((section[n] for n in column.metrics if n in section), None)
        value = metric.get("value") if isinstance(metric, dict) else None
        if not isinstance(value, int | float):
            return ""
        text = fmt_bytes(value) if column.fmt == "bytes" else column.fmt.format(value)
        marks = UNSETTLED_MARK * (metric.get("settled") is False)
        marks += BUSY_MARK * (metric.get("busy") is True)
        return text + marks + THROTTLED_MARK * (metric.get("throttled") is True)

    return cell


#: Beside a figure that missed its sample count or confidence target (``meters.timing``).
UNSETTLED_MARK = "~"
UNSETTLED_NOTE = (
    f"{UNSETTLED_MARK} unsettled: fewer than the minimum samples, or the median's 95% CI wider "
    "than its target; raise --budget"
)


#: Beside a figure timed while other processes used the CPUs (``meters.foreign_load``).
BUSY_MARK = "^"
BUSY_LEGEND = (
    f"{BUSY_MARK} busy: timed while other processes used more than {BUSY_SHARE:.0%} of the "
    "machine's CPUs; rerun on a quiet machine before reading or comparing it"
)


def busy(records: list[dict]) -> bool:
    return any(
        isinstance(m, dict) and m.get("busy") is True
        for r in records
        for m in r["metrics"].values()
    )


#: Beside a figure timed while the GPU throttled (``meters.device_state``).
THROTTLED_MARK = "!"
THROTTLED_NOTE = (
    f"{THROTTLED_MARK} throttled: the GPU capped its clocks (power, thermal or hardware slowdown) "
    "in some of the timed blocks; see each metric's throttle_reasons"
)


WITHIN_PROCESS_NOTE = (
    "latency figures are settled within their worker process only: between separate runs they "
    "move far more than their intervals (gpt 1e6 TPOT 0.52-1.46 ms over five runs); "
    "--processes N measures them across N workers"
)


def settled_within_one_process(records: list[dict]) -> bool:
    return any(
        isinstance(m, dict) and m.get("settled_within") == WITHIN_ONE_PROCESS
        for r in records
        for m in r["metrics"].values()
    )


def throttled(records: list[dict]) -> bool:
    return any(
        isinstance(m, dict) and m.get("throttled") is True
        for r in records
        for m in r["metrics"].values()
    )


def shared_device(records: list[dict]) -> list[str]:
    """The cases kept although other compute processes were on their GPU (``--isolation warn``)."""
    return [
        r["case_id"]
        for r in records
        if r["status"] == "ok" and r["metrics"].get(FOREIGN_PROCESSES.name, {}).get("value")
    ]


def unsettled(records: list[dict]) -> bool:
    return any(
        isinstance(m, dict) and m.get("settled") is False
        for r in records
        for m in r["metrics"].values()
    )


def summary_columns() -> list[tuple[str, Callable[[dict], str]]]:
    return [
        ("case", lambda r: r["case_id"]),
        ("params", lambda r: f"{r['params']:,}" if r["params"] else ""),
        ("status", lambda r: r["status"]),
        *((c.header, _cell(c)) for w in declarations() for c in w.columns),
    ]


def timed_seconds(records: list[dict]) -> float:
    """Seconds this run spent inside timed regions, from the workloads' ``*_timed_s``."""
    names = [f"{w.name}_timed_s" for w in declarations()]
    return sum(r["metrics"][n]["value"] for r in records for n in names if n in r["metrics"])


def summary_table(records: list[dict], title: str) -> FittedTable:
    """One row per record; a column that is empty for every record is left out. A table where
    it fits the console, one block per case where it would not (``FittedTable``)."""
    columns = summary_columns()
    rows = [[cell(r) for _, cell in columns] for r in records]
    shown = [i for i, _ in enumerate(columns) if any(row[i] for row in rows)]
    return FittedTable(
        title,
        [
            TextColumn(columns[i][0], "left" if columns[i][0] in ("case", "status") else "right")
            for i in shown
        ],
        [[row[i] for i in shown] for row in rows],
    )


#: What the summary reads of a figure: its value and its marks.
_SUMMARY_KEYS = ("value", "settled", "busy", "throttled", "settled_within")


def summarized(records: Iterable[dict]) -> list[dict]:
    """The records as the summary reads them, read one at a time: each figure a column shows
    or that carries a mark, with only its value and marks, so the summary of a results file
    of 100k records holds a few hundred bytes a record, not the records."""
    shown = {FOREIGN_PROCESSES.name} | {
        n for w in declarations() for c in w.columns for n in c.metrics
    }
    names: dict[str, str] = {}
    out = []
    for record in records:
        slim = {k: record[k] for k in ("case_id", "params", "status")}
        for section in ("metrics", "predicted"):
            slim[section] = {
                names.setdefault(n, n): {k: m[k] for k in _SUMMARY_KEYS if k in m}
                for n, m in record[section].items()
                if n in shown or any(k in m for k in _SUMMARY_KEYS[1:])
            }
        out.append(slim)
    return out


def summarize_run(
    out: Path, started: float, ran: list[dict], console: Console | None = None
) -> None:
    """The summary table of the results file, and what share of this run's wall time (``ran``:
    its records) was spent inside timed regions. The console is as wide as the terminal, or
    ``COLUMNS``, or 80 columns where there is no terminal (a CI log): every figure stays whole."""
    from rich.console import Console

    records = summarized(iter_records(out / RESULTS_FILE))
    console = console or Console()
    summary_table(records, f"{len(records)} cases in {out / RESULTS_FILE}").print_to(console)
    if unsettled(records):
        console.print(UNSETTLED_NOTE)
    if busy(records):
        console.print(BUSY_LEGEND)
    if settled_within_one_process(records):
        console.print(WITHIN_PROCESS_NOTE)
    if throttled(records):
        console.print(THROTTLED_NOTE)
    if shared := shared_device(records):
        console.print(
            f"warning: {len(shared)} case(s) shared the GPU with other compute processes "
            f"({', '.join(shared)}; their pids are in {FOREIGN_PROCESSES.name}); "
            "--isolation error records such a case as skipped"
        )
    timed = timed_seconds(ran)
    wall = time.perf_counter() - started
    console.print(f"wall time {wall:.1f}s, of which {timed:.1f}s ({timed / wall:.0%}) timed")
    if line := machine_busy_line(ran):
        console.print(line)
