"""Fault injection for runner tests: ``run`` is the ``execute`` function a test grid points at.

It runs inside a worker and does what ``case["fault"]`` names. Importable as ``faults`` because
pytest puts this folder on ``sys.path``; the worker finds it only through the parent's path, which
is part of what the tests check. No torch here: each worker should start in a fraction of a second.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scaling_bench.engine.protocol import save_partial
from scaling_bench.report.progress import case_progress

EXECUTE = "faults:run"
#: The axes every record's case holds (``config.case.RecordedCase``).
SHAPE = {"family": "mlp", "target_params": 1e4}
CPU_ALLOCATOR_MESSAGE = (
    "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: "
    "you tried to allocate 1125899906842624 bytes. Error code 12 (Cannot allocate memory)"
)


@dataclass(frozen=True)
class Case:
    case_id: str
    fault: str = "ok"
    marker: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A record's case names its family and size (the store checks it); the rest is ours."""
        return {**SHAPE, "fault": self.fault, "marker": self.marker}


class OutOfMemoryError(RuntimeError):
    """Stands in for ``torch.OutOfMemoryError``, which the worker recognises by name."""


def ok(case: dict) -> dict:
    return {"params": 10, "config": {"d_model": 2}, "metrics": {"x": {"value": 1.0, "unit": "s"}}}


def prints_then_ok(case: dict) -> dict:
    print("user output on stdout")
    print("user output on stderr", file=sys.stderr)
    return ok(case)


def touch_marker(case: dict) -> dict:
    Path(case["marker"]).touch()
    return ok(case)


def diverged(case: dict) -> dict:
    return {**ok(case), "status": "diverged", "error": "loss became nan at step 7"}


def bad_status(case: dict) -> dict:
    return {"status": "great"}


def not_json(case: dict) -> dict:
    return {"config": {"d_model": object()}}


def memory_error(case: dict) -> dict:
    raise MemoryError("no room for the activations")


def fake_torch_oom(case: dict) -> dict:
    raise OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def cpu_allocator_failure(case: dict) -> dict:
    raise RuntimeError(CPU_ALLOCATOR_MESSAGE)


def value_error(case: dict) -> dict:
    raise ValueError("shapes (3, 4) and (5, 6) do not match")


def exit_3(case: dict) -> dict:
    print("last words before exit", file=sys.stderr, flush=True)
    os._exit(3)


def sigkill(case: dict) -> dict:
    os.kill(os.getpid(), signal.SIGKILL)
    return ok(case)


def endless_loop(case: dict) -> dict:
    while True:
        pass


def spawn_child_and_hang(case: dict) -> dict:
    child = subprocess.Popen(["sleep", "600"])
    Path(case["marker"]).write_text(str(child.pid))
    endless_loop(case)
    return ok(case)


def hang_once(case: dict) -> dict:
    """Hang the first time (leaving this worker's pid in the marker), succeed on a rerun."""
    marker = Path(case["marker"])
    if marker.exists():
        return ok(case)
    marker.write_text(str(os.getpid()))
    endless_loop(case)
    return ok(case)


def measures_then_hangs(case: dict) -> dict:
    save_partial(ok(case))
    return endless_loop(case)


def measures_then_dies(case: dict) -> dict:
    save_partial(ok(case))
    return exit_3(case)


def run(case: dict, settings: object = None) -> dict:
    return globals()[case["fault"]](case)


def run_grid(out_dir: str, marker: str, resume: bool = False, parallel: int = 1) -> list[dict]:
    """The grid the kill-and-resume tests stop in the middle: ok, hang_once, ok (with
    ``parallel`` 2, the third case runs beside the hanging one)."""
    from scaling_bench.engine.protocol import Settings
    from scaling_bench.engine.runner import (
        run_cases,  # not at the top: workers need not import rich
    )

    cases = [Case("first"), Case("second", "hang_once", marker), Case("third")]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)  # as ``campaign.prepare`` leaves it for the runner
    return run_cases(
        cases, EXECUTE, out, timeout_s=60, env={}, resume=resume,
        progress=case_progress(bar=False), settings=Settings(parallel=parallel),
    )  # fmt: skip


if __name__ == "__main__":
    from scaling_bench.engine.runner import RunInterrupted

    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored
    try:
        run_grid(sys.argv[1], sys.argv[2], parallel=int(sys.argv[3]))
    except RunInterrupted as exc:
        print(exc, file=sys.stderr)
        sys.exit(130)


def fails_after_first(case: dict) -> dict:
    """Ok in the first process of a case, an exception in the next (``--processes``)."""
    marker = Path(case["marker"])
    if marker.exists():
        raise ValueError("the second process failed")
    marker.touch()
    return ok(case)


def shows_its_gpu(case: dict) -> dict:
    """Ok, after a moment, with the GPU this worker was given and when it ran."""
    start = time.time()
    time.sleep(0.5)
    seen = {"visible": os.environ.get("CUDA_VISIBLE_DEVICES"), "start": start, "end": time.time()}
    return {**ok(case), "config": seen}


def echo_known(case: dict, settings: object, **known: object) -> dict:
    """``execute`` that records what the runner handed it beside the case, as its config."""
    return {**ok(case), "config": known}


def frees_a_block(case: dict) -> dict:
    """Touch 64 MiB, free it, and report the resident bytes before and after the free: what the
    worker's heap (``engine.malloc``) keeps."""
    page = os.sysconf("SC_PAGE_SIZE")

    def resident() -> float:
        return float(int(Path("/proc/self/statm").read_text().split()[1]) * page)

    block = bytearray(64 << 20)
    held = resident()
    del block
    metrics = {
        "held": {"value": held, "unit": "bytes"},
        "freed": {"value": resident(), "unit": "bytes"},
    }
    return {**ok(case), "metrics": metrics}


def kills_its_server(case: dict) -> dict:
    """``kill -9`` of the fork server while this case runs (this worker dies with it)."""
    Path(case["marker"]).write_text(str(os.getpid()))
    os.kill(os.getppid(), signal.SIGKILL)
    return endless_loop(case)


def stops_its_server(case: dict) -> dict:
    """SIGSTOP of the fork server while this case runs, then a hang: nobody reaps this worker."""
    os.kill(os.getppid(), signal.SIGSTOP)
    return endless_loop(case)


def daemon_then_kills_its_server(case: dict) -> dict:
    """A daemon of the case's own (a session of its own, every descriptor this worker holds),
    then ``kill -9`` of the fork server: the daemon's pid goes in the marker."""
    pid = os.fork()
    if pid == 0:
        os.setsid()
        time.sleep(120)
        os._exit(0)
    Path(case["marker"]).write_text(str(pid))
    return kills_its_server({**case, "marker": os.devnull})


def null_metric(case: dict) -> dict:
    """A figure the case could not give: ``value`` null, which the schema allows."""
    return {**ok(case), "metrics": {"x": {"value": None, "unit": "s", "n": 1}}}


def sweeps_the_temporary_folder(case: dict) -> dict:
    """Another run's sweep of the temporary folder, while this case's scratch folder (this
    worker's TMPDIR) looks as old as an abandoned one: the case must end with its record."""
    from scaling_bench.store.lock import remove_stale_temp_dirs

    scratch = Path(os.environ["TMPDIR"])
    for path in [*scratch.iterdir(), scratch]:
        os.utime(path, (0, 0))
    removed = remove_stale_temp_dirs(scratch.parent)
    return {**ok(case), "metrics": {"removed": {"value": float(removed), "unit": "folders"}}}
