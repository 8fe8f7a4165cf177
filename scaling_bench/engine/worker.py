"""Run one case in a fresh interpreter and report how it ended; started by ``runner``.

Protocol: ``python -m scaling_bench.engine.worker JOB RESULT``. ``JOB`` is a job file
(``protocol.Job``). Its function is called with the case dict and the run's settings and returns
record fields (``params``, ``config``, ``metrics``, ``predicted``, optionally ``status`` and
``error``). The worker writes ``{"status", "error", ...those fields}`` to ``RESULT`` (a temporary
file renamed into place, so the parent never reads half a result) and exits 0, also when the
function raised: that is reported as ``oom`` or ``crashed`` in ``RESULT``. Everything else (a non-
zero exit, a signal, no ``RESULT``) is the parent's to classify. stdout and stderr belong to the
user code; the parent keeps them for crash records. At ``dump_stacks_at`` (epoch seconds, shortly
before the runner's timeout) a worker still running prints its stacks there, so a timeout record
says where it hung. The worker dies with its parent (``parent_pid``).

This module imports neither torch nor rich: a worker pays only for what the case imports.
"""

from __future__ import annotations

import ctypes
import faulthandler
import gc
import importlib
import os
import pickle
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from scaling_bench.core.errors import UserError
from scaling_bench.engine import malloc
from scaling_bench.engine.protocol import (
    Job,
    Settings,
    keep_partials_at,
    read_job,
    write_json,
)
from scaling_bench.store.records import STATUSES

RESULT_FIELDS = ("status", "error", "params", "active_params", "config", "metrics", "predicted")
ERROR_CHARS = 2000
# torch's CPU allocator reports failure as a plain RuntimeError with this text; MPS and some CUDA
# paths say "out of memory" in a RuntimeError too.
_OOM_MESSAGES = ("can't allocate memory", "out of memory")
_PR_SET_PDEATHSIG = 1


def clip(text: str) -> str:
    """The end of a long message: a traceback's last lines say what went wrong."""
    text = text.strip()
    return text if len(text) <= ERROR_CHARS else "…" + text[-ERROR_CHARS:]


def is_oom(exc: BaseException) -> bool:
    """Whether the exception means memory ran out.

    torch's ``OutOfMemoryError`` is matched by class name along the MRO, which also covers the
    ``torch.cuda`` alias and subclasses without importing torch into a worker that did not.
    """
    if isinstance(exc, MemoryError):
        return True
    if any(cls.__name__ == "OutOfMemoryError" for cls in type(exc).__mro__):
        return True
    return isinstance(exc, RuntimeError) and any(m in str(exc).lower() for m in _OOM_MESSAGES)


def _crashed(error: str) -> dict[str, Any]:
    return {"status": "crashed", "error": clip(error)}


def _checked(fields: Any, execute: str) -> dict[str, Any]:
    """The returned fields with status filled in, or a crash saying how they break the contract."""
    if not isinstance(fields, dict):
        return _crashed(f"{execute} returned {type(fields).__name__}, not a dict of record fields")
    unknown = sorted(set(fields) - set(RESULT_FIELDS))
    if unknown:
        return _crashed(f"{execute} returned unknown fields {', '.join(map(str, unknown))}")
    status = fields.get("status", "ok")
    if status not in STATUSES:
        return _crashed(f"{execute} returned status {status!r}, not one of {', '.join(STATUSES)}")
    return {"error": None, **fields, "status": status}


def run_case(
    execute: str, case: dict[str, Any], settings: Settings, known_path: str | None = None
) -> dict[str, Any]:
    """Call ``execute`` on the case, the run's settings and what the runner already knew of the
    case (``known_path``); an exception becomes an ``oom`` or ``crashed`` result."""
    module_name, _, function_name = execute.partition(":")
    try:
        function = getattr(importlib.import_module(module_name), function_name)
        known = pickle.loads(Path(known_path).read_bytes()) if known_path else {}
        # What is alive once imported (torch's ~400k objects) lives as long as the worker: frozen,
        # a collection walks only the case's own objects (0.15 s a collection before, ~0 after;
        # the timer, the memory meters and every model swap collect).
        gc.freeze()
        fields = function(case, settings, **known)
    except UserError as exc:  # the user's mistake, found late: its one line says it all
        return _crashed(str(exc))
    except Exception as exc:
        if is_oom(exc):
            return {"status": "oom", "error": clip(f"{type(exc).__name__}: {exc}")}
        return _crashed("".join(traceback.format_exception(exc)))
    return _checked(fields, execute)


def _die_with_runner(runner_pid: int) -> None:
    """Linux: get SIGKILL when the runner dies, so an orphan never holds the memory a resumed run
    needs (the worker has its own session, so a terminal's signals do not reach it)."""
    if sys.platform == "linux":
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != runner_pid:  # the runner died before prctl took effect
        os._exit(1)


def start(job: Job, parent_pid: int | None = None) -> None:
    """What a worker does before its case: die with its parent (``parent_pid``, else the job's),
    report where it crashes or hangs, keep partial results where the job says, hold its heap
    steady (unless the run says otherwise), import the run's plugins."""
    _die_with_runner(job.parent_pid if parent_pid is None else parent_pid)
    malloc.apply(job.settings.malloc)
    faulthandler.enable()  # a segfault or an abort leaves a traceback in the crash record
    if job.dump_stacks_at is not None and job.dump_stacks_at - time.time() > 0:
        faulthandler.dump_traceback_later(job.dump_stacks_at - time.time())
    keep_partials_at(job.partial_path)
    if job.settings.threads:  # a CPU shared with other jobs runs better on fewer threads
        import torch

        torch.set_num_threads(job.settings.threads)
    for module in job.settings.plugins:
        importlib.import_module(module)


def main(argv: list[str], parent_pid: int | None = None) -> None:
    """The worker on ``argv`` (JOB RESULT). A fork server's child is given its parent: the job
    names the server that ran when it was written, and the server may have been started anew
    since (after a crash)."""
    job_path, result_path = argv
    job = read_job(Path(job_path))
    start(job, parent_pid)
    result = run_case(job.execute, job.case, job.settings, job.known_path)
    try:
        write_json(Path(result_path), result)
    except (TypeError, ValueError) as exc:
        crash = _crashed(f"{job.execute} returned fields that are not JSON: {exc}")
        write_json(Path(result_path), crash)


if __name__ == "__main__":
    main(sys.argv[1:])
