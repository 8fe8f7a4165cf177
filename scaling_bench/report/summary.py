"""The table a person reads at the end of a run: one row per case, columns from the workloads.

Each workload declares its summary columns (``Workload.columns``); a column that is empty for
every record (a workload the grid did not run) is left out.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from scaling_bench.core.units import fmt_bytes
from scaling_bench.store.records import RESULTS_FILE, load_records
from scaling_bench.workloads.base import Column, ordered


def _cell(column: Column) -> Callable[[dict], str]:
    def cell(record: dict) -> str:
        section = record[column.section]
        metric = next((section[n] for n in column.metrics if n in section), None)
        value = metric.get("value") if isinstance(metric, dict) else None
        if not isinstance(value, int | float):
            return ""
        return fmt_bytes(value) if column.fmt == "bytes" else column.fmt.format(value)

    return cell


def summary_columns() -> list[tuple[str, Callable[[dict], str]]]:
    return [
        ("case", lambda r: r["case_id"]),
        ("params", lambda r: f"{r['params']:,}" if r["params"] else ""),
        ("status", lambda r: r["status"]),
        *((c.header, _cell(c)) for w in ordered() for c in w.columns),
    ]


def timed_seconds(records: list[dict]) -> float:
    """Seconds this run spent inside timed regions, from the workloads' ``*_timed_s``."""
    names = [f"{w.name}_timed_s" for w in ordered()]
    return sum(r["metrics"][n]["value"] for r in records for n in names if n in r["metrics"])


def summarize_run(out: Path, started: float, ran: list[dict]) -> None:
    """The summary table of the results file, and what share of this run's wall time (``ran``:
    its records) was spent inside timed regions."""
    from rich.console import Console
    from rich.table import Table

    columns = summary_columns()
    records = load_records(out / RESULTS_FILE)
    rows = [[cell(r) for _, cell in columns] for r in records]
    shown = [i for i, _ in enumerate(columns) if any(row[i] for row in rows)]
    table = Table(title=f"{len(records)} cases in {out / RESULTS_FILE}")
    for i in shown:
        header = columns[i][0]
        left = header in ("case", "status")
        table.add_column(header, justify="left" if left else "right", no_wrap=header == "case")
    for row in rows:
        table.add_row(*(row[i] for i in shown))
    timed = timed_seconds(ran)
    console = Console(width=max(Console().width, 200))
    console.print(table)
    wall = time.perf_counter() - started
    console.print(f"wall time {wall:.1f}s, of which {timed:.1f}s ({timed / wall:.0%}) timed")
