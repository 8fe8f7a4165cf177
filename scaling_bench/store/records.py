"""The results store: one JSON record per line, appended and fsync'd, never rewritten.

A record is a fact about one case at one moment; analysis derives everything else from the records,
so the store only ever grows and a crash at any point loses at most the case that was running.

A last line without its newline means a writer died mid-line. ``append_record`` does not glue a
new record onto it and does not bury it under new lines (every later load would then stop at a
corrupt line in the middle of the file): it refuses with the file and line, so the user can drop
that one line and resume. A complete record that only lacks its newline (a hand edit) is kept and
the new record starts on a line of its own.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from scaling_bench.core.durable import fsync_path
from scaling_bench.core.errors import UserError

SCHEMA_VERSION = 1
#: The training peak that the plan's memory prediction is held against, by device type: the
#: allocator's on a GPU, the worker's RSS above its baseline on a CPU.
TRAIN_PEAK_NAMES = {
    "cuda": "train_peak_gpu_allocated_bytes",
    "cpu": "train_peak_cpu_rss_above_baseline_bytes",
}
RESULTS_FILE = "results.jsonl"
STATUSES = ("ok", "oom", "timeout", "crashed", "skipped", "diverged")
RECORD_KEYS = (
    "schema_version",
    "case_id",
    "case",
    "status",
    "error",
    "params",
    "config",
    "metrics",
    "predicted",
    "env",
    "started_at",
    "duration_s",
)


def make_record(
    case_id: str,
    case: dict[str, Any],
    status: str,
    *,
    env: dict[str, Any],
    started_at: datetime,
    duration_s: float,
    error: str | None = None,
    params: int | None = None,
    config: dict[str, Any] | None = None,
    metrics: dict[str, dict] | None = None,
    predicted: dict[str, dict] | None = None,
) -> dict[str, Any]:
    """A record with every schema key, so readers never have to guess which keys exist."""
    if status not in STATUSES:
        raise ValueError(f"status {status!r} is not one of {', '.join(STATUSES)}")
    return {
        "schema_version": SCHEMA_VERSION,
        "case_id": case_id,
        "case": case,
        "status": status,
        "error": error,
        "params": params,
        "config": config,
        "metrics": metrics or {},
        "predicted": predicted or {},
        "env": env,
        "started_at": started_at.astimezone(UTC).isoformat(timespec="milliseconds"),
        "duration_s": duration_s,
    }


def _check_record(record: Any, where: str) -> dict[str, Any]:
    """The record itself, or a UserError saying what is wrong with it at ``where``."""
    if not isinstance(record, dict):
        raise UserError(f"{where}: not a JSON object (cut off or corrupt)")
    version = record.get("schema_version")
    if version != SCHEMA_VERSION:
        raise UserError(
            f"{where}: record has schema_version {version}, this scaling-bench reads version "
            f"{SCHEMA_VERSION}; use a matching scaling-bench or a new --out"
        )
    missing = [key for key in RECORD_KEYS if key not in record]
    if missing:
        raise UserError(f"{where}: record lacks {', '.join(missing)}")
    if record["status"] not in STATUSES:
        raise UserError(f"{where}: unknown status {record['status']!r}")
    return record


def _parse_line(path: Path, lineno: int, line: str) -> dict[str, Any]:
    where = f"{path} line {lineno}"
    try:
        record = json.loads(line)
    except ValueError as exc:
        raise UserError(f"{where}: not valid JSON ({exc.msg}; cut off or corrupt)") from None
    return _check_record(record, where)


def load_records(path: Path) -> list[dict[str, Any]]:
    """Every record in the file, validated; a missing or empty file holds none."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text at byte {exc.start} (corrupt)") from None
    return [
        _parse_line(path, lineno, line)
        for lineno, line in enumerate(text.split("\n"), start=1)
        if line.strip()
    ]


def done_case_ids(path: Path) -> set[str]:
    """Case ids that already have a record: every status is final, so these are not run again."""
    return {record["case_id"] for record in load_records(path)}


def _needs_separator(path: Path) -> bool:
    """Whether the file ends in a complete record without its newline; raise if it ends mid-line."""
    with open(path, "rb") as f:
        if f.seek(0, os.SEEK_END) == 0:
            return False
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return False
    lines = path.read_text(encoding="utf-8", errors="replace").split("\n")
    try:
        _parse_line(path, len(lines), lines[-1])
    except UserError as exc:
        raise UserError(
            f"{exc}; not appending after it: remove that last line, or use a new --out"
        ) from None
    return True


def append_record(path: Path, record: dict[str, Any]) -> None:
    """Append one record as one line and fsync it, so it survives any later crash.

    The record is validated and serialised before the file is touched: a bad record writes nothing.
    """
    path = Path(path)
    _check_record(record, f"record for {path}")
    line = json.dumps(record, sort_keys=True) + "\n"
    is_new = not path.exists()
    if not is_new and _needs_separator(path):
        line = "\n" + line
    data = memoryview(line.encode("utf-8"))
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        while data:
            data = data[os.write(fd, data) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    if is_new:
        fsync_path(path.parent)


def ensure_writable_dir(directory: Path) -> None:
    """Create the output folder and prove a file can be written there, before any case runs."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory) as probe:
            probe.write(b"probe")
            probe.flush()
    except OSError as exc:
        raise UserError(f"{directory}: cannot create or write here ({exc.strerror})") from None
