"""The runner: every fault ends one worker, is recorded, and the grid goes on; nothing is lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
from faults import CPU_ALLOCATOR_MESSAGE, EXECUTE, SHAPE, Case

from scaling_bench.core.errors import UserError
from scaling_bench.engine import malloc
from scaling_bench.engine.protocol import Settings
from scaling_bench.engine.runner import run_cases
from scaling_bench.engine.worker import is_oom
from scaling_bench.report.progress import case_progress
from scaling_bench.store.records import (
    RESULTS_FILE,
    append_record,
    ensure_writable_dir,
    load_records,
    make_record,
)

FAULTS_PATH = Path(__file__).with_name("faults.py")
ENV = {"host": "test-machine"}


def run(cases, out_dir, timeout_s=20.0, **kwargs):
    return run_cases(
        cases,
        EXECUTE,
        made(out_dir),
        timeout_s=timeout_s,
        env=ENV,
        progress=case_progress(bar=False),
        **kwargs,
    )


def made(out_dir):
    """The results folder as ``campaign.prepare`` leaves it for the runner: there, writable."""
    ensure_writable_dir(Path(out_dir))
    return Path(out_dir)


def by_id(records):
    return {r["case_id"]: r for r in records}


def running(pid: int) -> bool:
    """Whether the process exists and is not a zombie waiting to be reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_until(condition, what: str, limit_s: float = 30.0) -> None:
    deadline = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting after {limit_s}s for {what}")
        time.sleep(0.05)


FAULT_GRID = [
    "ok",
    "memory_error",
    "fake_torch_oom",
    "cpu_allocator_failure",
    "value_error",
    "exit_3",
    "sigkill",
    "diverged",
    "bad_status",
    "not_json",
    "prints_then_ok",
]


@pytest.fixture(scope="module")
def fault_run(tmp_path_factory):
    """One grid of every fault but a hang, run once for the tests below; it ends with an ok case."""
    out_dir = tmp_path_factory.mktemp("faults")
    cases = [Case(fault, fault) for fault in FAULT_GRID] + [Case("ok_after_faults")]
    returned = run(cases, out_dir)
    return returned, by_id(returned), out_dir / RESULTS_FILE


def test_every_case_of_a_faulty_grid_is_recorded_in_order_and_the_last_one_is_ok(fault_run):
    returned, records, results_path = fault_run
    assert load_records(results_path) == returned
    assert [r["case_id"] for r in returned] == [*FAULT_GRID, "ok_after_faults"]
    assert records["ok_after_faults"]["status"] == "ok"


def test_ok_record_carries_the_returned_fields_and_the_parents_env(fault_run):
    record = fault_run[1]["ok"]
    assert record["status"] == "ok" and record["error"] is None
    assert (record["params"], record["config"]) == (10, {"d_model": 2})
    assert record["metrics"] == {"x": {"value": 1.0, "unit": "s"}}
    assert record["case"] == {**SHAPE, "fault": "ok", "marker": ""}
    assert record["env"] == ENV
    assert datetime.fromisoformat(record["started_at"]).utcoffset().total_seconds() == 0
    assert record["duration_s"] >= 0


@pytest.mark.parametrize(
    ("case_id", "message"),
    [
        ("memory_error", "MemoryError: no room for the activations"),
        ("fake_torch_oom", "OutOfMemoryError: CUDA out of memory"),
        ("cpu_allocator_failure", "DefaultCPUAllocator: can't allocate memory"),
    ],
)
def test_running_out_of_memory_is_recorded_as_oom(fault_run, case_id, message):
    record = fault_run[1][case_id]
    assert record["status"] == "oom"
    assert message in record["error"]


def test_an_exception_is_recorded_as_crashed_with_the_traceback_end(fault_run):
    record = fault_run[1]["value_error"]
    assert record["status"] == "crashed"
    assert "in value_error" in record["error"]
    assert record["error"].endswith("ValueError: shapes (3, 4) and (5, 6) do not match")


