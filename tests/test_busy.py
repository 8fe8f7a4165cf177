"""A figure timed on a busy machine is named: in the summary, the documents and ``compare``."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import synthetic
from rich.console import Console

from scaling_bench.analysis.busy import busy_reason, machine_busy_line
from scaling_bench.core.stats import single
from scaling_bench.frontends.cli import main
from scaling_bench.report.summary import BUSY_MARK, summarize_run, summary_table


def share(fraction: float, busy: bool, wall_s: float = 2.0, cores: int = 2) -> dict:
    """A ``{w}_foreign_cpu_fraction`` metric as ``meters.foreign_load`` records it."""
    load = {"foreign_cores": fraction * cores, "cores": cores, "wall_s": wall_s, "busy": busy}
    return single(fraction, "fraction") | {"n": 20} | load


def busy_run(seed: int = 0, slowdown: float = 1.0, busy_cases: int = 1) -> list[dict]:
    """The synthetic run with its first ``busy_cases`` cases' train figures timed beside a
    neighbour that used 45% of 2 cores; the other cases' metered and quiet."""
    records = synthetic.run(seed=seed, slowdown=slowdown)
    for i, record in enumerate(records):
        busy = i < busy_cases
        metrics = record["metrics"]
        metrics["train_foreign_cpu_fraction"] = share(0.45 if busy else 0.0, busy)
        for name in ("train_step_s", "train_samples_per_s", "train_mfu"):
            metrics[name] |= {"busy": busy, "foreign_cpu_fraction": 0.45 if busy else 0.0}
    return records


def test_a_busy_figure_is_marked_in_the_summary_and_a_quiet_one_is_not() -> None:
    records = busy_run()
    table = summary_table(records, "")
    throughput = [c.header for c in table.columns].index("train samples/s")
    assert table.rows[0][throughput].endswith(BUSY_MARK)
    assert not any(BUSY_MARK in str(cell) for row in table.rows[1:] for cell in row)


def test_the_run_ends_with_the_legend_and_one_line_naming_how_busy_the_machine_was(
    tmp_path: Path,
) -> None:
    records = busy_run(busy_cases=2)
    out = synthetic.write(tmp_path / "run", records)
    buffer = io.StringIO()
    summarize_run(out, time.perf_counter() - 10, records, Console(file=buffer, width=200))
    lines = buffer.getvalue().strip().splitlines()
    assert "^ busy: timed while other processes used more than 5%" in buffer.getvalue()
    # 2 of 6 workloads' blocks at 0.9 cores, each the same length: 0.30 cores on average.
    assert lines[-1] == (
        "machine busy: other processes used 0.30 of 2 cores during the timed blocks; 2 of 6 "
        "timed workloads' figures marked busy: rerun them on a quiet machine"
    )


def test_a_quiet_run_says_so_and_a_run_with_nothing_metered_says_nothing() -> None:
    assert machine_busy_line(busy_run(busy_cases=0)).startswith("machine quiet: other processes")
    assert machine_busy_line(synthetic.run()) is None


def test_a_busy_figure_is_marked_in_both_documents(tmp_path: Path) -> None:
    records = busy_run()
    results = synthetic.write(tmp_path / "run", records)
    html, markdown = tmp_path / "r.html", tmp_path / "r.md"
    assert main(["report", str(results), "--html", str(html), "--markdown", str(markdown)]) == 0
    for text in (html.read_text().replace("<tr>", "\n"), markdown.read_text()):
        rows = [line for line in text.splitlines() if records[0]["case_id"] in line]
        assert any(BUSY_MARK in row for row in rows), rows
        assert "busy: timed while other processes used more than 5%" in text
        quiet = [line for line in text.splitlines() if records[1]["case_id"] in line]
        assert quiet and not any(BUSY_MARK in row for row in quiet)


def test_a_slowdown_timed_on_a_busy_machine_is_inconclusive_and_a_quiet_one_still_gates(
    capsys, tmp_path
):
    base = synthetic.write(tmp_path / "base", busy_run(seed=0, busy_cases=0))
    slow = synthetic.write(tmp_path / "slow", busy_run(seed=1, slowdown=1.5, busy_cases=6))
    assert main(["compare", str(base), str(slow), "--json"]) == 1
    rows = json.loads(capsys.readouterr().out)["rows"]
    train = [r for r in rows if r["metric"] == "train_step_s"]
    assert {r["verdict"] for r in train} == {"inconclusive"}
    assert all("busy machine: other processes used 45% of the CPUs (current)" in r["note"]
               for r in train)  # fmt: skip
    forward = {r["verdict"] for r in rows if r["metric"] == "forward_step_s"}
    assert forward == {"regressed"}  # the quiet figures still gate


def test_compare_of_busy_figures_exits_0_saying_in_one_line_why(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")  # the line unwrapped, as a log wider than 80 shows it
    base = synthetic.write(tmp_path / "base", busy_run(seed=0, busy_cases=6))
    slow = synthetic.write(tmp_path / "slow", busy_run(seed=1, slowdown=1.2, busy_cases=0))
    assert main(["compare", str(base), str(slow), "--metric", "train_step_s"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line for line in out if line.startswith("note:") and "busy" in line] == [
        "note: 6 figure(s) inconclusive: timed while other processes used the CPUs (marked "
        "busy in the record); rerun on a quiet machine"
    ]


def test_a_figure_not_marked_busy_has_no_busy_reason() -> None:
    assert busy_reason({"value": 1.0, "busy": False, "foreign_cpu_fraction": 0.01}) is None
    assert busy_reason({"value": 1.0}) is None
    assert busy_reason({"value": 1.0, "busy": True}) == "busy machine"


def test_a_paired_comparison_on_a_busy_machine_keeps_its_verdict_and_notes_the_load(
    capsys, tmp_path
):
    """An A/B's rounds alternate under the same load, so the pairs still judge the change."""
    from test_ab import DRIFT, rounds_of

    sides = []
    for name, factor in (("b", 1.0), ("c", 1.07)):
        records = rounds_of([factor * d for d in DRIFT])
        records[0]["metrics"]["train_step_s"] |= {"busy": True, "foreign_cpu_fraction": 0.45}
        sides.append(synthetic.write(tmp_path / name, records))
    assert (
        main(["compare", *map(str, sides), "--metric", "train_step_s", "--paired", "--json"]) == 1
    )
    (row,) = json.loads(capsys.readouterr().out)["rows"]
    assert row["verdict"] == "regressed"
    assert "busy machine: other processes used 45% of the CPUs (base)" in row["note"]
