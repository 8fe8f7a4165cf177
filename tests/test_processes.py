"""``run --processes K``: one record from K worker processes, and a gate over their values."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import pytest
import synthetic
from faults import Case
from test_compare import compare
from test_runner import run

from scaling_bench.core.stats import summarize
from scaling_bench.engine.processes import combine_processes
from scaling_bench.engine.protocol import Settings
from scaling_bench.frontends.cli import main


def fields(values: list[float], settled: bool = True, status: str = "ok") -> dict:
    step = summarize(values, "s") | {"settled": settled}
    return {"status": status, "metrics": {"train_step_s": step, "bytes": {"value": 8, "n": 1}}}


def test_processes_pool_their_samples_and_keep_each_value() -> None:
    two = [fields([1.0, 1.2, 1.1]), fields([2.0, 2.2, 2.1], settled=False)]
    combined = combine_processes(two, 2)
    step = combined["metrics"]["train_step_s"]
    assert step["samples"] == [1.0, 1.2, 1.1, 2.0, 2.2, 2.1]
    assert step["n"] == 6
    assert step["process_values"] == [1.1, 2.1]
    assert step["settled"] is False
    assert combined["metrics"]["bytes"] == {"value": 8, "n": 2, "process_values": [8, 8]}


def test_a_failed_process_decides_the_status_and_keeps_the_others_figures() -> None:
    failed = {"status": "crashed", "error": "Traceback ... ValueError", "metrics": {}}
    combined = combine_processes([fields([1.0, 1.2]), failed], 3)
    assert combined["status"] == "crashed"
    assert combined["error"].startswith("process 2 of 3: Traceback")
    assert combined["metrics"]["train_step_s"]["process_values"] == [1.1]


def test_the_runner_runs_each_case_in_k_workers_and_writes_one_record(tmp_path: Path) -> None:
    (record,) = run([Case("one")], tmp_path, settings=Settings(processes=3))
    assert record["status"] == "ok"
    assert record["metrics"]["x"]["process_values"] == [1.0, 1.0, 1.0]


def test_a_process_that_fails_stops_the_case_and_is_named(tmp_path: Path) -> None:
    case = Case("one", "fails_after_first", str(tmp_path / "marker"))
    (record,) = run([case], tmp_path / "out", settings=Settings(processes=5))
    assert record["status"] == "crashed"
    assert "process 2 of 5" in record["error"]
    assert "the second process failed" in record["error"]


def with_processes(records: list[dict], shift: float, seed: int, k: int = 5) -> list[dict]:
    """Each timing as K processes whose medians move together by a run-wide factor ``shift``
    and apart by 3% process-to-process noise: what a noisy machine does between runs."""
    rng = random.Random(seed)
    for record in records:
        for metric in record["metrics"].values():
            if "samples" in metric:
                values = [metric["value"] * shift * (1 + rng.gauss(0, 0.03)) for _ in range(k)]
                metric["process_values"] = values
                metric["value"] = metric["median"] = sorted(values)[k // 2]
    return records


@pytest.mark.parametrize(("k", "verdict"), [(5, "regressed"), (3, "inconclusive")])
def test_a_gate_over_processes_needs_five_a_side_to_flag(capsys, tmp_path, k, verdict) -> None:
    base = synthetic.write(tmp_path / "b", with_processes(synthetic.run(seed=0), 1.0, 0, k))
    slow = synthetic.write(tmp_path / "c", with_processes(synthetic.run(seed=1), 1.5, 1, k))
    code, report, _ = compare(capsys, base, slow, "--metric", "train_step_s")
    assert {r["verdict"] for r in report["rows"]} == {verdict}
    assert code == (verdict == "regressed")
    if k == 3:
        assert "3 vs 3 processes cannot reach p < 0.01" in report["rows"][0]["note"]


def test_tight_samples_of_shifted_processes_are_within_drift_and_not_flagged(capsys, tmp_path):
    """Samples of one process agree closely while whole runs sit 6% apart: within a process
    the test sees a move, but with one process a side it must also clear the run-to-run
    drift, so it is inconclusive (exit 0, saying so); over five processes a side, whose values
    scatter by more, the test itself does not see it."""
    records = [synthetic.run(seed=s, noise=0.002, slowdown=f) for s, f in ((0, 1.0), (1, 1.06))]
    one = [synthetic.write(tmp_path / f"one{i}", r) for i, r in enumerate(records)]
    code, report, _ = compare(capsys, *one, "--metric", "train_step_s")
    assert code == 0 and report["within_process"]
    assert {r["verdict"] for r in report["rows"]} == {"inconclusive"}
    assert report["drift_line"].startswith("gate inconclusive: 6 moves beyond 5% within")
    rng = random.Random(3)
    for record in (r for run_ in records for r in run_):
        metric = record["metrics"]["train_step_s"]
        values = [metric["value"] * (1 + rng.gauss(0, 0.08)) for _ in range(5)]
        metric["process_values"] = values
        metric["value"] = metric["median"] = sorted(values)[2]
    many = [synthetic.write(tmp_path / f"many{i}", r) for i, r in enumerate(records)]
    code, report, _ = compare(capsys, *many, "--metric", "train_step_s")
    assert not report["within_process"]
    assert "regressed" not in {r["verdict"] for r in report["rows"]} and code == 0


def test_the_gate_names_a_thread_count_that_differs(capsys, tmp_path: Path) -> None:
    env = synthetic.ENV | {"torch_threads": 2}
    base = synthetic.write(tmp_path / "b", synthetic.run(seed=0, env=env))
    one = synthetic.write(tmp_path / "c", synthetic.run(seed=1, env=env | {"torch_threads": 1}))
    assert main(["compare", str(base), str(one)]) == 0
    out = capsys.readouterr().out
    assert "the runs differ in torch_threads 2 → 1" in out
    assert "gate with scaling-bench ab (or run both sides with --processes 5)" in " ".join(
        out.split()
    )


@pytest.mark.parametrize("value", ["0", "101", "two"])
def test_a_bad_process_count_is_one_line_and_exit_2(capsys, tmp_path, value) -> None:
    try:
        code = main(["run", "--processes", value, "--out", str(tmp_path), "--families", "mlp"])
    except SystemExit as exc:  # argparse's own refusal of a non-number
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert "--processes" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "results.jsonl").exists()


def test_parallel_slots_run_cases_at_once_each_on_its_own_gpu(tmp_path: Path) -> None:
    cases = [Case(f"case{i}", "shows_its_gpu") for i in range(4)]
    records = run(cases, tmp_path, settings=Settings(parallel=2))
    assert [r["case_id"] for r in records] == [c.case_id for c in cases]
    assert {r["config"]["visible"] for r in records} == {"0", "1"}
    spans = sorted((r["config"]["start"], r["config"]["end"]) for r in records)
    assert any(later[0] < earlier[1] for earlier, later in itertools.pairwise(spans))


def test_a_parallel_run_stopped_mid_grid_resumes_with_each_case_once(tmp_path: Path) -> None:
    """(ok, hang_once, ok) on two slots, Ctrl-C while the second hangs beside the others'
    records: the hanging worker dies unrecorded, and --resume runs only it."""
    import os
    import signal
    import subprocess
    import sys

    from faults import run_grid
    from test_runner import FAULTS_PATH, running, wait_until

    from scaling_bench.store.records import RESULTS_FILE, load_records

    out_dir, marker = tmp_path / "out", tmp_path / "worker.pid"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    grid = subprocess.Popen(
        [sys.executable, str(FAULTS_PATH), str(out_dir), str(marker), "2"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: marker.exists() and marker.read_text() != "", "the hang to start")
        results = out_dir / RESULTS_FILE
        wait_until(lambda: results.exists() and len(load_records(results)) == 2, "two records")
        grid.send_signal(signal.SIGINT)
        _, stderr = grid.communicate(timeout=30)
    finally:
        grid.kill()
    assert grid.returncode == 130
    assert "interrupted: 2 of 3 cases recorded" in stderr
    wait_until(lambda: not running(int(marker.read_text())), "the hanging worker to die")
    resumed = run_grid(str(out_dir), str(marker), resume=True, parallel=2)
    assert [r["case_id"] for r in resumed] == ["second"]
    records = load_records(out_dir / RESULTS_FILE)
    assert sorted(r["case_id"] for r in records) == ["first", "second", "third"]
    assert {r["status"] for r in records} == {"ok"}


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--parallel", "0"], "--parallel 0: give 1 to 100"),
        (["--parallel", "2"], "--parallel 2: runs one case per GPU, with --device cuda"),
    ],
)
def test_parallel_needs_a_gpu_per_slot(capsys, tmp_path: Path, flags, message) -> None:
    args = ["run", *flags, "--out", str(tmp_path), "--families", "mlp", "--device", "cpu"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "results.jsonl").exists()


class _Checked(Exception):
    """Raised by the step after the run's checks: the grid passed them."""


