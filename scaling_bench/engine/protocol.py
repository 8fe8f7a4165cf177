"""The runner–worker protocol, in one place: job files, result files, partial results.

A job is a JSON file the runner (or a distributed case's agent) writes before it starts a worker:
what to call (``execute``, "module:function") on which case, the run's settings (``Settings``:
the peak FLOP/s override, the plugins to import, the rendezvous, the threads per rank) and where
the worker keeps what it has measured so far. Settings travel here, not in environment variables,
so a worker is a function of its job file. Every file is written to a temporary name and renamed
into place, so a reader never sees half of one.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from scaling_bench.core.errors import UserError
from scaling_bench.engine.malloc import MODES

#: More workers than this per case is a typo, not a plan (each costs the case's whole time).
MAX_PROCESSES = 100


@dataclass(frozen=True)
class Settings:
    """What every worker of a run needs besides its case."""

    peak_flops: float | None = None
    plugins: tuple[str, ...] = ()
    node_rank: int = 0
    rdzv_endpoint: str | None = None
    threads: int | None = None
    #: Start each worker as a fresh interpreter instead of forking it from the warm server.
    fresh_workers: bool = False
    #: Workers per case, one after another: ``compare`` tests their per-process values.
    processes: int = 1
    #: Cases at once, each slot's workers pinned to one GPU (``CUDA_VISIBLE_DEVICES``).
    parallel: int = 1
    #: How a worker's glibc heap behaves (``engine.malloc``): ``steady`` keeps freed memory.
    malloc: str = "steady"

    def __post_init__(self) -> None:
        """The one check of ``run``'s ``--processes``, ``--parallel`` and ``--malloc`` (the
        flags only translate), so a job or a caller of the engine is held to it too."""
        for flag, count in (("--processes", self.processes), ("--parallel", self.parallel)):
            if not 1 <= count <= MAX_PROCESSES:
                raise UserError(f"{flag} {count}: give 1 to {MAX_PROCESSES}")
        if self.malloc not in MODES:
            raise UserError(f"--malloc {self.malloc!r}: choose from {', '.join(MODES)}")


@dataclass(frozen=True)
class Job:
    execute: str
    case: dict[str, Any]
    parent_pid: int
    settings: Settings = field(default_factory=Settings)
    dump_stacks_at: float | None = None
    partial_path: str | None = None
    folder: str | None = None
    #: A pickle of keyword arguments for ``execute`` beside the case (``runner.run_cases``'s
    #: ``known``), written by the runner in the case's own scratch folder.
    known_path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        settings = dict(data.get("settings") or {})
        settings["plugins"] = tuple(settings.get("plugins", ()))
        return cls(**{**data, "settings": Settings(**settings)})


def write_json(path: Path, data: Any) -> None:
    """``data`` as JSON at ``path``, atomically (a temporary name renamed into place)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, allow_nan=False), encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_job(path: Path, job: Job) -> None:
    write_json(path, job.to_dict())


def read_job(path: Path) -> Job:
    return Job.from_dict(read_json(path))


_partial_path: str | None = None


def keep_partials_at(path: str | None) -> None:
    """Where ``save_partial`` writes in this process (the worker sets it from its job)."""
    global _partial_path
    _partial_path = path


def save_partial(fields: dict[str, Any]) -> None:
    """Keep the record fields measured so far, so that a timeout or a crash later in the case
    does not lose them; the runner reads them only when no result comes. Outside a worker (an
    in-process front-end) there is nowhere to keep them and nothing is written."""
    if _partial_path:
        write_json(Path(_partial_path), fields)


def read_partial(path: Path) -> dict[str, Any]:
    """The fields a worker saved before it was killed or died; none if it saved none."""
    try:
        return read_json(path)
    except (OSError, ValueError):
        return {}
