"""One run per results folder, and no scratch folders left behind by runs that died.

Two runs appending to one ``results.jsonl`` would both run the cases neither had recorded yet
and interleave their records. ``ResultsLock`` holds an ``flock`` on ``DIR/.lock``: the kernel
drops it when the holding process dies, however it dies (SIGKILL, OOM killer, power cut), so a
lock is never stale and nobody has to clean it up. The holder's pid, written in the file, is
only there to tell the user who holds it.

The runner's per-case temporary folders are removed when a case ends, but not when the runner
itself is killed; ``remove_stale_temp_dirs`` removes those of runners that are gone, told by the
``runner.pid`` each one holds.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
import time
from pathlib import Path
from types import TracebackType

from scaling_bench.core.errors import UserError

LOCK_FILE = ".lock"
TEMP_DIR_PREFIX = "scaling-bench-"
RUNNER_PID_FILE = "runner.pid"
#: A scratch folder without ``runner.pid`` (made by an in-process front-end, or by a runner
#: killed before it wrote the file) is taken as abandoned once untouched for this long.
UNOWNED_STALE_AFTER_S = 3600.0


class ResultsLock:
    """Context manager: hold ``out_dir`` for this process, or a UserError naming the holder."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = Path(out_dir)
        self._fd: int | None = None

    def __enter__(self) -> ResultsLock:
        path = self.out_dir / LOCK_FILE
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by workers
        except OSError as exc:
            raise UserError(f"{path}: cannot create the lock file ({exc.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip()
            os.close(fd)
            pid = f" (pid {holder})" if holder.isdigit() else ""
            raise UserError(
                f"{self.out_dir} is in use by another scaling-bench run{pid}; "
                "wait for it or use another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        self._fd = fd
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # The file stays: unlinking it would let a later run lock a new file while a waiting
        # one locks the old, unlinked one.
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor releases the flock
            self._fd = None


def write_runner_pid(temp_dir: Path) -> None:
    """Mark a scratch folder as this runner's, so ``remove_stale_temp_dirs`` leaves it alone."""
    (Path(temp_dir) / RUNNER_PID_FILE).write_text(f"{os.getpid()}\n", encoding="ascii")


def _is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # gone, or no pid this system could have
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _is_stale(folder: Path, now: float) -> bool:
    """Whether the folder's runner is gone: its ``runner.pid`` names a dead process, or it has
    none and has not been touched for ``UNOWNED_STALE_AFTER_S``."""
    try:
        owner = (folder / RUNNER_PID_FILE).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        owner = ""
    if owner.isdigit() and int(owner) > 0:
        return not _is_alive(int(owner))
    try:
        return now - folder.stat().st_mtime > UNOWNED_STALE_AFTER_S
    except OSError:  # removed meanwhile
        return False


def remove_stale_temp_dirs(tmp_root: Path | None = None) -> int:
    """Remove the ``scaling-bench-*`` folders in ``tmp_root`` (the system's temporary folder)
    left by runners that died without cleaning up; how many were removed."""
    root = Path(tmp_root) if tmp_root is not None else Path(tempfile.gettempdir())
    now = time.time()
    removed = 0
    for folder in root.glob(f"{TEMP_DIR_PREFIX}*"):  # none where root is missing or unreadable
        if folder.is_dir() and not folder.is_symlink() and _is_stale(folder, now):
            shutil.rmtree(folder, ignore_errors=True)
            removed += not folder.exists()
    return removed
