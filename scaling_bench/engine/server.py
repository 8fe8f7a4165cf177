"""Warm workers: each case still runs in a process of its own, forked from a pre-imported server.

A fresh interpreter plus ``import torch`` costs seconds per case (DESIGN §4: 4.25 s median per
tiny case, 99% of it start-up). The runner starts this server once per run: it imports torch, the
workload registry and the run's plugins, and nothing else: it never runs an operator (OpenMP's
thread pool does not survive a fork) and never touches CUDA (a CUDA context does not either).
For each case it forks a child, which becomes the worker of ``engine.worker`` on the case's job
file, exactly as a fresh interpreter would, with its own session (the runner's process-group
kill reaches it and its children), its output in the case's log and ``TMPDIR`` in the case's own
folder.

Protocol, one JSON object per line: the server says ``{"ready": PID}`` once imported (or
``{"failed": "the exception, in one line"}``, and ends, if an import raised); the runner
writes ``{"job", "result", "log", "tmpdir"}`` to
the server's stdin; the server answers ``{"pid": N}`` once the child runs and ``{"returncode":
R}`` when it has ended (``R`` < 0: killed by signal ``-R``, as ``subprocess`` reports it). The
server dies with the runner (``PR_SET_PDEATHSIG``) and each child with the server, so a killed
runner leaves no worker behind.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import traceback

from scaling_bench.core.errors import UserError
from scaling_bench.engine import worker


def _child(request: dict[str, str], ready: int, answers: int, server_pid: int) -> None:
    """In the forked child: become the case's worker, then exit without running the server's
    cleanup (atexit handlers and buffers belong to the server). ``ready`` is told once the child
    leads its own session, so that the runner never signals a group that does not exist yet. The
    server's answer pipe is closed first: a daemon the case forks must not hold it open."""
    code = 1
    try:
        os.close(answers)
        os.setsid()
        os.write(ready, b"1")
        os.close(ready)
        fd = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.environ["TMPDIR"] = request["tmpdir"]
        tempfile.tempdir = None  # tempfile caches the folder it found first
        worker.main([request["job"], request["result"]], parent_pid=server_pid)
        code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _returncode(status: int) -> int:
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def _imported(plugins: list[str]) -> None:
    import torch
    import torch._dynamo  # noqa: F401  (imported lazily by the first optimizer step: ~2 s)

    import scaling_bench.engine.execute  # noqa: F401
    from scaling_bench.workloads import load_plugins

    load_plugins(plugins)


def serve(runner_pid: int, plugins: list[str]) -> None:
    worker._die_with_runner(runner_pid)
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # a stray print must not corrupt the protocol
    try:
        _imported(plugins)
    except BaseException as exc:  # the runner says why in one line, then runs without a server
        reason = (
            str(exc)  # a plugin's import error, already one line naming the plugin
            if isinstance(exc, UserError)
            else traceback.format_exception_only(exc)[-1].strip()
        )
        answers.write(json.dumps({"failed": reason}) + "\n")
        sys.exit(1)
    answers.write(json.dumps({"ready": os.getpid()}) + "\n")
    for line in sys.stdin:
        request = json.loads(line)
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_end)
            _child(request, write_end, answers.fileno(), os.getppid())
        os.close(write_end)
        os.read(read_end, 1)  # the child leads its session (or died: the read sees the end)
        os.close(read_end)
        answers.write(json.dumps({"pid": pid}) + "\n")
        _, status = os.waitpid(pid, 0)
        answers.write(json.dumps({"returncode": _returncode(status)}) + "\n")


if __name__ == "__main__":
    serve(int(sys.argv[1]), json.loads(sys.argv[2]))
