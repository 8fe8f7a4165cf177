"""Run cases, each in its own worker process, and append one record per case as it ends.

A worker is a process in a session of its own (forked from a warm server, or a fresh
interpreter): an OOM, a segfault, ``os._exit`` or the kernel's OOM killer ends that case's worker,
never the grid. Each record is fsync'd before the next case starts, so a run stopped at any
point, resumed with ``resume=True``, runs each case once.

Running a case id that the results file already holds, without ``resume``, is refused: two records
for one case would leave every reader to choose between them, and the file is never rewritten.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from scaling_bench.core.errors import UserError
from scaling_bench.engine.attempt import run_process
from scaling_bench.engine.launchers import ForkServerOrFresh, FreshInterpreter, Launcher
from scaling_bench.engine.processes import combine_processes
from scaling_bench.engine.protocol import Settings
from scaling_bench.engine.worker import clip
from scaling_bench.store.lock import ResultsLock, remove_stale_temp_dirs
from scaling_bench.store.records import (
    RESULTS_FILE,
    append_record,
    iter_records,
    make_record,
    problem_with,
)


class RunnableCase(Protocol):
    """What the runner needs of a case (``grid.Case`` is one)."""

    @property
    def case_id(self) -> str: ...

    def to_dict(self) -> dict[str, Any]: ...


class ProgressSink(Protocol):
    """Told of each case as it starts and as its record is written, inside ``with``: what a
    run shows (``report.progress`` is the command line's); the runner draws nothing itself."""

    def __enter__(self) -> ProgressSink: ...

    def __exit__(self, *exc_info: object) -> None: ...

    def start(self, case_id: str) -> None: ...

    def finish(self, record: dict[str, Any], n_done: int) -> None: ...


#: ``run_cases``'s ``progress``: given how many cases will run, the sink that shows them.
ShowProgress = Callable[[int], ProgressSink]


class _Silent:
    """The sink of a run that shows nothing (``progress=None``)."""

    def __init__(self, total: int) -> None:
        del total  # nothing to show it on

    def __enter__(self) -> _Silent:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def start(self, case_id: str) -> None:
        return None

    def finish(self, record: dict[str, Any], n_done: int) -> None:
        return None


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run: the records already written stay, and the message says how to resume."""

    def __init__(self, n_recorded: int, n_pending: int, results_path: Path) -> None:
        super().__init__(
            f"interrupted: {n_recorded} of {n_pending} cases recorded in {results_path}; "
            "run the same command with --resume to run the rest"
        )
        self.n_recorded = n_recorded
        self.n_pending = n_pending
        self.results_path = results_path


def run_cases(
    cases: Sequence[RunnableCase],
    execute: str,
    out_dir: Path,
    *,
    timeout_s: float,
    env: dict[str, Any],
    resume: bool = False,
    progress: ShowProgress | None = None,
    skipped: Mapping[str, str] | None = None,
    derive: Callable[[RunnableCase, dict[str, Any]], dict[str, Any]] | None = None,
    settings: Settings | None = None,
    launcher: Launcher | None = None,
    known: Mapping[str, Mapping[str, Any]] | None = None,
    stop: Callable[[RunnableCase], bool] | None = None,
) -> list[dict[str, Any]]:
    """Run each case not yet recorded in ``out_dir/results.jsonl``; return the records written.

    ``execute`` ("module:function") runs inside the worker on ``case.to_dict()`` and
    ``settings``. ``timeout_s`` is each case's wall time, the worker's start included. Workers
    fork from a warm server (``launchers.ForkServer``) unless ``settings.fresh_workers``. The
    folder is locked for the run, and scratch folders of dead runners are removed first. The
    records come back in case order; with ``resume``, earlier records stay in the file, not in
    the return value. Ctrl-C kills the running worker and raises ``RunInterrupted``. Cases in
    ``skipped`` (case id -> reason) are recorded as ``skipped`` with the reason, without a
    worker. ``derive`` maps a case and its worker's fields to the fields recorded, for figures
    that need more than the worker knows (a distributed case's scaling efficiency).
    ``launcher`` is one started earlier (``launchers.early_launcher``: a server that imported
    while the grid was planned) for the run's one slot; the run closes it, whatever happens.
    ``known`` maps a case id to keyword arguments ``execute`` gets beside the case (pickled into
    the job): what this process already worked out, such as the case's plan, is not redone.
    ``stop(case)``, asked before each case starts, ends the run there: that case and the ones
    after it stay unrecorded, for ``--resume`` (a time budget that the cases so far overran).
    ``progress`` makes the sink told of each case (``ProgressSink``); None shows nothing.
    ``out_dir`` exists and is writable: ``campaign.prepare`` made sure of it, for every caller.
    """
    with contextlib.ExitStack() as stack:
        if launcher is not None:
            stack.callback(launcher.close)
        if ":" not in execute:
            raise ValueError(f"execute={execute!r} is not 'module:function'")
        ids = [case.case_id for case in cases]
        repeated = [case_id for case_id, n in Counter(ids).items() if n > 1]
        if repeated:
            raise UserError(f"the grid holds case {repeated[0]} more than once")
        out_dir = Path(out_dir)
        remove_stale_temp_dirs()
        with ResultsLock(out_dir):
            return _run_locked(
                cases, execute, out_dir, timeout_s, env, resume, progress or _Silent, skipped or {},
                derive,
                settings or Settings(), launcher, known or {}, stop or (lambda case: False),
            )  # fmt: skip


def _run_locked(
    cases: Sequence[RunnableCase],
    execute: str,
    out_dir: Path,
    timeout_s: float,
    env: dict[str, Any],
    resume: bool,
    progress: ShowProgress,
    skipped: Mapping[str, str],
    derive: Callable[[RunnableCase, dict[str, Any]], dict[str, Any]] | None,
    settings: Settings,
    launcher: Launcher | None,
    known: Mapping[str, Mapping[str, Any]],
    stop: Callable[[RunnableCase], bool],
) -> list[dict[str, Any]]:
    """``run_cases`` while this process holds the results folder's lock."""
    results_path = out_dir / RESULTS_FILE
    recorded = {r["case_id"]: r["case"].get("workloads") for r in iter_records(results_path)}
    ids = [case.case_id for case in cases]
    already = [case_id for case_id in ids if case_id in recorded]
    if already and not resume:
        more = f" (and {len(already) - 1} more of this grid)" if len(already) > 1 else ""
        raise UserError(
            f"{results_path} already holds case {already[0]}{more}; pass --resume to run only the "
            "cases it lacks, or use a new --out"
        )
    _check_same_workloads(cases, recorded, results_path)
    if already:
        print(f"resuming: {len(already)} of {len(ids)} cases already recorded", file=sys.stderr)
    pending = [case for case in cases if case.case_id not in recorded]

    records: list[dict[str, Any]] = []
    with progress(len(pending)) as shown:

        def measure(case: RunnableCase, launcher: Launcher) -> dict[str, Any]:
            shown.start(case.case_id)
            given = known.get(case.case_id, {})
            return _run_case(case, execute, timeout_s, env, derive, settings, launcher, given)

        def keep(record: dict[str, Any]) -> None:
            with _signals_held():  # a record on disk is a record counted
                append_record(results_path, record)
                records.append(record)
            shown.finish(record, len(records))

        try:
            for case in pending:
                if case.case_id in skipped:
                    keep(_skipped(case, skipped[case.case_id], env))
            runs = [case for case in pending if case.case_id not in skipped]
            _Slots(settings, launcher, stop).run(runs, measure, keep)
        except KeyboardInterrupt:
            raise RunInterrupted(len(records), len(pending), results_path) from None
    order = {case.case_id: i for i, case in enumerate(pending)}
    return sorted(records, key=lambda r: order[r["case_id"]])


class _Slots:
    """Where cases run: one slot in this thread; or, with ``settings.parallel`` N, N threads, each
    with a launcher of its own whose workers see one GPU (``CUDA_VISIBLE_DEVICES``), each taking
    the next case as its last one ends. On Ctrl-C the running workers are killed and their cases
    left unrecorded (they run again on ``--resume``), as with one slot; a record being written is
    finished first. One slot uses ``given``, a launcher started earlier, where there is one."""

    def __init__(
        self,
        settings: Settings,
        given: Launcher | None = None,
        stop: Callable[[RunnableCase], bool] = lambda case: False,
    ) -> None:
        self.settings = settings
        self.stop = stop
        self.given = given
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.running: dict[int, int] = {}
        self.errors: list[BaseException] = []

    def run(
        self,
        cases: Sequence[RunnableCase],
        measure: Callable[[RunnableCase, Launcher], dict[str, Any]],
        keep: Callable[[dict[str, Any]], None],
    ) -> None:
        queue = list(cases)
        if not queue:
            return
        if self.settings.parallel == 1:
            return self._serve(0, queue, measure, keep)
        n = min(self.settings.parallel, len(queue))
        self.ready = threading.Barrier(n)
        threads = [
            threading.Thread(target=self._guarded, args=(i, queue, measure, keep), daemon=True)
            for i in range(n)
        ]
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                thread.join()
        except KeyboardInterrupt:
            self.stopping.set()
            self.ready.abort()
            with self.lock:
                for pid in list(self.running.values()):
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(pid, signal.SIGKILL)
            for thread in threads:
                thread.join()
            raise
        if self.errors:
            raise self.errors[0]

    def _guarded(self, *args: Any) -> None:
        """A slot in its own thread: an error (a bug) stops every slot and is raised by ``run``."""
        try:
            self._serve(*args)
        except BaseException as exc:
            self.errors.append(exc)
            self.stopping.set()
            self.ready.abort()

    def _serve(
        self,
        slot: int,
        queue: list[RunnableCase],
        measure: Callable[[RunnableCase, Launcher], dict[str, Any]],
        keep: Callable[[dict[str, Any]], None],
    ) -> None:
        parallel = self.settings.parallel > 1
        extra = {"CUDA_VISIBLE_DEVICES": str(slot)} if parallel else None
        own = self.given if self.given is not None and not parallel else None
        launcher = _Tracked(own or _launcher(self.settings, extra), self.running, slot)
        try:
            launcher.ready()  # before any case's clock starts
            if parallel:  # every slot's server started first: the cases spread over all GPUs
                self.ready.wait()
            while not self.stopping.is_set():
                with self.lock:
                    if not queue or self.stop(queue[0]):
                        return
                    case = queue.pop(0)
                record = measure(case, launcher)
                with self.lock:
                    if not self.stopping.is_set():
                        keep(record)
        finally:
            launcher.close()


class _Tracked:
    """A launcher that tells its slot which worker is running, so Ctrl-C can kill it."""

    def __init__(self, launcher: Launcher, running: dict[int, int], slot: int) -> None:
        self._launcher = launcher
        self._running = running
        self._slot = slot

    @property
    def parent_pid(self) -> int:
        return self._launcher.parent_pid

    def ready(self) -> None:
        self._launcher.ready()

    def start(self, job: Path, result: Path, log: Path, scratch: Path) -> int:
        pid = self._running[self._slot] = self._launcher.start(job, result, log, scratch)
        return pid

    def wait(self, pid: int, timeout_s: float) -> int | None:
        code = self._launcher.wait(pid, timeout_s)
        if code is not None:
            self._running.pop(self._slot, None)
        return code

    def kill(self, pid: int) -> int:
        self._running.pop(self._slot, None)
        return self._launcher.kill(pid)

    def close(self) -> None:
        self._launcher.close()


def _check_same_workloads(
    cases: Sequence[RunnableCase], recorded: Mapping[str, Any], results_path: Path
) -> None:
    """``--resume`` never runs a recorded case again, so a case recorded with other workloads
    would silently lack the new ones: refused with the reason instead (the case id leaves the
    workloads out, as it leaves out every setting that is not an axis of the grid).
    ``recorded``: each recorded case's workloads, by case id (all a resume keeps of a record)."""
    for case in cases:
        held = recorded.get(case.case_id)
        wanted = case.to_dict().get("workloads")
        if wanted is None or held is None:
            continue
        if list(held) != list(wanted):
            raise UserError(
                f"{results_path} holds case {case.case_id} run with workloads "
                f"{','.join(held)}, and this run asks for {','.join(wanted)}; resume with "
                f"--workloads {','.join(held)}, or use a new --out for the others"
            )


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM wait until the block ends (then raise as usual)."""
    held = {signal.SIGINT, signal.SIGTERM}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _launcher(settings: Settings, extra_env: dict[str, str] | None) -> Launcher:
    if settings.fresh_workers:
        return FreshInterpreter(extra_env)
    return ForkServerOrFresh(settings.plugins, extra_env)


def _run_case(
    case: RunnableCase,
    execute: str,
    timeout_s: float,
    env: dict[str, Any],
    derive: Callable[[RunnableCase, dict[str, Any]], dict[str, Any]] | None,
    settings: Settings,
    launcher: Launcher,
    known: Mapping[str, Any],
) -> dict[str, Any]:
    """One case, one record: from one worker, or ``settings.processes`` workers in turn (the
    timeout is each one's)."""
    case_dict = case.to_dict()
    started_at = datetime.now(UTC)
    t0 = time.perf_counter()
    per_process = []
    for _ in range(settings.processes):
        per_process.append(run_process(case_dict, execute, timeout_s, settings, launcher, known))
        if per_process[-1].get("status", "ok") != "ok":
            break
    fields = combine_processes(per_process, settings.processes)
    if derive is not None:
        fields = derive(case, fields)
    duration_s = round(time.perf_counter() - t0, 3)
    try:
        record = make_record(
            case.case_id, case_dict, env=env, started_at=started_at, duration_s=duration_s, **fields
        )
        problem = problem_with(record)
    except (TypeError, ValueError) as exc:  # fields outside the record's keys, an unknown status
        problem = str(exc)
    if problem is None:
        return record
    error = f"the worker's record fields do not fit the record schema: {problem}"
    return make_record(
        case.case_id, case_dict, "crashed", env=env, started_at=started_at,
        duration_s=duration_s, error=clip(error),
    )  # fmt: skip


def _skipped(case: RunnableCase, reason: str, env: dict[str, Any]) -> dict[str, Any]:
    started_at = datetime.now(UTC)
    return make_record(
        case.case_id, case.to_dict(), "skipped", env=env, started_at=started_at,
        duration_s=0.0, error=reason,
    )  # fmt: skip