@pytest.mark.parametrize("devices", [2, 4])
def test_parallel_with_device_cuda_runs_on_the_resolved_device(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, devices: int
) -> None:
    """``run --device cuda --parallel 2`` (docs/distributed.md): the grid's device resolves to
    ``cuda:0``, each slot's own GPU, and the checks let it through to the next step."""
    import torch

    from scaling_bench.engine import campaign

    def checked(out: Path) -> None:
        raise _Checked

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: devices)
    monkeypatch.setattr(campaign, "ensure_writable_dir", checked)
    args = ["run", "--device", "cuda", "--parallel", "2", "--out", str(tmp_path / "out"),
            "--families", "mlp", "--sizes", "1e4"]  # fmt: skip
    with pytest.raises(_Checked):
        main(args)


@pytest.mark.parametrize(
    ("device", "found", "message"),
    [
        ("cuda", 1, "--parallel 2: this node has 1 CUDA devices"),
        ("cuda:1", 2, "--parallel 2: runs one case per GPU, with --device cuda (the grid's "
         "device is cuda:1)"),
    ],
)  # fmt: skip
def test_parallel_refuses_too_few_gpus_and_one_gpu_named(
    monkeypatch: pytest.MonkeyPatch, capsys, tmp_path: Path, device: str, found: int, message: str
) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: found)
    args = ["run", "--device", device, "--parallel", "2", "--out", str(tmp_path),
            "--families", "mlp", "--sizes", "1e4"]  # fmt: skip
    assert main(args) == 2
    assert capsys.readouterr().err.strip() == f"scaling-bench: error: {message}"
    assert not (tmp_path / "results.jsonl").exists()


def test_a_metric_with_a_null_value_in_every_process_stays_null() -> None:
    null = {"status": "ok", "metrics": {"x": {"value": None, "unit": "s", "n": 1}}}
    combined = combine_processes([null, null | {"metrics": {"x": {"value": 2.0, "n": 1}}}], 2)
    assert combined["metrics"]["x"]["value"] == 2.0
    assert combined["metrics"]["x"]["process_values"] == [None, 2.0]
    assert combine_processes([null, null], 2)["metrics"]["x"]["value"] is None


def test_a_null_metric_value_with_processes_is_recorded_and_the_grid_goes_on(
    tmp_path: Path,
) -> None:
    settings = Settings(processes=2, fresh_workers=True)
    records = run([Case("null", "null_metric"), Case("next")], tmp_path, settings=settings)
    assert [r["status"] for r in records] == ["ok", "ok"]
    assert records[0]["metrics"]["x"]["value"] is None