def test_os_exit_is_recorded_as_crashed_with_exit_code_and_stderr_tail(fault_run):
    error = fault_run[1]["exit_3"]["error"]
    assert fault_run[1]["exit_3"]["status"] == "crashed"
    assert "last words before exit" in error
    assert error.endswith("worker exited with code 3 without returning a result")


def test_killed_worker_is_recorded_as_crashed_naming_sigkill_and_the_oom_killer(fault_run):
    record = fault_run[1]["sigkill"]
    assert record["status"] == "crashed"
    assert "signal 9 (SIGKILL)" in record["error"]
    assert "out-of-memory killer" in record["error"]


def test_returned_status_and_error_are_kept(fault_run):
    record = fault_run[1]["diverged"]
    assert (record["status"], record["error"]) == ("diverged", "loss became nan at step 7")
    assert record["params"] == 10


@pytest.mark.parametrize(
    ("case_id", "message"),
    [
        ("bad_status", "returned status 'great', not one of ok, oom"),
        ("not_json", "returned fields that are not JSON"),
    ],
)
def test_a_result_breaking_the_contract_is_recorded_as_crashed(fault_run, case_id, message):
    assert fault_run[1][case_id]["status"] == "crashed"
    assert message in fault_run[1][case_id]["error"]


def test_user_output_on_stdout_and_stderr_does_not_disturb_the_result(fault_run):
    assert fault_run[1]["prints_then_ok"]["status"] == "ok"


def test_hang_is_recorded_as_timeout_with_its_stack_and_kills_the_process_group(tmp_path):
    marker = tmp_path / "child.pid"
    cases = [Case("hang", "spawn_child_and_hang", str(marker)), Case("ok_after_hang")]
    records = by_id(run(cases, tmp_path / "out", timeout_s=2))
    assert records["hang"]["status"] == "timeout"
    assert "in endless_loop" in records["hang"]["error"]
    assert records["hang"]["error"].endswith(
        "ran past the 2s timeout; killed the worker's process group"
    )
    assert not running(int(marker.read_text()))
    assert records["ok_after_hang"]["status"] == "ok"


