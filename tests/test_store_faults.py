"""The results store under faults: a full disk, a second run on one folder, a killed runner's
scratch folders, and records of the wrong shape reaching `report` and `compare`."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from scaling_bench.core.errors import UserError
from scaling_bench.frontends.cli import main
from scaling_bench.store import lock
from scaling_bench.store.lock import (
    MIN_AGE_S,
    SCRATCH_MARKER,
    ResultsLock,
    remove_stale_temp_dirs,
    scratch_dir,
)
from scaling_bench.store.records import RESULTS_FILE, append_record, load_records, make_record


def record(case_id: str) -> dict:
    return make_record(
        case_id,
        {"family": "mlp", "target_params": 1e5},
        "ok",
        env={"hostname": "test"},
        started_at=datetime(2025, 1, 1, tzinfo=UTC),
        duration_s=1.0,
        params=100,
        metrics={"train_step_s": {"value": 0.1, "unit": "s", "n": 1}},
    )


# --- a full disk --------------------------------------------------------------------------------


def fill_disk_after(monkeypatch: pytest.MonkeyPatch, n_bytes: int) -> None:
    """``os.write`` writes ``n_bytes`` more, then fails as a full disk does."""
    real_write = os.write
    left = [n_bytes]

    def write(fd: int, data: bytes) -> int:
        if left[0] <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written = real_write(fd, bytes(data[: left[0]]))
        left[0] -= written
        return written

    monkeypatch.setattr(os, "write", write)


@pytest.mark.parametrize("room", [0, 40])
def test_a_full_disk_leaves_no_cut_off_line_and_says_what_to_do(monkeypatch, tmp_path, room):
    path = tmp_path / RESULTS_FILE
    append_record(path, record("first"))
    before = path.read_bytes()
    fill_disk_after(monkeypatch, room)
    with pytest.raises(UserError) as raised:
        append_record(path, record("second"))
    assert str(raised.value) == (
        f"{path}: disk full (no space left on device) while writing the record of second; "
        "nothing was written, free space and run again with --resume"
    )
    assert path.read_bytes() == before
    monkeypatch.undo()  # space freed: the resumed run appends as if nothing had happened
    append_record(path, record("second"))
    assert [r["case_id"] for r in load_records(path)] == ["first", "second"]


def test_a_full_disk_at_fsync_also_leaves_the_file_as_it_was(monkeypatch, tmp_path):
    path = tmp_path / RESULTS_FILE
    append_record(path, record("first"))
    before = path.read_bytes()

    def fsync(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(UserError, match="disk full"):
        append_record(path, record("second"))
    assert path.read_bytes() == before


# --- one run per results folder -----------------------------------------------------------------

HOLD_LOCK = """
import sys, time
from scaling_bench.store.lock import ResultsLock
with ResultsLock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_second_run_on_a_folder_in_use_names_the_holder(tmp_path):
    with ResultsLock(tmp_path), pytest.raises(UserError) as raised, ResultsLock(tmp_path):
        pass
    assert str(raised.value) == (
        f"{tmp_path} is in use by another scaling-bench run (pid {os.getpid()}); "
        "wait for it or use another --out"
    )


def test_the_lock_is_free_again_when_its_holder_leaves_the_block(tmp_path):
    with ResultsLock(tmp_path):
        pass
    with ResultsLock(tmp_path):
        pass


def test_a_killed_holder_frees_the_folder(tmp_path):
    package_root = Path(lock.__file__).parents[2]  # the holder imports this very package
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(package_root)},
    )
    try:
        assert holder.stdout.readline() == "held\n"
        with (
            pytest.raises(UserError, match=rf"in use by another .* \(pid {holder.pid}\)"),
            ResultsLock(tmp_path),
        ):
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        holder.stdout.close()
    with ResultsLock(tmp_path):  # no stale lock to remove by hand
        assert (tmp_path / lock.LOCK_FILE).read_text() == f"{os.getpid()}\n"


# --- scratch folders of dead runners ------------------------------------------------------------

HOLD_SCRATCH = """
import sys, time
from scaling_bench.store.lock import scratch_dir
with scratch_dir(sys.argv[1]) as folder:
    print(folder, flush=True)
    time.sleep(600)
"""
OLD = 10 * MIN_AGE_S


def aged(folder: Path, age_s: float) -> Path:
    stamp = time.time() - age_s
    for path in [*folder.iterdir(), folder]:
        os.utime(path, (stamp, stamp), follow_symlinks=False)
    return folder


def abandoned(root: Path, name: str, age_s: float = OLD, host: str | None = None) -> Path:
    """A scratch folder as a run that was killed leaves it: its marker, and nobody's lock."""
    folder = root / name
    folder.mkdir()
    (folder / SCRATCH_MARKER).write_text(f"in use by pid 1 on {host or socket.gethostname()}\n")
    (folder / "job.json").write_text("{}")
    (folder / "sub").mkdir()
    (folder / "sub" / "model.pt").write_bytes(b"x")
    return aged(folder, age_s)


def users_folder(root: Path, name: str) -> Path:
    """What a user made: a results folder whose name happens to start like a scratch folder."""
    folder = root / name
    folder.mkdir()
    (folder / RESULTS_FILE).write_text("{}\n")
    (folder / lock.LOCK_FILE).write_text("")
    return aged(folder, OLD)


