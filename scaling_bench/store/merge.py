"""Join results folders into one: the shards of a grid (``run --shard K/N``), runs on several hosts.

``merge_results(sources, out)`` reads each source, a results folder (its ``results.jsonl``) or a
results file, validated by the store's schema as every reader does, and writes the records into
``out/results.jsonl``:

- Records are compared as JSON (keys sorted, as the store writes them): a case id recorded with
  the same content in several sources (a folder given twice, a shard merged again) is kept once.
- A case id recorded with different content (two runs of one case, another host's ``env``, an
  edited line) is refused with the case id and both places, and nothing is written: which one
  is right is the user's call (delete the other line, or leave that source out).
- ``out`` may already hold records: they are read first, under the same rules, and only the
  records it lacks are appended. So merging is idempotent, and the shards of a job array can be
  merged as they finish, into the same folder, again and again; a record that contradicts one
  already in ``out`` is refused like any other.
- Order: ``out``'s own records, then the sources' in the order given, each case at its first
  occurrence.

``out`` is held with ``ResultsLock`` from before it is read until the records are written, so a
run or another merge into it waits its turn (is refused, naming the holder). The new records go
in one write, fsync'd, cut back if it fails part-way: ``out`` gets all of them or none.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scaling_bench.core.errors import UserError
from scaling_bench.store.lock import ResultsLock
from scaling_bench.store.records import (
    RESULTS_FILE,
    append_text,
    ensure_writable_dir,
    needs_separator,
    numbered_records,
)


@dataclass(frozen=True)
class Merged:
    """What a merge did: the file written, the records read from the sources, those appended
    (the rest were already in ``out`` or repeated), and how many ``out`` holds now."""

    path: Path
    read: int
    added: int
    total: int


def results_file(source: Path) -> Path:
    """A source's results file: ``DIR/results.jsonl`` for a folder, the file itself otherwise."""
    source = Path(source)
    if source.is_dir():
        path = source / RESULTS_FILE
        if not path.is_file():
            raise UserError(f"{source}: no {RESULTS_FILE} in this folder")
        return path
    if not source.exists():
        raise UserError(f"{source}: no such file or folder")
    return source


def _canonical(record: dict[str, Any]) -> str:
    """The record as the store writes it: what two records must share to be the same."""
    return json.dumps(record, sort_keys=True, allow_nan=False)


def _lines(path: Path) -> Iterator[tuple[str, str, str]]:
    """(case id, record as the store writes it, where) per record of the file, validated and
    streamed: a merge holds each record as its one line of text, never as a parsed object."""
    for n, record in numbered_records(path):
        yield record["case_id"], _canonical(record), f"{path} line {n}"


def merge_results(sources: Sequence[Path], out: Path) -> Merged:
    """Merge the records of ``sources`` into ``out/results.jsonl`` (see the module's rules)."""
    if not sources:
        raise UserError("merge: name at least one results folder or file to merge")
    files = [results_file(source) for source in sources]
    records = [found for path in files for found in _lines(path)]
    seen: dict[str, tuple[str, str]] = {}
    for record in records:  # the sources' conflicts, before anything is created
        _keep(seen, *record)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: not a folder (merge writes {out / RESULTS_FILE})")
    ensure_writable_dir(out)
    target = out / RESULTS_FILE
    with ResultsLock(out):
        kept: dict[str, tuple[str, str]] = {}  # case id -> (record as JSON, where it is)
        for record in _lines(target):
            _keep(kept, *record)
        new = [line for case_id, line, where in records if _keep(kept, case_id, line, where)]
        _append(target, new)
    return Merged(target, len(records), len(new), len(kept))


def _keep(kept: dict[str, tuple[str, str]], case_id: str, line: str, where: str) -> bool:
    """Whether the record ``line`` of ``case_id`` is new (then kept); False for a copy of one
    kept; a UserError for a different record of a case already kept."""
    if case_id not in kept:
        kept[case_id] = (line, where)
        return True
    first, first_where = kept[case_id]
    if line != first:
        raise UserError(
            f"case {case_id}: {first_where} and {where} hold different records of it; keep one "
            "(delete the other line or leave its source out) and merge again; nothing was written"
        )
    return False


def _append(path: Path, lines: list[str]) -> None:
    """Append ``lines`` as records in one write, fsync'd; on failure the file is as it was."""
    if not lines:
        return
    data = "\n".join(lines) + "\n"
    if path.exists() and needs_separator(path):  # a hand-edited, complete last record
        data = "\n" + data
    append_text(path, data, f"{len(lines)} merged records", "merge again")
