"""The fork server under faults: killed while a case runs or while it imports, stopped, failing
to import a plugin, outlived by a case's daemon. Each time the case is recorded with the right
status and the grid goes on; a very short timeout and a shared temporary folder likewise."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest
from faults import Case
from test_runner import by_id, run, running, wait_until

from scaling_bench.engine import launchers
from scaling_bench.engine.protocol import Settings
from scaling_bench.engine.runner import RunInterrupted
from scaling_bench.store.records import RESULTS_FILE, load_records

SERVER_ENDED = "the fork server (pid "


def test_a_server_killed_mid_case_crashes_that_case_and_the_next_run_on_a_new_server(tmp_path):
    marker = tmp_path / "worker.pid"
    cases = [Case("first", "kills_its_server", str(marker)), Case("second"), Case("third")]
    records = run(cases, tmp_path / "out")

    assert [(r["case_id"], r["status"]) for r in records] == [
        ("first", "crashed"),
        ("second", "ok"),
        ("third", "ok"),
    ]
    assert SERVER_ENDED in records[0]["error"]
    assert records[0]["error"].endswith("ended; the case's worker ended with it")
    wait_until(lambda: not running(int(marker.read_text())), "the first case's worker to die")


def test_a_daemon_of_the_case_holding_its_descriptors_does_not_hold_up_the_grid(tmp_path):
    """The runner sees the server's end as it happens, not when a pipe closes that the case's
    daemon may keep open: the grid is done while the daemon still lives."""
    marker = tmp_path / "daemon.pid"
    cases = [Case("first", "daemon_then_kills_its_server", str(marker)), Case("second")]
    try:
        records = run(cases, tmp_path / "out")
        assert running(int(marker.read_text())), "the daemon outlives the grid"
    finally:
        if marker.exists():
            os.kill(int(marker.read_text()), signal.SIGKILL)
    assert [(r["case_id"], r["status"]) for r in records] == [
        ("first", "crashed"),
        ("second", "ok"),
    ]
    assert SERVER_ENDED in records[0]["error"]


def test_a_stopped_server_times_the_case_out_and_the_next_runs_on_a_new_server(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(launchers, "ANSWER_WITHIN_S", 1.0)
    records = run([Case("first", "stops_its_server"), Case("second")], tmp_path, timeout_s=2)

    assert [(r["case_id"], r["status"]) for r in records] == [
        ("first", "timeout"),
        ("second", "ok"),
    ]
    assert records[0]["error"].endswith(
        "ran past the 2s timeout; killed the worker's process group"
    )


def stopped(pid: int) -> bool:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"


def test_an_interrupt_while_the_server_is_stopped_still_ends_the_run(tmp_path, monkeypatch):
    """Ctrl-C (the CLI's SIGTERM takes the same path, ``cli.Terminated``) while the case's server
    is stopped: the run ends with the interrupt instead of waiting on the server for ever."""
    monkeypatch.setattr(launchers, "ANSWER_WITHIN_S", 1.0)
    launcher = launchers.early_launcher(Settings())

    def interrupt_once_stopped() -> None:
        wait_until(lambda: stopped(launcher.parent_pid), "the server to stop", 120)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt_once_stopped, daemon=True).start()
    with pytest.raises(RunInterrupted, match="0 of 2 cases recorded"):
        run([Case("first", "stops_its_server"), Case("second")], tmp_path, timeout_s=600,
            launcher=launcher)  # fmt: skip
    wait_until(lambda: not running(launcher.parent_pid), "the stopped server to be killed")


# A plugin that fails only in the fork server: imported anywhere else (a fresh worker), it is fine.
SERVER_ONLY_FAULT = """
import os
import signal
import subprocess
import sys

if sys.modules["__main__"].__spec__.name == "scaling_bench.engine.server":
    {fault}
"""


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        (
            "raise RuntimeError('exploded in the server')",
            "could not import: --plugin server_only: raised RuntimeError while importing: exploded",
        ),
        ("os.kill(os.getpid(), signal.SIGKILL)", "ended before it was ready (killed by signal 9)"),
    ],
    ids=["raises", "killed"],
)
def test_a_server_that_cannot_start_leaves_the_cases_to_fresh_workers_with_one_line(
    tmp_path, monkeypatch, capfd, fault, reason
):
    (tmp_path / "server_only.py").write_text(SERVER_ONLY_FAULT.format(fault=fault))
    monkeypatch.syspath_prepend(str(tmp_path))
    settings = Settings(plugins=("server_only",))
    records = run([Case("first"), Case("second")], tmp_path / "out", settings=settings)

    assert [r["status"] for r in records] == ["ok", "ok"]
    err = capfd.readouterr().err
    assert "Traceback" not in err
    (line,) = [line for line in err.splitlines() if SERVER_ENDED in line]
    assert reason in line and line.endswith("each case runs in a fresh interpreter instead")


class KilledBeforeItsLog:
    """A launcher whose workers are killed before they open their log, as a timeout shorter than
    a fork kills them: each is a process that never writes anything."""

    parent_pid = os.getpid()

    def ready(self) -> None:
        pass

    def start(self, job: Path, result: Path, log: Path, scratch: Path) -> int:
        self.proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
        return self.proc.pid

    def wait(self, pid: int, timeout_s: float) -> None:
        return None

    def kill(self, pid: int) -> int:
        self.proc.kill()
        return self.proc.wait()

    def close(self) -> None:
        pass


def test_a_worker_killed_before_it_opened_its_log_is_recorded_as_timeout(tmp_path):
    records = run([Case("a"), Case("b")], tmp_path, timeout_s=0.001, launcher=KilledBeforeItsLog())

    assert [r["status"] for r in records] == ["timeout", "timeout"]
    assert records[0]["error"] == "ran past the 0.001s timeout; killed the worker's process group"


def test_a_timeout_shorter_than_a_fork_is_recorded_as_timeout_and_the_grid_goes_on(tmp_path):
    cases = [Case(f"hang{i}", "endless_loop") for i in range(3)]
    records = run(cases, tmp_path, timeout_s=0.001)

    assert [r["status"] for r in records] == ["timeout"] * 3
    assert load_records(tmp_path / RESULTS_FILE) == records


def test_a_sweep_by_another_run_spares_a_live_cases_folder_and_a_users_results(
    tmp_path, monkeypatch
):
    """Another run sweeps the temporary folder while a case runs (its scratch folder as old as
    an abandoned one); the results folder of an earlier run is named like a scratch folder."""
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    baseline = root / "scaling-bench-baseline"
    fresh = Settings(fresh_workers=True)  # no fork server needed: quicker
    run([Case("earlier")], baseline, settings=fresh)
    os.utime(baseline, (0, 0))

    cases = [Case("live", "sweeps_the_temporary_folder"), Case("next")]
    records = by_id(run(cases, root / "b", settings=fresh))

    assert records["live"]["status"] == "ok"
    assert records["live"]["metrics"]["removed"]["value"] == 0
    assert records["next"]["status"] == "ok"
    assert [r["case_id"] for r in load_records(baseline / RESULTS_FILE)] == ["earlier"]
