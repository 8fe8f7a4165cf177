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

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import chain
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


@dataclass(frozen=True)
class _Seen:
    """A case's first record: the digest of its canonical text, and where it is (which source
    of the merge, which line), so a merge holds 100 bytes a case rather than its record."""

    digest: bytes
    source: int
    line: int


def _digest(record: dict[str, Any]) -> bytes:
    return _text_digest(_canonical(record))


def _text_digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


def _read(files: Sequence[Path], kept: dict[str, _Seen]) -> int:
    """Read ``files`` into ``kept``, each case at its first record; a UserError for a different
    record of a case already kept. Returns how many records were read."""
    read = 0
    for i, path in enumerate(files):
        for n, record in numbered_records(path):
            read += 1
            seen = _Seen(_digest(record), i, n)
            first = kept.setdefault(record["case_id"], seen)
            if first.digest != seen.digest:
                _refuse(record["case_id"], f"{files[first.source]} line {first.line}", path, n)
    return read


def _refuse(case_id: str, first_where: str, path: Path, line: int) -> None:
    raise UserError(
        f"case {case_id}: {first_where} and {path} line {line} hold different records of it; "
        "keep one (delete the other line or leave its source out) and merge again; nothing was "
        "written"
    )


def merge_results(sources: Sequence[Path], out: Path) -> Merged:
    """Merge the records of ``sources`` into ``out/results.jsonl`` (see the module's rules).

    The sources are streamed twice: once for a digest per case, so conflicts are found before
    anything is written, once to write the records ``out`` lacks. A merge holds a digest and a
    place per case, never the records themselves."""
    if not sources:
        raise UserError("merge: name at least one results folder or file to merge")
    files = [results_file(source) for source in sources]
    seen: dict[str, _Seen] = {}
    read = _read(files, seen)  # the sources' conflicts, before anything is created
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: not a folder (merge writes {out / RESULTS_FILE})")
    ensure_writable_dir(out)
    target = out / RESULTS_FILE
    with ResultsLock(out):
        kept: dict[str, _Seen] = {}
        _read([target], kept)
        new: dict[tuple[int, int], bytes] = {}
        for case_id, first in seen.items():
            if (there := kept.get(case_id)) is None:
                new[first.source, first.line] = first.digest
            elif there.digest != first.digest:
                _refuse(case_id, f"{target} line {there.line}", files[first.source], first.line)
        _append(target, _records_at(files, new), len(new))
    return Merged(target, read, len(new), len(kept) + len(new))


def _records_at(files: Sequence[Path], wanted: dict[tuple[int, int], bytes]) -> Iterator[str]:
    """The records at the ``wanted`` (source, line) places, in the sources' order, as the store
    writes them. Their lines were validated by the first pass; a line whose digest no longer
    matches (the source changed since) stops the merge, and the append is undone."""
    for i, path in enumerate(files):
        with open(path, "rb") as f:
            for n, raw in enumerate(f, start=1):  # numbered as ``numbered_records`` numbers them
                if (digest := wanted.get((i, n))) is None:
                    continue
                text = _canonical(json.loads(raw))
                if _text_digest(text) != digest:
                    raise UserError(f"{path} line {n}: changed while merging; merge again")
                yield text + "\n"


def _append(path: Path, records: Iterator[str], count: int) -> None:
    """Append ``records`` in one append, fsync'd; on failure the file is as it was."""
    if not count:
        return
    lead = ["\n"] if path.exists() and needs_separator(path) else []  # a hand-edited last record
    append_text(path, chain(lead, records), f"{count} merged records", "merge again")
