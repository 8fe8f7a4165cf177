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

from scaling_bench.meters.specs import RUNNER_PID_ENV

if TYPE_CHECKING:
    from scaling_bench.engine.protocol import Settings


#: How long the fork server may take to answer what needs no work of its own: a forked worker's
#: pid, a killed worker's return code.
ANSWER_WITHIN_S = 5.0


class ServerDied(RuntimeError):
    """The fork server ended: the case it was running is lost, the next one gets a new server."""


class ServerFailed(ServerDied):
    """The fork server ended before it was ready: it could not import, or was killed meanwhile."""


def worker_env(scratch: Path | None, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment, with ``sys.path`` as PYTHONPATH (what the parent imports, the worker can),
    ``TMPDIR`` in the case's own folder, which the runner removes even after a SIGKILL, and
    ``extra`` (the one GPU a parallel slot's workers see), and this runner's pid, whose CPU time
    the worker's busy meter counts as the run's own."""
    path = dict.fromkeys(os.path.abspath(entry) for entry in sys.path)
    own = {"PYTHONPATH": os.pathsep.join(path), RUNNER_PID_ENV: str(os.getpid())}
    env = {**os.environ, **own} | (extra or {})
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

    The server starts importing at once, while the caller goes on (the campaign plans its grid
    meanwhile); ``ready`` waits for it, and the runner calls it before a case's clock starts, so
    the imports count against no case's timeout. A server that ended (killed, or its case's
    death took it along) is started again by the next ``ready``. The runner never waits on the
    server for ever: an answer comes by ``ANSWER_WITHIN_S`` or the server is killed and counted
    as dead, and the server's end is seen as it happens (a pidfd on Linux), not when its pipe
    closes, which a daemon forked by a case could hold open."""

    def __init__(self, plugins: tuple[str, ...] = (), extra_env: dict[str, str] | None = None):
        self._plugins = plugins
        self._extra_env = extra_env
        self._pidfd: int | None = None
        self._spawn()

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
        self._close_pidfd()
        if hasattr(os, "pidfd_open"):
            self._pidfd = os.pidfd_open(self._proc.pid)

    def _close_pidfd(self) -> None:
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None

    def ready(self) -> None:
        """Wait until the server has imported everything and said so, starting a new one if the
        last one ended; ``ServerFailed`` if it ends first."""
        if self._ready and self._proc.poll() is None:
            return
        if self._proc.poll() is not None:
            self._spawn()
        try:
            answer = self._read(None)
        except ServerDied:
            code = self._end()
            how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
            raise ServerFailed(f"{self._name()} ended before it was ready ({how})") from None
        if "failed" in answer:
            self._end()
            raise ServerFailed(f"{self._name()} could not import: {answer['failed']}")
        self._ready = True

    @property
    def parent_pid(self) -> int:
        return self._proc.pid

    def _name(self) -> str:
        return f"the fork server (pid {self._proc.pid})"

    def _read(self, timeout_s: float | None) -> dict | None:
        """The server's next answer; None when ``timeout_s`` passed first."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        fd = self._proc.stdout.fileno()
        ended = [] if self._pidfd is None else [self._pidfd]
        while b"\n" not in self._buffer:
            left = None if deadline is None else max(deadline - time.monotonic(), 0)
            readable = select.select([fd, *ended], [], [], left)[0]
            if not readable:
                return None
            chunk = os.read(fd, 65536) if fd in readable else b""
            if not chunk:  # the pipe closed, or the process ended with nothing more said
                raise ServerDied(f"{self._name()} ended")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return json.loads(line)

    def _answer(self, what: str) -> dict:
        """The server's next answer, or ``ServerDied`` once it has not answered in time (stopped,
        or stuck reaping a child in uninterruptible sleep): killed, the next ``ready`` starts
        another."""
        answer = self._read(ANSWER_WITHIN_S)
        if answer is None:
            self._proc.kill()
            self._proc.wait()
            raise ServerDied(f"{self._name()} gave no {what} in {ANSWER_WITHIN_S:g}s; killed it")
        return answer

    def start(self, job: Path, result: Path, log: Path, scratch: Path) -> int:
        self.ready()
        request = {"job": str(job), "result": str(result), "log": str(log), "tmpdir": str(scratch)}
        try:
            self._proc.stdin.write((json.dumps(request) + "\n").encode())
            self._proc.stdin.flush()
        except BrokenPipeError:
            raise ServerDied(f"{self._name()} ended") from None
        return self._answer("worker pid")["pid"]

    def wait(self, pid: int, timeout_s: float) -> int | None:
        answer = self._read(max(timeout_s, 0))
        return None if answer is None else answer["returncode"]

    def kill(self, pid: int) -> int:
        _kill_group(pid)
        try:
            return self._answer("return code")["returncode"]
        except ServerDied:  # the worker's group is killed all the same
            return -signal.SIGKILL

    def _end(self) -> int:
        """The server's return code once it has ended, killed if it does not within 5 s."""
        try:
            return self._proc.wait(5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            return self._proc.wait()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._proc.stdin.close()
        self._end()
        self._close_pidfd()


class ForkServerOrFresh:
    """A fork server, replaced by fresh interpreters for the rest of the run once a server
    cannot start (a plugin that fails only when the server imports it, the server killed while
    it imports): the cases run either way, and one line on stderr says why they start slower."""

    def __init__(self, plugins: tuple[str, ...], extra_env: dict[str, str] | None = None):
        self._server = ForkServer(plugins, extra_env)
        self._launcher: Launcher = self._server
        self._extra_env = extra_env

    @property
    def parent_pid(self) -> int:
        return self._launcher.parent_pid

    def ready(self) -> None:
        try:
            self._launcher.ready()
        except ServerFailed as exc:
            print(f"scaling-bench: {exc}; each case runs in a fresh interpreter instead",
                  file=sys.stderr, flush=True)  # fmt: skip
            self._server.close()
            self._launcher = FreshInterpreter(self._extra_env)

    def start(self, job: Path, result: Path, log: Path, scratch: Path) -> int:
        return self._launcher.start(job, result, log, scratch)

    def wait(self, pid: int, timeout_s: float) -> int | None:
        return self._launcher.wait(pid, timeout_s)

    def kill(self, pid: int) -> int:
        return self._launcher.kill(pid)

    def close(self) -> None:
        self._server.close()
        self._launcher.close()


def early_launcher(settings: Settings) -> ForkServerOrFresh | None:
    """The run's fork server, started now and not waited for, so that its imports overlap the
    caller's own work (``runner.run_cases`` takes it and closes it); None where the run starts
    its launchers itself (fresh interpreters, or one server per parallel slot, each seeing its
    own GPU)."""
    if settings.fresh_workers or settings.parallel > 1:
        return None
    return ForkServerOrFresh(settings.plugins)