@pytest.mark.parametrize(
    ("fault", "status"), [("measures_then_hangs", "timeout"), ("measures_then_dies", "crashed")]
)
def test_figures_saved_before_a_timeout_or_a_death_stay_in_the_record(tmp_path, fault, status):
    (record,) = run([Case("case", fault)], tmp_path, timeout_s=2)
    assert record["status"] == status
    assert record["params"] == 10
    assert record["metrics"] == {"x": {"value": 1.0, "unit": "s"}}


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "kill"])
def test_run_stopped_mid_grid_then_resumed_holds_each_case_once(tmp_path, stop):
    """The grid (ok, hang_once, ok) runs in its own process, is stopped while the second case
    hangs, then resumes here: the hang's worker is gone and every case has one record."""
    out_dir, marker = tmp_path / "out", tmp_path / "worker.pid"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    grid = subprocess.Popen(
        [sys.executable, str(FAULTS_PATH), str(out_dir), str(marker), "1"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(marker.exists, "the second case to start")
        wait_until(lambda: marker.read_text() != "", "the second case's pid")
        assert [r["case_id"] for r in load_records(out_dir / RESULTS_FILE)] == ["first"]
        grid.send_signal(stop)
        _, stderr = grid.communicate(timeout=30)
    finally:
        grid.kill()
    if stop == signal.SIGINT:
        assert grid.returncode == 130
        assert "interrupted: 1 of 3 cases recorded" in stderr and "--resume" in stderr
    wait_until(lambda: not running(int(marker.read_text())), "the hanging worker to die")

    from faults import run_grid

    resumed = run_grid(str(out_dir), str(marker), resume=True)
    assert [r["case_id"] for r in resumed] == ["second", "third"]
    records = load_records(out_dir / RESULTS_FILE)
    assert [(r["case_id"], r["status"]) for r in records] == [
        ("first", "ok"),
        ("second", "ok"),
        ("third", "ok"),
    ]


def recorded(case_id: str) -> dict:
    return make_record(
        case_id,
        SHAPE,
        "ok",
        env=ENV,
        started_at=datetime.now().astimezone(),
        duration_s=0,
    )


@pytest.mark.parametrize("resume", [False, True])
@pytest.mark.parametrize("damage", ["cut_off", "other_schema", "empty_case"])
def test_corrupt_results_file_is_refused_before_anything_runs_and_left_unchanged(
    tmp_path, resume, damage
):
    results_path = tmp_path / RESULTS_FILE
    append_record(results_path, recorded("earlier"))
    with open(results_path, "a") as f:
        f.write('{"schema_version": 1, "case_id": "cut' if damage == "cut_off" else "")
    replaced = {"other_schema": ('"schema_version": 1', '"schema_version": 2'),
                "empty_case": ('"case": {"family": "mlp", "target_params": 10000.0}',
                               '"case": {}')}  # fmt: skip
    if damage in replaced:
        text = results_path.read_text().replace(*replaced[damage])
        results_path.write_text(text)
    before = results_path.read_bytes()
    marker = tmp_path / "ran"
    expected = {"cut_off": "line 2: not valid JSON", "other_schema": "schema_version 2",
                "empty_case": "line 1: case.family: is missing"}[damage]  # fmt: skip
    with pytest.raises(UserError, match=expected):
        run([Case("new", "touch_marker", str(marker))], tmp_path, resume=resume)
    assert results_path.read_bytes() == before
    assert not marker.exists()


def test_same_case_twice_without_resume_is_refused_and_with_resume_skipped(tmp_path):
    run([Case("a"), Case("b")], tmp_path)
    before = (tmp_path / RESULTS_FILE).read_bytes()
    with pytest.raises(UserError, match=r"already holds case a;.*--resume.*new --out"):
        run([Case("a"), Case("c")], tmp_path)
    assert (tmp_path / RESULTS_FILE).read_bytes() == before
    assert run([Case("a"), Case("b")], tmp_path, resume=True) == []
    assert (tmp_path / RESULTS_FILE).read_bytes() == before


def test_new_cases_are_appended_to_an_existing_results_file(tmp_path):
    run([Case("a")], tmp_path)
    run([Case("b")], tmp_path)
    assert [r["case_id"] for r in load_records(tmp_path / RESULTS_FILE)] == ["a", "b"]


def test_a_grid_with_a_repeated_case_id_is_refused(tmp_path):
    with pytest.raises(UserError, match="holds case a more than once"):
        run([Case("a"), Case("b"), Case("a")], tmp_path)


def test_a_results_folder_not_made_is_a_user_error_of_the_lock(tmp_path):
    with pytest.raises(UserError, match="cannot create the lock file"):
        run_cases([Case("a")], EXECUTE, tmp_path / "none", timeout_s=20.0, env=ENV)


def test_execute_module_importable_in_the_parent_is_importable_in_the_worker(tmp_path, monkeypatch):
    (tmp_path / "only_on_parent_path.py").write_text(
        "def measure(case, settings):\n    return {'params': case['n']}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))

    class SizedCase(Case):
        def to_dict(self):
            return {**SHAPE, "n": 7}

    [record] = run_cases(
        [SizedCase("sized")],
        "only_on_parent_path:measure",
        made(tmp_path / "out"),
        timeout_s=20,
        env=ENV,
        progress=case_progress(bar=False),
    )
    assert (record["status"], record["params"]) == ("ok", 7)


def test_without_a_terminal_each_finished_case_is_one_plain_line(tmp_path, capsys):
    run([Case("a"), Case("b", "value_error")], tmp_path)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("[1/2] a ok ") and lines[0].endswith("s")
    assert lines[1].startswith("[2/2] b crashed ")
    assert lines[1].endswith(": ValueError: shapes (3, 4) and (5, 6) do not match")


def test_torch_out_of_memory_errors_count_as_oom():
    torch = pytest.importorskip("torch")
    assert is_oom(torch.OutOfMemoryError("CUDA out of memory"))
    with pytest.raises(RuntimeError) as cpu_failure:
        torch.empty(2**50, dtype=torch.uint8)  # 1 PiB: more than any address space
    assert is_oom(cpu_failure.value)
    assert not is_oom(RuntimeError(CPU_ALLOCATOR_MESSAGE.replace("memory", "mem")))
    assert not is_oom(ValueError("out of memory"))


def test_a_case_known_not_to_fit_is_recorded_as_skipped_without_a_worker(tmp_path):
    records = run([Case("huge", "sigkill"), Case("b")], tmp_path, skipped={"huge": "too big"})
    assert [(r["case_id"], r["status"], r["error"]) for r in records] == [
        ("huge", "skipped", "too big"),
        ("b", "ok", None),
    ]


def test_a_server_started_early_runs_the_cases_and_ends_with_the_run(tmp_path):
    from scaling_bench.engine.launchers import early_launcher
    from scaling_bench.engine.protocol import Settings

    launcher = early_launcher(Settings())
    records = run([Case("ok"), Case("ok_again", "ok")], tmp_path, launcher=launcher)

    assert [r["status"] for r in records] == ["ok", "ok"]
    wait_until(lambda: not running(launcher.parent_pid), "the early server to end")


def test_a_server_started_early_ends_when_the_run_is_refused(tmp_path):
    from scaling_bench.engine.launchers import early_launcher
    from scaling_bench.engine.protocol import Settings

    launcher = early_launcher(Settings())
    with pytest.raises(UserError, match="more than once"):
        run([Case("ok"), Case("ok")], tmp_path, launcher=launcher)

    wait_until(lambda: not running(launcher.parent_pid), "the early server to end")


def test_no_early_server_where_the_run_starts_its_own_launchers():
    from scaling_bench.engine.launchers import early_launcher
    from scaling_bench.engine.protocol import Settings

    assert early_launcher(Settings(fresh_workers=True)) is None
    assert early_launcher(Settings(parallel=2)) is None


def test_an_early_servers_imports_count_against_no_cases_timeout(tmp_path, monkeypatch):
    # A plugin that takes 3 s to import, and a case timeout of 2 s: the case waits for the
    # server outside its clock, as with a server started by the runner itself.
    (tmp_path / "slow_plugin.py").write_text("import time\ntime.sleep(3)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from scaling_bench.engine.launchers import early_launcher
    from scaling_bench.engine.protocol import Settings

    settings = Settings(plugins=("slow_plugin",))
    launcher = early_launcher(settings)
    (record,) = run([Case("ok")], tmp_path / "out", timeout_s=2.0, settings=settings,
                    launcher=launcher)  # fmt: skip

    assert record["status"] == "ok"


def test_what_the_runner_knows_of_a_case_reaches_its_execute_as_keyword_arguments(
    tmp_path: Path,
) -> None:
    records = run_cases(
        [Case("given"), Case("not_given")], "faults:echo_known", tmp_path, timeout_s=20.0,
        env=ENV, progress=case_progress(bar=False), known={"given": {"plan": {"batch_size": 8}}},
    )  # fmt: skip

    assert by_id(records)["given"]["config"] == {"plan": {"batch_size": 8}}
    assert by_id(records)["not_given"]["config"] == {}


@pytest.mark.skipif(malloc.in_effect("steady") != "steady", reason="needs glibc's mallopt")
@pytest.mark.parametrize(("mode", "kept"), [("steady", True), ("default", False)])
def test_a_steady_worker_heap_keeps_what_a_step_frees_and_the_default_one_returns_it(
    tmp_path: Path, mode: str, kept: bool
) -> None:
    [record] = run([Case("block", "frees_a_block")], tmp_path, settings=Settings(malloc=mode))

    held, freed = (record["metrics"][k]["value"] for k in ("held", "freed"))
    assert (held - freed < 16 << 20) is kept


def test_an_unknown_heap_mode_is_a_user_error_naming_it() -> None:
    with pytest.raises(UserError, match="malloc 'tcmalloc': choose from steady, default"):
        Settings(malloc="tcmalloc")
