"""Terminal tables read anywhere: at 80 columns without a terminal (a CI log), every figure of
``compare``, of the end-of-run summary and of ``report``'s markdown is printed whole."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import synthetic
from rich.console import Console
from rich.text import Text

from scaling_bench.frontends.cli import main
from scaling_bench.report.summary import summarize_run, summary_columns
from scaling_bench.report.tables import Findings, fmt_value
from scaling_bench.report.terminal import FittedTable, TextColumn
from scaling_bench.store.records import RESULTS_FILE, load_records

WIDTH = 80


@pytest.fixture
def narrow(monkeypatch: pytest.MonkeyPatch) -> None:
    """A console as a CI log has one: no terminal (capsys), 80 columns."""
    monkeypatch.setenv("COLUMNS", str(WIDTH))


@pytest.fixture
def runs(tmp_path: Path) -> tuple[Path, Path]:
    base = synthetic.write(tmp_path / "base", synthetic.run(seed=0))
    current = synthetic.write(tmp_path / "current", synthetic.run(seed=1, slowdown=1.2))
    return base, current


def row_figures(row: dict) -> list[tuple[str, str]]:
    """(header, figure) of one row, formatted as the compare table formats them."""
    figures = [
        ("base", fmt_value(row["base"], row["unit"])),
        ("current", fmt_value(row["current"], row["unit"])),
    ]
    if row["ratio"] is not None:
        figures.append(("ratio", f"{row['ratio']:.3f}"))
    if row["p_value"] is not None:
        figures.append(("p", f"{row['p_value']:.2g}"))
    return figures


def assert_fits(out: str, width: int = WIDTH) -> None:
    """Tables fit; a note is one line of prose a terminal or CI log wraps (one line to grep)."""
    too_wide = [s for s in out.splitlines() if len(s) > width and not s.startswith("note: ")]
    assert not too_wide, too_wide[:3]
    assert "…" not in out  # nothing cut short


def compare_rows(capsys: pytest.CaptureFixture[str], base: Path, current: Path) -> list[dict]:
    main(["compare", str(base), str(current), "--json"])
    return json.loads(capsys.readouterr().out)["rows"]


def test_compare_keeps_every_figure_at_80_columns(capsys, narrow, runs) -> None:
    rows = compare_rows(capsys, *runs)
    assert main(["compare", *map(str, runs), "--all"]) == 1
    out = capsys.readouterr().out
    assert_fits(out)
    for row in rows:
        block = out[out.index(f"{row['case_id']}  {row['metric']}\n") :]
        lines = "\n".join(block.splitlines()[1:3])  # the row's figures, under case and metric
        for header, figure in row_figures(row):
            assert f"{header} {figure}" in lines, (row["case_id"], row["metric"], figure)
        assert f"verdict {row['verdict']}" in lines
    assert out.strip().splitlines()[-1].startswith("gate FAILED")


def test_compare_in_a_ci_log_subprocess_keeps_every_figure(capsys, runs) -> None:
    rows = compare_rows(capsys, *runs)
    code = "import sys; from scaling_bench.frontends.cli import main; sys.exit(main())"
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    done = subprocess.run(
        [sys.executable, "-c", code, "compare", *map(str, runs)],
        capture_output=True,
        text=True,
        env=env | {"COLUMNS": str(WIDTH), "TERM": "dumb"},
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    assert_fits(done.stdout)
    for row in (r for r in rows if r["verdict"] != "unchanged"):
        for header, figure in row_figures(row):
            assert f"{header} {figure}" in done.stdout


def test_a_wide_console_gets_the_table(capsys, monkeypatch, runs) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    main(["compare", *map(str, runs)])
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if "case" in line and "verdict" in line)
    assert all(h in header for h in ("base", "current", "ratio", "p"))


def test_the_run_summary_keeps_every_figure_at_80_columns(capsys, narrow, tmp_path) -> None:
    records = synthetic.run(sizes=(1e4, 1e5, 1e6, 1e7))
    folder = synthetic.write(tmp_path / "run", records)
    summarize_run(folder, time.perf_counter() - 1.0, records)
    out = capsys.readouterr().out
    assert_fits(out)
    blocks = _blocks(out, [r["case_id"] for r in records])
    columns = summary_columns()
    shown = 0
    for r in load_records(folder / RESULTS_FILE):
        for header, cell in columns[1:]:
            if value := cell(r):
                assert f"{header} {value}" in blocks[r["case_id"]], (r["case_id"], header)
                shown += 1
    assert shown > 5 * len(records)  # the figures, not only the names
    assert "wall time" in out.splitlines()[-1]


def _blocks(out: str, keys: list[str]) -> dict[str, str]:
    """The text under each key's heading line, up to the next key's (keys in printed order)."""
    starts = [out.index(f"\n{k}\n") for k in keys] + [len(out)]
    return {k: out[a:b] for k, a, b in zip(keys, starts, starts[1:], strict=False)}


def test_the_report_markdown_keeps_every_figure_at_80_columns(capsys, narrow, tmp_path) -> None:
    records = synthetic.run()
    folder = synthetic.write(tmp_path / "run", records)
    assert main(["report", str(folder)]) == 0
    out = capsys.readouterr().out
    findings = Findings(records, str(folder))
    assert findings.fit_rows
    for row in findings.fit_rows:
        line = next(line for line in out.splitlines() if f"| {row[0]} | {row[1]} |" in line)
        assert all(cell in line for cell in row if cell and cell != row[4])  # R² is HTML-only


def test_a_fitted_table_is_a_table_where_it_fits_and_blocks_where_not() -> None:
    table = FittedTable(
        "title",
        [TextColumn("case"), TextColumn("a long header", "right"), TextColumn("b", "right")],
        caption="caption",
    )
    table.add_row("test_x[mlp-1e4-fp32-cpu]", "1,234,567 samples/s", Text("12.5 ms", "bold"))
    table.add_row("gpt-1e8-bf16-cuda", "", "3.00 MiB")

    def render(width: int) -> str:
        buffer = io.StringIO()
        Console(file=buffer, width=width).print(table)
        return buffer.getvalue()

    wide, narrow = render(120), render(40)
    assert "┃" in wide and "┃" not in narrow
    for out, width in ((wide, 120), (narrow, 40)):
        assert_fits(out, width)
        for text in ("test_x[mlp-1e4-fp32-cpu]", "1,234,567 samples/s", "12.5 ms", "3.00 MiB"):
            assert text in out  # brackets are text, not markup
    assert "a long header 1,234,567 samples/s" in narrow
    assert "a long header" not in narrow.split("gpt-1e8-bf16-cuda")[1]  # empty cells left out
