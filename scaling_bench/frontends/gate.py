"""What ``compare`` and ``ab`` print: what the runs' machines differ in, the comparison's tables
and gate line, or its JSON; the exit status a CI job reads (1 on a regression or a newly
failing case; 0 when the run-to-run drift leaves a move inconclusive, which the last line says)."""

from __future__ import annotations

import json
from pathlib import Path

from scaling_bench.analysis.compare import Comparison
from scaling_bench.core.errors import UserError


def show_comparison(
    comparison: Comparison, *, show_all: bool, as_json: bool, plot: str | None
) -> int:
    """Print ``comparison`` (and write ``plot``); the gate's exit status."""
    if plot:
        from scaling_bench.report.figures import comparison_png

        try:
            Path(plot).write_bytes(comparison_png(comparison))
        except OSError as exc:
            raise UserError(f"--plot {plot}: cannot write ({exc.strerror})") from None
    if as_json:
        print(json.dumps(comparison.to_dict(), indent=2))
    else:
        from rich.console import Console

        from scaling_bench.report.tables import comparison_tables, difference_lines, gate_line
        from scaling_bench.report.text import printable

        console = Console()
        if comparison.machine_differences:
            lines = printable(difference_lines(comparison), lines=True)
            console.print(lines, markup=False, soft_wrap=True)
        for table in comparison_tables(comparison, show_all=show_all):
            console.print(table)
        console.print(printable(gate_line(comparison), lines=True), markup=False, soft_wrap=True)
    return 1 if comparison.failed_gate else 0
