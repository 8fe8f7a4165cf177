"""The results store: one JSON record per line, appended and fsync'd, never rewritten.

A record is a fact about one case at one moment; analysis derives everything else from the records,
so the store only ever grows and a crash at any point loses at most the case that was running.

A last line without its newline means a writer died mid-line. ``append_record`` does not glue a
new record onto it and does not bury it under new lines (every later load would then stop at a
corrupt line in the middle of the file): it refuses with the file and line, so the user can drop
that one line and resume. A complete record that only lacks its newline (a hand edit) is kept and
the new record starts on a line of its own.

Records are checked against ``schema`` both ways: a bad one is never written, and a file edited
or produced elsewhere is refused at its first bad line, with the field, before any reader
indexes into it.
"""

from __future__ import annotations

import errno
import json
import math
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from scaling_bench.config.case import CaseDict
from scaling_bench.core.durable import fsync_path
from scaling_bench.core.errors import UserError
from scaling_bench.store.schema import METRICS, RECORD, STATUSES, describe, validated

SCHEMA_VERSION = 1
RESULTS_FILE = "results.jsonl"
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
    metrics: dict[str, dict[str, Any]] | None = None,
    predicted: dict[str, dict[str, Any]] | None = None,
    active_params: int | None = None,
) -> dict[str, Any]:
    """A record with every schema key, so readers never have to guess which keys exist; a routed
    family's record adds ``active_params`` (absent for dense families and older records)."""
    if status not in STATUSES:
        raise ValueError(f"status {status!r} is not one of {', '.join(STATUSES)}")
    record = {
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
    if active_params is not None:
        record["active_params"] = active_params
    return record


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
    validated(RECORD, record, where)
    return record


def _parse_line(path: Path, lineno: int, line: str) -> dict[str, Any]:
    where = f"{path} line {lineno}"
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise UserError(f"{where}: not valid JSON ({exc.msg}; cut off or corrupt)") from None
    return _check_record(record, where)


def numbered_records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Each record in the file with its line number, in order, validated as it is read; a
    missing file holds none. The file is streamed: a reader that keeps only what it shows of
    each record holds one record at a time, however many the file has."""
    path = Path(path)
    try:
        f = open(path, "rb")  # noqa: SIM115 (closed below; a missing file is no records)
    except FileNotFoundError:
        return
    with f:
        offset = 0
        for lineno, raw in enumerate(f, start=1):  # binary lines end at b"\n" only
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                at = offset + exc.start
                raise UserError(f"{path}: not UTF-8 text at byte {at} (corrupt)") from None
            offset += len(raw)
            if line.strip():
                yield lineno, _parse_line(path, lineno, line)


def iter_records(path: Path) -> Iterator[dict[str, Any]]:
    """``numbered_records`` without the numbers."""
    return (record for _, record in numbered_records(path))


def load_records(path: Path) -> list[dict[str, Any]]:
    """Every record in the file, validated; a missing or empty file holds none."""
    return list(iter_records(path))


#: What a report never shows of a figure: its raw samples and the summaries only ``compare``
#: tests (``analysis.compare``); each record keeps its value, its p10–p90 and its annotations.
UNSHOWN_FIGURE_KEYS = frozenset(("samples", "median", "iqr", "n"))


def shown_records(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records as a report holds them, read one at a time: without what it never shows
    (``UNSHOWN_FIGURE_KEYS``), and with what records repeat held once (keys, short strings,
    the machine's ``env``), so a report of 100k records holds a few KB a record, not the ten a
    parsed record takes."""
    strings: dict[str, str] = {}
    envs: dict[str, Any] = {}
    out = []
    for record in records:
        slim = dict(record)
        for section in ("metrics", "predicted"):
            slim[section] = {name: _shown_figure(m) for name, m in record[section].items()}
        slim = _shared(slim, strings)
        if isinstance(slim.get("case"), dict):
            slim["case"] = CaseDict(slim["case"])
        slim["env"] = envs.setdefault(json.dumps(slim["env"], sort_keys=True), slim["env"])
        out.append(slim)
    return out


def _shown_figure(metric: Any) -> Any:
    if not isinstance(metric, dict):
        return metric
    return {k: v for k, v in metric.items() if k not in UNSHOWN_FIGURE_KEYS}


#: Strings up to this length are held once however many records carry them (units, statuses,
#: axis values, case ids); longer ones (error texts) are rarely repeated.
_SHARED_STRING_CHARS = 64


def _shared(value: Any, strings: dict[str, str]) -> Any:
    """``value`` with its dict keys and short strings replaced by the first equal one seen."""
    if isinstance(value, dict):
        return {strings.setdefault(k, k): _shared(v, strings) for k, v in value.items()}
    if isinstance(value, list):
        return [_shared(v, strings) for v in value]
    if isinstance(value, str) and len(value) <= _SHARED_STRING_CHARS:
        return strings.setdefault(value, value)
    return value


def needs_separator(path: Path) -> bool:
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


def problem_with(record: dict[str, Any]) -> str | None:
    """Why ``record`` cannot be written (a wrong type, a NaN), or None: a worker's fields are
    checked before they reach the file, so a bad figure ends its case, not the run."""
    try:
        _check_record(record, "the record")
        json.dumps(record, allow_nan=False)
    except UserError as exc:
        return str(exc)
    except (TypeError, ValueError):
        return f"{_non_finite(record) or 'a value'} is not JSON (NaN, infinite or not a number)"
    return None


def figures_problem(metrics: dict[str, Any]) -> str | None:
    """Why a workload's figures cannot be recorded (``metrics.x.value: should be a finite number,
    got NaN``), or None: checked as the workload ends, so one bad figure ends its case with the
    field named while the figures of the workloads before it stay in the record."""
    try:
        METRICS.validate_python(metrics)
        json.dumps(metrics, allow_nan=False)
    except ValidationError as exc:
        return describe(exc, "metrics")
    except (TypeError, ValueError):
        field = _non_finite(metrics, "metrics") or "a value"
        return f"{field} is not JSON (NaN, infinite or not a number)"
    return None


def append_record(path: Path, record: dict[str, Any]) -> None:
    """Append one record as one line and fsync it, so it survives any later crash.

    The record is validated and serialised before the file is touched: a bad record writes nothing.
    A write that fails part-way (a full disk) is cut back to the file's previous length, so the
    file never ends in half a record that would stop every later load.
    """
    path = Path(path)
    where = f"{path}: the record of {record.get('case_id')}"
    _check_record(record, where)
    try:
        line = json.dumps(record, sort_keys=True, allow_nan=False) + "\n"
    except ValueError:
        field = _non_finite(record)
        if not field:
            raise
        raise UserError(
            f"{where}: {field} is NaN or infinite, which JSON cannot hold; record it as null"
        ) from None
    if path.exists() and needs_separator(path):
        line = "\n" + line
    append_text(path, line, f"the record of {record['case_id']}", "run again with --resume")


def replace_records(path: Path, records: Sequence[dict[str, Any]], again: str) -> None:
    """Write ``records`` as the whole file, atomically: a derived file (an A/B's pooled sides)
    is either its old self or its new self, never half of each, whatever stops the writer."""
    path = Path(path)
    for record in records:
        _check_record(record, f"{path}: the record of {record.get('case_id')}")
    text = "".join(json.dumps(r, sort_keys=True, allow_nan=False) + "\n" for r in records)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise UserError(f"{path}: cannot write ({exc.strerror}); {again}") from None


def append_text(path: Path, text: str | Iterable[str], what: str, again: str) -> None:
    """Append ``text`` (whole records; or its pieces, which a merge of 100k records produces
    one by one rather than hold) as one append and fsync it. A write that fails part-way (a full
    disk), or a piece that cannot be produced, cuts the file back to its previous length, so the
    file never ends in half a record that would stop every later load; the error says what was
    not written (``what``) and how to go on (``again``)."""
    is_new = not path.exists()
    pieces = [text] if isinstance(text, str) else text
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError as exc:
        raise UserError(f"{path}: cannot open for writing ({exc.strerror})") from None
    try:
        length = os.fstat(fd).st_size
        try:
            for piece in pieces:
                data = memoryview(piece.encode("utf-8"))
                while data:  # one write for a regular file; the loop covers a short one
                    data = data[os.write(fd, data) :]
            os.fsync(fd)
        except OSError as exc:
            os.ftruncate(fd, length)
            raise UserError(_write_failure(path, what, exc, again)) from None
        except BaseException:
            os.ftruncate(fd, length)
            raise
    finally:
        os.close(fd)
    if is_new:
        fsync_path(path.parent)


def _write_failure(path: Path, what: str, exc: OSError, again: str) -> str:
    """The one line for a failed append, which has left the file as it was."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        problem, fix = "disk full (no space left on device)", "free space"
    else:
        problem, fix = f"cannot write ({exc.strerror})", "fix that"
    return f"{path}: {problem} while writing {what}; nothing was written, {fix} and {again}"


def _non_finite(value: Any, field: str = "") -> str:
    """Where in a record the first NaN or infinity is (``metrics.x.by_lr.0.1``), if anywhere."""
    if isinstance(value, float) and not math.isfinite(value):
        return field or "the record"
    if isinstance(value, dict):
        named = ((f"{field}.{key}" if field else str(key), v) for key, v in value.items())
    elif isinstance(value, list | tuple):
        named = ((f"{field}[{i}]", v) for i, v in enumerate(value))
    else:
        return ""
    return next((found for name, v in named if (found := _non_finite(v, name))), "")


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