@pytest.fixture
def held_elsewhere(tmp_path: Path) -> subprocess.Popen:
    """A live run's scratch folder, held by another process: as a runner on another host or in
    another pid namespace holds it, whose pid means nothing here."""
    package_root = Path(lock.__file__).parents[2]
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_SCRATCH, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(package_root)},
    )
    holder.folder = aged(Path(holder.stdout.readline().strip()), OLD)
    yield holder
    holder.kill()
    holder.wait()
    holder.stdout.close()


def test_only_old_unlocked_scratch_folders_a_run_made_are_removed(tmp_path):
    gone = abandoned(tmp_path, "scaling-bench-dead")
    young = abandoned(tmp_path, "scaling-bench-young", age_s=MIN_AGE_S / 2)
    users = users_folder(tmp_path, "scaling-bench-baseline")
    not_ours = abandoned(tmp_path, "other-tool-dir")

    assert remove_stale_temp_dirs(tmp_path) == 1
    assert not gone.exists()
    assert young.exists() and users.exists() and not_ours.exists()
    assert (users / RESULTS_FILE).read_text() == "{}\n"


def test_a_scratch_folder_of_another_user_is_never_removed(tmp_path, monkeypatch):
    folder = abandoned(tmp_path, "scaling-bench-theirs")
    monkeypatch.setattr(os, "getuid", lambda: folder.stat().st_uid + 1)
    assert remove_stale_temp_dirs(tmp_path) == 0
    assert folder.exists()


def test_a_scratch_folder_made_on_another_host_is_left_to_that_hosts_runs(tmp_path):
    folder = abandoned(tmp_path, "scaling-bench-node2", host="node2.cluster")
    assert remove_stale_temp_dirs(tmp_path) == 0
    assert folder.exists()


def test_a_marker_that_is_a_link_is_not_followed(tmp_path):
    elsewhere = abandoned(tmp_path, "precious")
    folder = tmp_path / "scaling-bench-link"
    folder.mkdir()
    (folder / SCRATCH_MARKER).symlink_to(elsewhere / SCRATCH_MARKER)
    aged(folder, OLD)
    assert remove_stale_temp_dirs(tmp_path) == 0
    assert folder.exists() and elsewhere.exists()


def test_a_live_runs_folder_is_kept_by_its_lock_whatever_its_age_and_freed_by_its_death(
    tmp_path, held_elsewhere
):
    assert remove_stale_temp_dirs(tmp_path) == 0
    assert (held_elsewhere.folder / SCRATCH_MARKER).exists()

    held_elsewhere.send_signal(signal.SIGKILL)
    held_elsewhere.wait()
    assert remove_stale_temp_dirs(tmp_path) == 1
    assert not held_elsewhere.folder.exists()


def test_a_scratch_folder_is_removed_when_its_block_ends_and_spared_by_sweeps_meanwhile(tmp_path):
    with scratch_dir(tmp_path) as folder:
        (folder / "result.json").write_text("{}")
        aged(folder, OLD)
        assert remove_stale_temp_dirs(tmp_path) == 0  # this process's own folder, too
        assert (folder / "result.json").exists()
    assert list(tmp_path.iterdir()) == []


def test_the_default_root_is_the_system_temporary_folder(monkeypatch, tmp_path):
    monkeypatch.setattr(lock.tempfile, "gettempdir", lambda: str(tmp_path))
    abandoned(tmp_path, "scaling-bench-dead")
    assert remove_stale_temp_dirs() == 1


# --- records of the wrong shape in `report` and `compare` ---------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("metrics", [], "metrics: should be an object, got a list"),
        ("case_id", 5, "case_id: should be a string, got 5"),
        ("duration_s", "abc", "duration_s: should be a number, got 'abc'"),
        ("error", 5, "error: should be a string, got 5"),
        ("params", "abc", "params: should be an integer, got 'abc'"),
        ("predicted", None, "predicted: should be an object, got null"),
        ("case", None, "case: should be an object, got null"),
        ("case", {}, "case.family: is missing"),
        (
            "case",
            {"family": "mlp", "target_params": "1e5"},
            "case.target_params: should be a number, got '1e5'",
        ),
        ("case", {"family": 5, "target_params": 1e5}, "case.family: should be a string, got 5"),
        (
            "case",
            {"family": "mlp", "target_params": 1e5, "workloads": "train"},
            "case.workloads: should be a list, got 'train'",
        ),
        (
            "case",
            {"family": "mlp", "target_params": 1e5, "overrides": [1]},
            "case.overrides: should be an object, got a list",
        ),
    ],
)
@pytest.mark.parametrize("command", ["report", "compare", "merge"])
def test_a_record_of_the_wrong_shape_stops_report_compare_and_merge_with_one_line(
    capsys, tmp_path, command, field, value, message
):
    good, bad = tmp_path / "good", tmp_path / "bad"
    for folder in (good, bad):
        folder.mkdir()
        append_record(folder / RESULTS_FILE, record("mlp-1e5-fp32-cpu"))
        append_record(folder / RESULTS_FILE, record("mlp-1e6-fp32-cpu"))
    with open(bad / RESULTS_FILE, "a") as f:
        f.write(json.dumps({**record("mlp-1e7-fp32-cpu"), field: value}) + "\n")
    args = [str(bad)] if command == "report" else [str(good), str(bad)]
    if command == "report":
        args += ["--html", str(tmp_path / "report.html")]
    if command == "merge":
        args += ["--out", str(tmp_path / "merged")]
    code = main([command, *args])
    err = capsys.readouterr().err
    assert code == 2
    assert err == f"scaling-bench: error: {bad / RESULTS_FILE} line 3: {message}\n"
