"""The results store: append-only, fsync'd lines; loading refuses anything it cannot trust."""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import pytest

from scaling_bench.core.errors import UserError
from scaling_bench.core.stats import single, summarize
from scaling_bench.store.records import (
    RECORD_KEYS,
    SCHEMA_VERSION,
    append_record,
    ensure_writable_dir,
    load_records,
    make_record,
)


def record(case_id: str = "mlp-1e5-fp32-cpu", status: str = "ok", **fields) -> dict:
    return make_record(
        case_id,
        {"family": "mlp", "target_params": 1e5},
        status,
        env={"host": "test"},
        started_at=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC),
        duration_s=1.5,
        **fields,
    )


def test_record_has_every_schema_key_and_round_trips(tmp_path):
    path = tmp_path / "results.jsonl"
    first = record(params=101_770, metrics={"checkpoint_bytes": {"value": 4.0e5, "unit": "bytes"}})
    second = record("mlp-1e6-fp32-cpu", "oom", error="MemoryError: no room")
    append_record(path, first)
    append_record(path, second)
    assert set(first) == set(RECORD_KEYS)
    assert first["schema_version"] == SCHEMA_VERSION
    assert load_records(path) == [first, second]


def test_started_at_is_iso_8601_in_utc():
    local = datetime(2025, 1, 2, 5, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    stamp = make_record("c", {}, "ok", env={}, started_at=local, duration_s=0.0)["started_at"]
    assert stamp == "2025-01-02T03:04:05.000+00:00"


def test_unknown_status_is_a_bug_not_a_record():
    with pytest.raises(ValueError, match="'great' is not one of"):
        record(status="great")


def test_append_only_adds_bytes_after_the_existing_ones(tmp_path):
    path = tmp_path / "results.jsonl"
    append_record(path, record("a"))
    before = path.read_bytes()
    append_record(path, record("b"))
    after = path.read_bytes()
    assert after.startswith(before)
    assert after.count(b"\n") == 2 and after.endswith(b"\n")


def test_a_record_that_is_not_json_writes_nothing(tmp_path):
    path = tmp_path / "results.jsonl"
    append_record(path, record("a"))
    before = path.read_bytes()
    with pytest.raises(TypeError):
        append_record(path, record("b", config={"d_model": object()}))
    assert path.read_bytes() == before


def test_append_after_a_cut_off_line_is_refused_and_the_file_is_unchanged(tmp_path):
    path = tmp_path / "results.jsonl"
    append_record(path, record("a"))
    with open(path, "ab") as f:
        f.write(json.dumps(record("b")).encode()[:40])
    before = path.read_bytes()
    with pytest.raises(UserError, match=r"results\.jsonl line 2: .*cut off or corrupt.*new --out"):
        append_record(path, record("c"))
    assert path.read_bytes() == before


def test_append_after_a_complete_record_without_newline_starts_a_new_line(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps(record("a")))  # hand-edited: no final newline
    append_record(path, record("b"))
    assert [r["case_id"] for r in load_records(path)] == ["a", "b"]


def test_missing_or_empty_file_holds_no_records(tmp_path):
    assert load_records(tmp_path / "absent.jsonl") == []
    (tmp_path / "empty.jsonl").write_text("")
    assert load_records(tmp_path / "empty.jsonl") == []


def test_cut_off_line_is_a_user_error_naming_file_and_line(tmp_path):
    path = tmp_path / "results.jsonl"
    append_record(path, record("a"))
    with open(path, "ab") as f:
        f.write(json.dumps(record("b")).encode()[:-10])
    before = path.read_bytes()
    with pytest.raises(UserError, match=rf"{path} line 2: not valid JSON .*cut off or corrupt"):
        load_records(path)
    assert path.read_bytes() == before


def test_other_schema_version_is_a_user_error_naming_both_versions(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps({**record(), "schema_version": 99}) + "\n")
    with pytest.raises(UserError, match=rf"line 1: .*schema_version 99.*version {SCHEMA_VERSION}"):
        load_records(path)


def test_record_missing_keys_is_a_user_error_naming_them(tmp_path):
    path = tmp_path / "results.jsonl"
    incomplete = {k: v for k, v in record().items() if k not in ("env", "duration_s")}
    path.write_text(json.dumps(incomplete) + "\n")
    with pytest.raises(UserError, match="line 1: record lacks env, duration_s"):
        load_records(path)


def test_output_folder_is_created_with_its_parents(tmp_path):
    ensure_writable_dir(tmp_path / "a" / "b")
    assert (tmp_path / "a" / "b").is_dir()
    assert list((tmp_path / "a" / "b").iterdir()) == []  # the probe leaves nothing behind


def test_output_folder_under_a_file_is_a_user_error(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match="file/out: cannot create or write here"):
        ensure_writable_dir(tmp_path / "file" / "out")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_folder_is_a_user_error(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o500)
    with pytest.raises(UserError, match="ro: cannot create or write here"):
        ensure_writable_dir(folder)


# --- the schema ---------------------------------------------------------------------------------


def write_lines(path, *records: dict) -> None:
    """Records as a hand or another tool would write them: no checks, NaN allowed."""
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("metrics", [], "metrics: should be an object, got a list"),
        ("case_id", 5, "case_id: should be a string, got 5"),
        ("case_id", "", "case_id: should not be empty"),
        ("duration_s", "abc", "duration_s: should be a number, got 'abc'"),
        ("duration_s", -1.0, "duration_s: should be at least 0, got -1.0"),
        ("error", 5, "error: should be a string, got 5"),
        ("params", "abc", "params: should be an integer, got 'abc'"),
        ("params", True, "params: should be an integer, got true"),
        ("params", -3, "params: should be at least 0, got -3"),
        ("predicted", None, "predicted: should be an object, got null"),
        ("case", None, "case: should be an object, got null"),
        ("config", [1], "config: should be an object, got a list"),
        ("env", "laptop", "env: should be an object, got 'laptop'"),
        ("started_at", 0, "started_at: should be a string, got 0"),
        ("status", "great", "status: should be one of 'ok', 'oom', 'timeout', 'crashed', "),
        ("metrics", {"x": 5}, "metrics.x: should be an object, got 5"),
        ("metrics", {"x": {"unit": "s"}}, "metrics.x.value: is missing"),
        ("metrics", {"x": {"value": "fast"}}, "metrics.x.value: should be a number, got 'fast'"),
        (
            "metrics",
            {"x": {"value": math.nan}},
            "metrics.x.value: should be a finite number, got NaN",
        ),
        ("metrics", {"x": {"value": 1.0, "n": 1.5}}, "metrics.x.n: should be an integer, got 1.5"),
        ("metrics", {"x": {"value": 1.0, "unit": 7}}, "metrics.x.unit: should be a string, got 7"),
        (
            "metrics",
            {"x": {"value": 1.0, "samples": [1.0, math.inf]}},
            "metrics.x.samples[1]: should be a finite number, got Infinity",
        ),
        ("predicted", {"y": {"value": 1, "iqr": -1}}, "predicted.y.iqr: should be at least 0"),
    ],
)
def test_a_record_of_the_wrong_shape_is_one_line_naming_file_line_and_field(
    tmp_path, field, value, message
):
    path = tmp_path / "results.jsonl"
    write_lines(path, record("a"), record("b"), {**record("c"), field: value})
    with pytest.raises(UserError) as raised:
        load_records(path)
    assert str(raised.value).startswith(f"{path} line 3: {message}")
    assert "\n" not in str(raised.value)


