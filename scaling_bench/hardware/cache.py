"""Where figures measured once per machine are kept, readable without torch.

``compare`` reads this machine's run-to-run drift from here while it stays free of torch, so the
folder, the file and the reader live apart from the measurements (``hardware.peaks``) that write
them.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

CACHE_DIR_ENV = "SCALING_BENCH_CACHE_DIR"


def cache_file(name: str) -> Path:
    """``name`` in the folder of figures measured once per machine (``CACHE_DIR_ENV``)."""
    root = os.environ.get(CACHE_DIR_ENV) or Path.home() / ".cache" / "scaling-bench"
    return Path(root) / name


def measured_cache_path() -> Path:
    """The file of measured figures (GEMM peaks, bandwidth, drift), keyed by what moves them."""
    return cache_file("gemm_peak.json")


def read_cache(path: Path) -> dict[str, float]:
    """The cached figures, or nothing when the file is missing or not what is written there."""
    try:
        cached = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(cached, dict):
        return {}
    return {
        key: value
        for key, value in cached.items()
        if isinstance(value, int | float) and math.isfinite(value) and value > 0
    }
