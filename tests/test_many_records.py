"""What the readers of many records hold, counted: bytes a record, records read, artists and
legend entries drawn, digests kept. No test here times anything: each asserts the quantity that
made a 100k-record report, compare or merge superlinear or gigabytes large
(``studies/many_records.py`` makes the records)."""

from __future__ import annotations

import json
import random
import tracemalloc
from array import array
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
from many_records_study import MANY, many_records
from matplotlib.figure import Figure

from scaling_bench.analysis import theory
from scaling_bench.analysis.compare import compare_runs, selectable
from scaling_bench.analysis.fits import by_series
from scaling_bench.config.case import Case
from scaling_bench.core.errors import UserError
from scaling_bench.core.stats import quantiles
from scaling_bench.report.plotting import LEGEND_ENTRIES, bounded_legend, plot_metric
from scaling_bench.store import merge
from scaling_bench.store.foreign import load_run
from scaling_bench.store.merge import merge_results
from scaling_bench.store.records import RESULTS_FILE, UNSHOWN_FIGURE_KEYS, iter_records
from scaling_bench.store.records import shown_records as shown

SMALL, LARGE = MANY // 2, MANY
#: Bytes a report holds per record (measured: 4.5 KB; a parsed record without samples: 9.3 KB).
SHOWN_RECORD_BYTES = 5500
#: Bytes compare holds per case of one run (measured: 5.0 KB; the parsed record: 17 KB).
COMPARED_CASE_BYTES = 6000


@pytest.fixture
def folder(many_records_folder: Path) -> Path:
    return many_records_folder


def _held(load) -> int:
    """Bytes still allocated after ``load()``, its result alive."""
    tracemalloc.start()
    try:
        kept = load()
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del kept
    return held


def test_a_report_holds_a_slim_record_each_and_twice_the_records_twice_the_bytes(folder) -> None:
    path = folder / RESULTS_FILE
    small = _held(lambda: shown(islice(iter_records(path), SMALL)))
    large = _held(lambda: shown(iter_records(path)))
    assert large / LARGE < SHOWN_RECORD_BYTES
    assert 1.8 < large / small < 2.2  # linear: no per-record cost grows with the count


def test_a_shown_record_drops_what_no_report_shows_and_shares_what_records_repeat(folder):
    records = shown(iter_records(folder / RESULTS_FILE))
    assert len(records) == LARGE
    figures = [m for r in records for s in ("metrics", "predicted") for m in r[s].values()]
    assert not any(UNSHOWN_FIGURE_KEYS & m.keys() for m in figures)
    assert all("p10" in m for m in figures if m["unit"] == "s")  # the range a plot draws
    assert len({id(r["env"]) for r in records}) == 1  # one machine: one env held
    assert len({id(m["unit"]) for m in figures}) == len({m["unit"] for m in figures})


def test_a_shown_records_case_is_parsed_once_however_often_the_report_asks(folder) -> None:
    """A report asks each record's case a dozen times (series, sections, batch plots): parsed
    anew each time, that was a third of a 20k-record report."""
    record = shown(islice(iter_records(folder / RESULTS_FILE), 1))[0]
    first = Case.from_dict(record["case"])
    assert Case.from_dict(record["case"]) is first
    assert first == Case.from_dict(dict(record["case"]))  # the plain dict parses to the same
    assert first.series_id is first.series_id


def test_compare_holds_the_selectable_metrics_of_each_case_compactly(folder) -> None:
    path = folder / RESULTS_FILE
    keep = selectable(None)
    held = _held(lambda: load_run(path, keep))
    assert held / LARGE < COMPARED_CASE_BYTES
    case = next(iter(load_run(path, keep).cases.values()))
    assert all(keep(name) for name in case.metrics)
    assert isinstance(case.metrics["train_step_s"]["samples"], array)
    assert len(case.metrics["train_step_s"]["samples"]) == many_records.SAMPLES
    only = load_run(path, selectable(["checkpoint_bytes"])).cases[case.case_id].metrics
    assert set(only) == {"checkpoint_bytes"}


