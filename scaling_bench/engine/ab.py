"""Interleaved A/B: BASE and CURRENT run alternately on one machine, judged pair by pair.

Two runs minutes apart differ by more than their samples say: on a shared 2-core VM whole runs
drift 0.92–1.16× while each run's own figures agree, so even a per-process gate
(``run --processes``) flags reruns of one commit at a 5% threshold. An A/B runs the grid
``rounds`` times for each side, alternating (base then current, current then base, …), so
round *i* of one side ran beside round *i* of the other, on the same machine state: the drift
cancels in their ratio, and ``compare --paired`` tests the per-round log ratios.

A side is a git revision (extracted once with ``git archive`` into the cache folder, outside any
checkout, so its records carry no wrong ``git_commit``), a source folder holding
``scaling_bench/``, or the code running this command; ``env`` adds variables to its runs
(``OMP_NUM_THREADS=1``). Each side-round is an ordinary ``scaling-bench run`` of that side's own
code, started in its tree (``python -m`` puts the working folder first on the path), into
``DIR/rounds/NN-SIDE``: the two sides share only the ``run`` flags, so a base from before a
change of the record or the engine is measured by its own engine.

``DIR/ab.json`` keeps the plan; the same command again resumes (finished side-rounds are kept,
a cut one resumes with ``run --resume``), a larger ``rounds`` extends it, another plan in the
same folder is refused. ``DIR`` is held by the results lock. After every round the pooled
records are rewritten: ``DIR/base`` and ``DIR/current`` hold one record per case whose
``process_values`` are the rounds both sides finished ``ok``, in the same order.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any

from pydantic import ConfigDict, Field, TypeAdapter, with_config
from typing_extensions import TypedDict  # pydantic needs this one on Python < 3.12

import scaling_bench
from scaling_bench.core.errors import UserError
from scaling_bench.engine.protocol import MAX_PROCESSES
from scaling_bench.store.lock import ResultsLock
from scaling_bench.store.records import (
    RESULTS_FILE,
    ensure_writable_dir,
    load_records,
    replace_records,
)
from scaling_bench.store.schema import validated

PLAN_FILE = "ab.json"
ROUNDS_DIR = "rounds"
DEFAULT_ROUNDS = 5
#: A side-round whose run exited 0 leaves this file: a resume does not start it again.
DONE_FILE = ".ab-done"
#: ``run`` flags the A/B sets itself (one process a side-round, its own folders).
OWNED_FLAGS = ("--out", "--resume", "--processes", "--parallel", "--shard", "--report")
#: Flags of ``run`` whose value is a path, made absolute: the runs start in the side's tree.
PATH_FLAGS = ("--grid", "--data-root")
#: Seconds a side-round may take to stop after Ctrl-C is passed on to it.
STOP_GRACE_S = 60.0
_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class Side:
    """One side of an A/B: the code its runs import and what they add to the environment."""

    name: str
    given: str
    tree: str
    revision: str | None = None
    env: dict[str, str] = field(default_factory=dict)

    def environ(self) -> dict[str, str]:
        paths = os.pathsep.join(filter(None, (self.tree, os.environ.get("PYTHONPATH"))))
        return os.environ | {"PYTHONPATH": paths} | self.env

    @property
    def label(self) -> str:
        what = self.given or f"the running code ({self.tree})"
        if self.revision and self.revision != self.given:
            what += f" ({self.revision[:12]})"
        return " ".join((what, *(f"{k}={v}" for k, v in self.env.items())))


@dataclass(frozen=True)
class Plan:
    """What an A/B runs: two sides, the ``run`` arguments both get, and how many rounds."""

    base: Side
    current: Side
    run_args: tuple[str, ...]
    rounds: int

    @property
    def sides(self) -> tuple[Side, Side]:
        return self.base, self.current

    def order(self, round_index: int) -> tuple[Side, Side]:
        """Base first in even rounds, current first in odd ones: a drift during a round
        favours neither side over the A/B."""
        return self.sides if round_index % 2 == 0 else self.sides[::-1]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"run_args": list(self.run_args)}


def parse_env(pairs: Sequence[str], flag: str) -> dict[str, str]:
    """``KEY=VALUE`` pairs of an environment flag."""
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not _ENV_KEY.fullmatch(key):
            raise UserError(f"{flag} {pair!r}: give NAME=VALUE, e.g. OMP_NUM_THREADS=1")
        env[key] = value
    return env


def check_rounds(rounds: int) -> None:
    if not 2 <= rounds <= MAX_PROCESSES:
        raise UserError(f"--rounds {rounds}: give 2 to {MAX_PROCESSES} (a pair needs two rounds)")


def running_tree() -> Path:
    """The folder holding the ``scaling_bench`` package this command runs."""
    return Path(scaling_bench.__file__).resolve().parent.parent


def _git(args: Sequence[str], cwd: Path) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, check=False)
    except OSError:  # no git here: nothing is a revision
        return subprocess.CompletedProcess(args, 127, b"", b"")


def _revision_tree(given: str, cwd: Path) -> tuple[str, Path] | None:
    """(commit, its extracted tree) where ``given`` names a commit of the checkout at ``cwd``."""
    from scaling_bench.hardware.peaks import cache_file  # torch: not for --help

    found = _git(["rev-parse", "--verify", "--quiet", f"{given}^{{commit}}"], cwd)
    if found.returncode != 0:
        return None
    commit = found.stdout.decode().strip()
    tree = cache_file("trees") / commit
    if not (tree / "scaling_bench").is_dir():
        archive = _git(["archive", "--format=tar", commit], cwd)
        if archive.returncode != 0:
            raise UserError(f"{given}: git archive failed: {archive.stderr.decode().strip()}")
        partial = tree.with_name(f".{commit}.{os.getpid()}")
        try:
            with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
                tar.extractall(partial, filter="data")
            os.replace(partial, tree)
        except OSError as exc:
            raise UserError(f"{tree}: cannot extract {given} ({exc.strerror})") from None
    return commit, tree


def resolve_side(name: str, given: str | None, env: dict[str, str], cwd: Path) -> Side:
    """A side from what the user named: a git revision, a source folder, or (``None``) the
    running code."""
    if given is None:
        return Side(name, "", str(running_tree()), env=env)
    folder = Path(given).expanduser()
    if (folder / "scaling_bench" / "__init__.py").is_file():
        return Side(name, given, str(folder.resolve()), env=env)
    if found := _revision_tree(given, cwd):
        commit, tree = found
        if not (tree / "scaling_bench" / "__init__.py").is_file():
            raise UserError(f"--{name} {given}: commit {commit[:12]} holds no scaling_bench/")
        return Side(name, given, str(tree), revision=commit, env=env)
    raise UserError(
        f"--{name} {given}: neither a git revision of {cwd} nor a folder holding scaling_bench/"
    )


def absolute_paths(run_args: Sequence[str], cwd: Path) -> tuple[str, ...]:
    """The arguments with the values of ``PATH_FLAGS`` that name existing paths made absolute."""
    out = list(run_args)
    for i, arg in enumerate(out):
        flag, sep, value = arg.partition("=")
        if flag not in PATH_FLAGS:
            continue
        if sep and (cwd / value).exists():
            out[i] = f"{flag}={(cwd / value).resolve()}"
        elif not sep and i + 1 < len(out) and (cwd / out[i + 1]).exists():
            out[i + 1] = str((cwd / out[i + 1]).resolve())
    return tuple(out)


def side_folder(out: Path, round_index: int, side: Side) -> Path:
    return out / ROUNDS_DIR / f"{round_index + 1:02d}-{side.name}"


RunSide = Callable[[Side, Sequence[str], Path], None]


def run_side(side: Side, run_args: Sequence[str], folder: Path) -> None:
    """One side-round: ``scaling-bench run`` of the side's code in its own session (so Ctrl-C
    reaches it once, from here), its output in ``folder/run.log``. Ctrl-C or SIGTERM here is
    passed on as Ctrl-C, and waited for: the run kills its worker and records no half case."""
    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "scaling_bench.frontends.cli", "run", *run_args,
               "--out", str(folder), "--resume", "--no-progress"]  # fmt: skip
    with open(folder / "run.log", "ab") as log:
        proc = subprocess.Popen(command, cwd=side.tree, env=side.environ(), stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        try:
            code = proc.wait()
        except KeyboardInterrupt:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            raise
    if code != 0:
        lines = (folder / "run.log").read_text(errors="replace").strip().splitlines()
        last = lines[-1] if lines else f"exit status {code}"
        raise UserError(f"{folder.name}: the {side.name} side's run failed: {last}")


@with_config(ConfigDict(strict=True, extra="forbid"))
class _SideFile(TypedDict):
    name: str
    given: str
    tree: str
    revision: str | None
    env: dict[str, str]


@with_config(ConfigDict(strict=True, extra="forbid"))
class _PlanFile(TypedDict):
    """``ab.json`` as ``_write_plan`` writes it: checked whole on reading, since a user may
    edit it (more ``rounds``) and a wrong type must be named, not met deep in a round."""

    base: _SideFile
    current: _SideFile
    run_args: list[str]
    rounds: Annotated[int, Field(ge=2, le=MAX_PROCESSES)]


_PLAN_FILE = TypeAdapter(_PlanFile)


def _check_plan(out: Path, plan: Plan) -> Plan:
    """The plan to run: ``plan``, or the folder's own where it is the same A/B; ``rounds`` may
    grow (more pairs), never shrink what is recorded."""
    path = out / PLAN_FILE
    if not path.exists():
        return plan
    try:
        kept = json.loads(path.read_text())
    except (OSError, ValueError):
        raise UserError(f"{path}: unreadable; move it away or use another --out") from None
    kept = validated(_PLAN_FILE, kept, str(path))
    mine = plan.to_dict()
    for key in ("base", "current", "run_args"):
        if kept.get(key) != mine[key]:
            raise UserError(
                f"{out} holds another A/B (its {key} differs: {json.dumps(kept.get(key))}); "
                "use another --out"
            )
    return replace(plan, rounds=max(plan.rounds, kept["rounds"]))


def _write_plan(out: Path, plan: Plan) -> None:
    tmp = out / f".{PLAN_FILE}.tmp"
    tmp.write_text(json.dumps(plan.to_dict(), indent=2))
    os.replace(tmp, out / PLAN_FILE)


def run_ab(
    plan: Plan,
    out: Path,
    runner: RunSide = run_side,
    progress: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
) -> Plan:
    """Run the rounds ``plan`` asks for that ``out`` lacks, pooling after each; the plan run."""
    ensure_writable_dir(out)  # made here: a file in the way is one line, not a traceback
    with ResultsLock(out):
        plan = _check_plan(out, plan)
        _write_plan(out, plan)
        progress(f"ab: BASE {plan.base.label}; CURRENT {plan.current.label}; into {out}")
        for r in range(plan.rounds):
            times = []
            for side in plan.order(r):
                folder = side_folder(out, r, side)
                if (folder / DONE_FILE).exists():
                    continue
                started = time.perf_counter()
                try:
                    runner(side, plan.run_args, folder)
                except KeyboardInterrupt:
                    pool(out, plan)
                    raise KeyboardInterrupt(
                        f"interrupted in round {r + 1} ({side.name}); the rounds both sides "
                        f"finished are pooled in {out}; the same command resumes"
                    ) from None
                (folder / DONE_FILE).touch()
                times.append(f"{side.name} {time.perf_counter() - started:.1f} s")
            pool(out, plan)
            if times:
                progress(f"ab: round {r + 1}/{plan.rounds}: {', '.join(times)}")
    return plan


def _round_records(out: Path, plan: Plan, side: Side) -> list[dict[str, dict]]:
    """Per finished round of ``side``, its records by case id."""
    rounds = []
    for r in range(plan.rounds):
        folder = side_folder(out, r, side)
        records = load_records(folder / RESULTS_FILE) if (folder / DONE_FILE).exists() else []
        rounds.append({x["case_id"]: x for x in records})
    return rounds


def pool(out: Path, plan: Plan) -> dict[str, int]:
    """Write ``out/base`` and ``out/current``: per case, the figures of the rounds both sides
    finished ``ok``, in order (``process_values`` pair up), or, where there is no such round,
    of every round it has; a side that failed a round takes that round's status and error, so
    a case that fails only in CURRENT fails the gate. Returns the paired rounds per case."""
    from scaling_bench.engine.processes import combine_processes

    per_side = {side.name: _round_records(out, plan, side) for side in plan.sides}
    case_ids = list(dict.fromkeys(c for rounds in per_side.values() for rs in rounds for c in rs))
    paired: dict[str, int] = {}
    pooled: dict[str, list[dict]] = {side.name: [] for side in plan.sides}
    for case_id in case_ids:
        both = [
            r
            for r in range(plan.rounds)
            if all(rounds[r].get(case_id, {}).get("status") == "ok" for rounds in per_side.values())
        ]
        paired[case_id] = len(both)
        for name, rounds in per_side.items():
            taken = both or [r for r in range(plan.rounds) if case_id in rounds[r]]
            fields = [rounds[r][case_id] for r in taken]
            if not fields:
                continue
            record = combine_processes(fields, len(fields))
            failed = next(
                (r for r in range(plan.rounds) if rounds[r].get(case_id, {}).get("status")
                 not in (None, "ok")), None,
            )  # fmt: skip
            if failed is not None:  # a side that failed a round says so, whatever else paired
                first = rounds[failed][case_id]
                record |= {
                    "status": first["status"],
                    "error": f"round {failed + 1} of {plan.rounds}: {first.get('error') or ''}",
                }
            pooled[name].append(record)
    for name, records in pooled.items():
        folder = out / name
        folder.mkdir(exist_ok=True)
        replace_records(folder / RESULTS_FILE, records, "run the same A/B again")
    return paired
