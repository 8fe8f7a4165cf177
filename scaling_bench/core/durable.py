"""Make what was written survive a crash or a power cut."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_path(path: Path) -> None:
    """fsync a file or a folder by path (fsync acts on the inode, whichever descriptor).

    A new file's directory entry needs its folder fsync'd too; the file's own fsync does not
    cover it.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
