"""One run per results folder, and no scratch folders left behind by runs that died.

Two runs appending to one ``results.jsonl`` would both run the cases neither had recorded yet
and interleave their records. ``ResultsLock`` holds an ``flock`` on ``DIR/.lock``: the kernel
drops it when the holding process dies, however it dies (SIGKILL, OOM killer, power cut), so a
lock is never stale and nobody has to clean it up. The holder's pid, written in the file, is
only there to tell the user who holds it.

The runner's per-case scratch folders (``scratch_dir``) are removed when a case ends, but not
when the runner itself is killed; ``remove_stale_temp_dirs`` removes those. A name proves
nothing (a user may call a results folder ``scaling-bench-baseline``) and a pid is no identity
across hosts or pid namespaces (a ``TMPDIR`` shared by the nodes of a cluster), so the sweep
removes a folder only if it holds the marker file a run creates with it, both owned by this
user, the marker naming this host, and only if it can take the ``flock`` the live run holds on
that marker for as long as it uses the folder; and never a folder younger than ``MIN_AGE_S``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from scaling_bench.core.errors import UserError

LOCK_FILE = ".lock"
TEMP_DIR_PREFIX = "scaling-bench-"
#: Created with each scratch folder, and locked by its run while the folder is in use.
SCRATCH_MARKER = "scaling-bench-scratch.lock"
#: A scratch folder this young is never removed, locked or not: a second line of defence where
#: a shared filesystem's locks are not to be trusted.
MIN_AGE_S = 600.0

_held: set[str] = set()  # this process's live scratch folders: its own flock does not bar it


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


@contextlib.contextmanager
def scratch_dir(root: Path | None = None) -> Iterator[Path]:
    """A new scratch folder in ``root`` (the system's temporary folder), removed when the block
    ends; this process holds the flock on its marker meanwhile, so no sweep removes it."""
    folder = Path(tempfile.mkdtemp(prefix=TEMP_DIR_PREFIX, dir=root))
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW  # not inherited by workers
    fd = os.open(folder / SCRATCH_MARKER, flags, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, _marker_text().encode())
    _held.add(str(folder))
    try:
        yield folder
    finally:
        _held.discard(str(folder))
        _remove_locked(folder, fd)


def _marker_text() -> str:
    return f"in use by pid {os.getpid()} on {socket.gethostname()}\n"


def _made_here(fd: int) -> bool:
    """Whether the marker names this host: a lock is only as good as the filesystem's (an NFS
    mount without its lock manager keeps locks local), so another host's folders are left to
    that host's runs."""
    words = os.pread(fd, 4096, 0).decode("utf-8", "replace").split()
    return words[-1:] == [socket.gethostname()]


def _remove_locked(folder: Path, fd: int) -> None:
    """Remove a scratch folder whose marker's lock ``fd`` holds: its contents and the marker
    while locked, the empty folder once the lock is released (an NFS client keeps an open
    unlinked file in the folder until it is closed)."""
    with contextlib.suppress(OSError):
        for entry in folder.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            elif entry.name != SCRATCH_MARKER:
                entry.unlink(missing_ok=True)
        (folder / SCRATCH_MARKER).unlink(missing_ok=True)
    os.close(fd)
    with contextlib.suppress(OSError):
        folder.rmdir()


def _remove_if_abandoned(folder: Path, now: float) -> bool:
    """Remove ``folder`` if it is provably a scratch folder of this user's runs, old enough and
    unlocked (its run is gone); whether it was removed."""
    if str(folder) in _held:
        return False
    try:
        info = folder.lstat()
        fd = os.open(folder / SCRATCH_MARKER, os.O_RDWR | os.O_NOFOLLOW)  # RDWR: NFS's flock
    except OSError:  # no marker: not a run's scratch folder, or not this user's
        return False
    try:
        marker = os.fstat(fd)
        ours = stat.S_ISDIR(info.st_mode) and stat.S_ISREG(marker.st_mode)
        ours = ours and info.st_uid == marker.st_uid == os.getuid()
        young = now - max(info.st_mtime, marker.st_mtime) < MIN_AGE_S
        if not ours or young or not _made_here(fd):
            os.close(fd)
            return False
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # BlockingIOError: its run is alive, on this host or another
        os.close(fd)
        return False
    _remove_locked(folder, fd)
    return not folder.exists()


def remove_stale_temp_dirs(tmp_root: Path | None = None) -> int:
    """Remove the scratch folders in ``tmp_root`` (the system's temporary folder) left by runs
    that died without cleaning up; how many were removed."""
    root = Path(tmp_root) if tmp_root is not None else Path(tempfile.gettempdir())
    now = time.time()
    # none where root is missing or unreadable
    return sum(_remove_if_abandoned(folder, now) for folder in root.glob(f"{TEMP_DIR_PREFIX}*"))
