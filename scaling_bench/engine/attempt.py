"""One worker process of a case, in a scratch folder of its own, and how it ended, in words.

The runner calls ``run_process`` once per process of a case. Whatever happens to the worker (it
returns, dies, hangs, or its fork server dies under it), the answer is the record fields of that
process: the worker's own, or a ``timeout`` / ``crashed`` status with the end of its output and
the figures it saved before (``protocol.save_partial``).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from scaling_bench.engine.launchers import Launcher, ServerDied
from scaling_bench.engine.protocol import Job, Settings, read_json, read_partial, write_job
from scaling_bench.engine.worker import ERROR_CHARS, clip
from scaling_bench.store.lock import scratch_dir

# A worker prints its stacks this long before its deadline, so a timeout record says where it hung.
STACK_DUMP_BEFORE_S = 0.5


def run_process(
    case_dict: dict[str, Any],
    execute: str,
    timeout_s: float,
    settings: Settings,
    launcher: Launcher,
    known: Mapping[str, Any],
) -> dict[str, Any]:
    """One worker process of a case, in a scratch folder of its own: its result fields."""
    with scratch_dir() as tmp:
        known_path = tmp / "known.pickle" if known else None
        if known_path is not None:
            known_path.write_bytes(pickle.dumps(dict(known)))
        launcher.ready()  # a server started again after a death imports outside the case's clock
        job = Job(
            execute,
            case_dict,
            launcher.parent_pid,
            settings,
            dump_stacks_at=time.time() + timeout_s - STACK_DUMP_BEFORE_S,
            partial_path=str(_partial(tmp)),
            known_path=None if known_path is None else str(known_path),
        )
        job_path = tmp / "job.json"
        write_job(job_path, job)
        return _run_worker(launcher, job_path, tmp / "result.json", tmp / "output.log", timeout_s)


def _run_worker(
    launcher: Launcher, job_path: Path, result_path: Path, log_path: Path, timeout_s: float
) -> dict[str, Any]:
    """The worker's result fields, or a ``timeout`` / ``crashed`` status if it gave none."""
    deadline = time.monotonic() + timeout_s
    pid = None
    try:
        pid = launcher.start(job_path, result_path, log_path, job_path.parent)
        returncode = launcher.wait(pid, deadline - time.monotonic())
        if returncode is None:
            launcher.kill(pid)
            pid = None
            summary = f"ran past the {timeout_s:g}s timeout; killed the worker's process group"
            return _measured_so_far(result_path) | {
                "status": "timeout",
                "error": _with_output(summary, log_path),
            }
        pid = None
    except ServerDied as exc:
        pid = None
        return _measured_so_far(result_path) | {
            "status": "crashed",
            "error": _with_output(f"{exc}; the case's worker ended with it", log_path),
        }
    finally:
        if pid is not None:  # Ctrl-C or another error: the worker must not outlive the run
            with contextlib.suppress(ServerDied):
                launcher.kill(pid)
    if returncode == 0 and result_path.exists():
        return read_json(result_path)
    return _measured_so_far(result_path) | {
        "status": "crashed",
        "error": _with_output(_death(returncode), log_path),
    }


def _measured_so_far(result_path: Path) -> dict[str, Any]:
    """The fields a worker saved before it was killed or died (``protocol.save_partial``)."""
    return read_partial(_partial(result_path.parent))


def _partial(scratch: Path) -> Path:
    return scratch / "partial.json"


def _death(returncode: int) -> str:
    """How a worker ended without a result, in words."""
    if returncode >= 0:
        return f"worker exited with code {returncode} without returning a result"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = "unknown signal"
    note = ", which often means the host's out-of-memory killer" if name == "SIGKILL" else ""
    return f"worker killed by signal {-returncode} ({name}){note}"


def _with_output(summary: str, log_path: Path) -> str:
    """The worker's last output, then the summary: like a traceback, the conclusion comes last.
    A worker stopped before it opened its log (a timeout shorter than a fork) has said nothing."""
    try:
        with open(log_path, "rb") as log:
            log.seek(max(log.seek(0, os.SEEK_END) - 4 * ERROR_CHARS, 0))
            tail = log.read().decode("utf-8", errors="replace").strip()
    except FileNotFoundError:
        tail = ""
    return clip(f"{tail}\n{summary}" if tail else summary)
