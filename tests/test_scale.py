"""Readers of many records: streamed, and with figures whose cost and legends do not grow with
the number of cases (``studies/many_records.py`` makes the records)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from many_records_study import MANY, many_records
from matplotlib.lines import Line2D

from scaling_bench.analysis.fits import by_series
from scaling_bench.core.errors import UserError
from scaling_bench.frontends.cli import main
from scaling_bench.report.batches import batch_figure
from scaling_bench.report.plotting import LEGEND_ENTRIES
from scaling_bench.store.records import RESULTS_FILE, iter_records, load_records

N = MANY


@pytest.fixture
def many(many_records_folder: Path) -> Path:
    return many_records_folder


def test_the_generator_writes_n_distinct_schema_valid_records(many: Path) -> None:
    records = load_records(many / RESULTS_FILE)
    assert len(records) == len({r["case_id"] for r in records}) == N


def test_a_reader_yields_each_record_before_reading_the_next(tmp_path: Path) -> None:
    """Streamed, not read whole: the first record comes out before a corrupt second line is
    read, which then stops the reader with its line number."""
    path = many_records.write(tmp_path, 1)
    with open(path, "a") as f:
        f.write('{"cut off\n')
    records = iter_records(path)
    assert next(records)["case_id"] == json.loads(path.read_text().splitlines()[0])["case_id"]
    with pytest.raises(UserError, match="line 2: not valid JSON"):
        next(records)


def test_the_batch_plot_draws_a_line_and_a_legend_entry_per_series_not_per_case(many) -> None:
    records = load_records(many / RESULTS_FILE)
    fig = batch_figure(by_series(records), "train")
    rate_ax = fig.axes[0]
    lines = [a for a in rate_ax.get_children() if isinstance(a, Line2D) and a.get_label()[0] != "_"]
    assert len(lines) == 10  # 5 families x 2 precisions: one artist each, all N/4 cases of it
    legend = rate_ax.get_legend()
    assert len(legend.get_texts()) == min(10, LEGEND_ENTRIES)


def test_a_legend_of_more_series_than_it_lists_says_how_many(many) -> None:
    records = load_records(many / RESULTS_FILE)
    for r in records:  # every case its own series: an optimizer each
        r["case"]["optimizer"] = "opt-" + r["case_id"].rsplit("-bs", 1)[0]
    fig = batch_figure(by_series(records), "train")
    legend = fig.axes[0].get_legend()
    assert len(legend.get_texts()) == LEGEND_ENTRIES
    assert legend.get_title().get_text().startswith(f"first {LEGEND_ENTRIES} of ")


def test_a_folder_of_2000_records_reports_and_compares(capsys, many, tmp_path) -> None:
    html, md = tmp_path / "r.html", tmp_path / "r.md"
    assert main(["report", str(many), "--html", str(html), "--markdown", str(md)]) == 0
    assert html.stat().st_size > 0 and md.read_text().count("\n") > 10
    capsys.readouterr()
    assert main(["compare", str(many), str(many), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert len({r["case_id"] for r in rows}) == N


def test_merging_many_records_keeps_each_once(capsys, many, tmp_path) -> None:
    out = tmp_path / "merged"
    assert main(["merge", str(many), str(many), "--out", str(out)]) == 0
    assert main(["merge", str(many), "--out", str(out)]) == 0
    assert len(load_records(out / RESULTS_FILE)) == N