def test_records_as_the_workloads_write_them_pass_the_schema(tmp_path):
    """The keys workloads add beside a metric's own (curves, by_lr, source, converged) and the
    nulls they write for non-finite figures are all part of the schema."""
    step = summarize([0.1, 0.12, 0.11], "s") | {"ci95_halfwidth": None, "converged": False}
    metrics = {
        "train_step_s": step,
        "peak_flops_per_s": single(2e11, "FLOP/s") | {"source": "measured"},
        "final_loss_mean": single(None, "nats")
        | {
            "n": 2,
            "by_lr": {"0.001": 2.1, "0.1": None},
            "samples": [2.1, None],
            "curves": {"lr=0.1,seed=0": [[10, 3.0], [20, None]]},
        },
        "best_lr": single(0.001, "lr"),
    }
    path = tmp_path / "results.jsonl"
    written = record(params=0, metrics=metrics, predicted={"checkpoint_bytes": single(4, "bytes")})
    append_record(path, written)
    assert load_records(path) == [written]


def test_a_bad_record_is_refused_on_append_and_writes_nothing(tmp_path):
    path = tmp_path / "results.jsonl"
    append_record(path, record("a"))
    before = path.read_bytes()
    with pytest.raises(UserError, match=r"the record of b: params: should be an integer, got 'x'"):
        append_record(path, {**record("b"), "params": "x"})
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    ("metrics", "field"),
    [
        ({"x": {"value": math.nan, "unit": "s"}}, "metrics.x.value: should be a finite number"),
        ({"x": {"value": 1.0, "by_lr": {"0.1": math.inf}}}, "metrics.x.by_lr.0.1 is NaN or inf"),
        ({"x": {"value": 1.0, "curves": {"a": [[1, math.nan]]}}}, r"metrics.x.curves.a\[0\]\[1\]"),
    ],
)
def test_nan_or_infinity_is_never_written(tmp_path, metrics, field):
    path = tmp_path / "results.jsonl"
    append_record(path, record("a"))
    before = path.read_bytes()
    with pytest.raises(UserError, match=rf"results\.jsonl: the record of b: {field}"):
        append_record(path, record("b", metrics=metrics))
    assert path.read_bytes() == before


def best_of_3_s(fn: Callable[[], object]) -> float:
    """The fastest of three runs: a busy moment or a garbage collection slows one, not all."""
    times = []
    for _ in range(3):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def test_checking_thousands_of_records_costs_less_than_parsing_their_json_twice(tmp_path):
    rng = random.Random(0)
    path = tmp_path / "results.jsonl"
    step = summarize([rng.random() for _ in range(30)], "s")
    metrics = {f"m{i}_s": step for i in range(10)}
    write_lines(path, *(record(f"case-{i}", metrics=metrics) for i in range(1000)))
    parse_s = best_of_3_s(lambda: [json.loads(line) for line in path.read_text().splitlines()])
    assert best_of_3_s(lambda: load_records(path)) < 3 * parse_s
