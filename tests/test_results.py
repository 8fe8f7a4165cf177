"""The results store: append-only, fsync'd lines; loading refuses anything it cannot trust."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta, timezone

import pytest

from scaling_bench.core.errors import UserError
from scaling_bench.store.records import (
    RECORD_KEYS,
    SCHEMA_VERSION,
    STATUSES,
    append_record,
    done_case_ids,
    ensure_writable_dir,
    load_records,
    make_record,
)


def record(case_id: str = "mlp-1e5-fp32-cpu", status: str = "ok", **fields) -> dict:
    return make_record(
        case_id,
        {"family": "mlp", "params": 1e5},
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


def test_every_status_counts_as_done(tmp_path):
    path = tmp_path / "results.jsonl"
    for status in STATUSES:
        append_record(path, record(f"case-{status}", status))
    assert done_case_ids(path) == {f"case-{status}" for status in STATUSES}


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