def test_compact_runs_compare_as_the_full_ones(folder) -> None:
    path = folder / RESULTS_FILE
    full = compare_runs(load_run(path), load_run(path))
    compact = compare_runs(load_run(path, selectable(None)), load_run(path, selectable(None)))
    assert compact.to_dict()["rows"] == full.to_dict()["rows"]
    assert len({r.case_id for r in compact.rows}) == LARGE


def test_merge_keeps_a_digest_per_case_and_each_record_once(folder, tmp_path) -> None:
    out = tmp_path / "merged"
    first = merge_results([folder, folder], out)
    assert (first.read, first.added, first.total) == (2 * LARGE, LARGE, LARGE)
    again = merge_results([folder], out)
    assert (again.read, again.added, again.total) == (LARGE, 0, LARGE)
    lines = (out / RESULTS_FILE).read_text().splitlines()
    assert lines == (folder / RESULTS_FILE).read_text().splitlines()  # as the store writes them
    seen: dict = {}
    merge._read([folder / RESULTS_FILE], seen)
    assert len(seen) == LARGE and {len(s.digest) for s in seen.values()} == {16}


def test_merge_refuses_a_different_record_of_a_case_and_writes_nothing(folder, tmp_path) -> None:
    edited = tmp_path / "edited.jsonl"
    record = json.loads((folder / RESULTS_FILE).read_text().splitlines()[5])
    record["duration_s"] = 2.0
    edited.write_text(json.dumps(record, sort_keys=True) + "\n")
    with pytest.raises(UserError, match=f"case {record['case_id']}: .* line 6 and .* line 1"):
        merge_results([folder, edited], tmp_path / "out")
    assert not (tmp_path / "out" / RESULTS_FILE).exists()


def test_a_series_of_many_cases_draws_two_artists_and_a_bounded_legend(folder) -> None:
    groups = by_series(shown(iter_records(folder / RESULTS_FILE)))
    ax = Figure().subplots()
    for i, (series, group) in enumerate(groups.items()):
        plot_metric(ax, group, "train_step_s", {"color": f"C{i % 10}", "marker": "o"}, series)
    assert len(ax.get_lines()) == 2 * len(groups)  # a line and its bars, however many cases
    bounded_legend(ax)
    assert len(ax.get_legend().get_texts()) == min(len(groups), LEGEND_ENTRIES)
    assert ax.get_legend()._loc == 2  # over BEST_PLACE_POINTS: a fixed corner, upper left


def test_a_legend_of_more_entries_than_it_lists_says_how_many() -> None:
    ax = Figure().subplots()
    for i in range(3 * LEGEND_ENTRIES):
        ax.plot([1, 2], [i, i], label=f"s{i}")
    bounded_legend(ax, "sizes", title="parameters")
    legend = ax.get_legend()
    assert len(legend.get_texts()) == LEGEND_ENTRIES
    assert legend.get_title().get_text() == (
        f"parameters: first {LEGEND_ENTRIES} of {3 * LEGEND_ENTRIES} sizes"
    )


def test_theory_checks_read_each_record_a_bounded_number_of_times(folder, monkeypatch) -> None:
    """Twice the records, twice the reads: each series' rates are found once, not once a case."""
    records = shown(iter_records(folder / RESULTS_FILE))
    calls = []
    real = theory.flops_per_sample
    monkeypatch.setattr(theory, "flops_per_sample", lambda r, w: calls.append(1) or real(r, w))
    reads = []
    for n in (SMALL, LARGE):
        calls.clear()
        checks = theory.theory_checks(records[:n])
        reads.append(len(calls))
        assert len({c.case_id for c in checks}) == n
    assert reads[1] == 2 * reads[0]


def test_quantiles_are_numpys_to_the_bit() -> None:
    rng = random.Random(0)
    qs = (0.1, 0.25, 0.5, 0.75, 0.9)
    for _ in range(2000):
        xs = [
            rng.lognormvariate(0, rng.choice((0.01, 1.0, 5.0))) for _ in range(rng.randint(1, 40))
        ]
        assert quantiles(xs, qs) == [float(q) for q in np.quantile(xs, qs)]
