"""How the runner starts a case's worker: forked from a warm server, or a fresh interpreter.

Both give the worker a session of its own (one ``killpg`` ends it and its children), its output
in the case's log and ``TMPDIR`` in the case's folder, and both report how it ended as
``subprocess`` does (a negative return code is the signal that killed it). The fork server
(``engine.server``) saves the interpreter start and ``import torch`` of every case; a fresh
interpreter is kept for whoever needs a worker that shares nothing with the runner's imports
(``Settings.fresh_workers``).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from scaling_bench.engine.protocol import Settings


class ServerDied(RuntimeError):
    """The fork server ended: the case it was running is lost, the next one gets a new server."""


def worker_env(scratch: Path | None, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment, with ``sys.path`` as PYTHONPATH (what the parent imports, the worker can),
    ``TMPDIR`` in the case's own folder, which the runner removes even after a SIGKILL, and
    ``extra`` (the one GPU a parallel slot's workers see)."""
    path = dict.fromkeys(os.path.abspath(entry) for entry in sys.path)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)} | (extra or {})
    return env | ({"TMPDIR": str(scratch)} if scratch else {})


class Launcher(Protocol):
    @property
    def parent_pid(self) -> int: ...

    def ready(self) -> None: ...

    def start(self, job: Path, result: Path, log: Path, scratch: Path) -> int: ...

    def wait(self, pid: int, timeout_s: float) -> int | None: ...

    def kill(self, pid: int) -> int: ...

    def close(self) -> None: ...


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


class FreshInterpreter:
    """``python -m scaling_bench.engine.worker JOB RESULT``, a new process per case."""

    def __init__(self, extra_env: dict[str, str] | None = None) -> None:
        self._procs: dict[int, subprocess.Popen] = {}
        self._extra_env = extra_env

    @property
    def parent_pid(self) -> int:
        return os.getpid()

    def ready(self) -> None:
        """Nothing to wait for: each case starts its own interpreter."""

    def start(self, job: Path, result: Path, log: Path, scratch: Path) -> int:
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "scaling_bench.engine.worker", str(job), str(result)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                env=worker_env(scratch, self._extra_env),
                start_new_session=True,
            )
        self._procs[proc.pid] = proc
        return proc.pid

    def wait(self, pid: int, timeout_s: float) -> int | None:
        try:
            code = self._procs[pid].wait(max(timeout_s, 0))
        except subprocess.TimeoutExpired:
            return None
        del self._procs[pid]
        return code

    def kill(self, pid: int) -> int:
        _kill_group(pid)
        proc = self._procs.pop(pid, None)
        return proc.wait() if proc else -signal.SIGKILL

    def close(self) -> None:
        for pid in list(self._procs):
            self.kill(pid)


class ForkServer:
    """A warm ``engine.server`` process; cases run one at a time, each in a forked child.

    The server starts importing at once; ``ready`` waits for it. Created with ``wait=False``, it
    imports while the caller goes on (the campaign plans its grid meanwhile), and the runner
    calls ``ready`` before the first case's clock starts, so the imports count against no case's
    timeout either way."""

    def __init__(
        self,
        plugins: tuple[str, ...] = (),
        extra_env: dict[str, str] | None = None,
        *,
        wait: bool = True,
    ):
        self._plugins = plugins
        self._extra_env = extra_env
        self._spawn()
        if wait:
            self.ready()

    def _spawn(self) -> None:
        """A new server, importing; ``ready`` waits until it has."""
        command = [sys.executable, "-m", "scaling_bench.engine.server", str(os.getpid())]
        self._buffer = b""
        self._ready = False
        self._proc = subprocess.Popen(
            [*command, json.dumps(list(self._plugins))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=worker_env(None, self._extra_env),
            start_new_session=True,  # terminal signals go to the runner, which decides
        )

    def ready(self) -> None:
        """Wait until the server has imported everything and said so (once)."""
        if not self._ready:
            self._read(None)
            self._ready = True

    @property
    def parent_pid(self) -> int:
        return self._proc.pid

    def _read(self, timeout_s: float | None) -> dict | None:
        """The server's next answer; None when ``timeout_s`` passed first."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        fd = self._proc.stdout.fileno()
        while b"\n" not in self._buffer:
            left = None if deadline is None else max(deadline - time.monotonic(), 0)
            if not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                raise ServerDied(f"the fork server (pid {self._proc.pid}) ended")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return json.loads(line)

    def start(self, job: Path, result: Path, log: Path, scratch: Path) -> int:
        if self._proc.poll() is not None:
            self._spawn()
        self.ready()
        request = {"job": str(job), "result": str(result), "log": str(log), "tmpdir": str(scratch)}
        try:
            self._proc.stdin.write((json.dumps(request) + "\n").encode())
            self._proc.stdin.flush()
        except BrokenPipeError:
            raise ServerDied(f"the fork server (pid {self._proc.pid}) ended") from None
        return self._read(None)["pid"]

    def wait(self, pid: int, timeout_s: float) -> int | None:
        answer = self._read(max(timeout_s, 0))
        return None if answer is None else answer["returncode"]

    def kill(self, pid: int) -> int:
        _kill_group(pid)
        return self._read(None)["returncode"]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._proc.stdin.close()
        try:
            self._proc.wait(5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


def early_launcher(settings: Settings) -> ForkServer | None:
    """The run's fork server, started now and not waited for, so that its imports overlap the
    caller's own work (``runner.run_cases`` takes it and closes it); None where the run starts
    its launchers itself (fresh interpreters, or one server per parallel slot, each seeing its
    own GPU)."""
    if settings.fresh_workers or settings.parallel > 1:
        return None
    return ForkServer(settings.plugins, wait=False)
