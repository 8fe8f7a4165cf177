"""A new workload is one module and one registration line: ``toy_workload`` (in this folder), with
no file of the package or of ``benchmarks/`` changed, runs in ``scaling-bench run``, the pytest
front-end and asv, and its figures reach the records, ``compare`` and the run's summary table."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from asv_runner.benchmarks.mark import SkipNotImplemented

from scaling_bench.config import axes
from scaling_bench.frontends import suites
from scaling_bench.frontends.cli import main
from scaling_bench.store.foreign import load_run
from scaling_bench.workloads import base

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
CASE_ID = "mlp-1e4-fp32-cpu"
#: A machine's peak from the environment: no GEMM measured before the first case.
PEAK = {"SCALING_BENCH_PEAK_FLOPS": "2e11"}
#: No case or plugin setting of the calling shell reaches a subprocess.
NO_SETTINGS = dict.fromkeys([*suites.ENV.values(), suites.PLUGINS_ENV], "")


@pytest.fixture(scope="module")
def toy() -> Iterator[ModuleType]:
    """The toy workload registered, and the registry as it was afterwards: the registry has no
    way to forget a workload, and the rest of the session's grids must not grow one."""
    workloads = dict(base._REGISTRY)
    declared = {axis: dict(names) for axis, names in axes._declared.items()}
    yield importlib.import_module("toy_workload")
    base._REGISTRY.clear()
    base._REGISTRY.update(workloads)
    axes._declared.clear()
    axes._declared.update(declared)
    sys.modules.pop("toy_workload", None)


def _scaling_bench_run(out: Path, sizes: str) -> None:
    with pytest.MonkeyPatch.context() as mp:
        for name, value in PEAK.items():
            mp.setenv(name, value)
        code = main(
            ["run", "--plugin", "toy_workload", "--workloads", "toy,train", "--families", "mlp",
             "--sizes", sizes, "--budget", "0.1", "--out", str(out), "--no-progress"]
        )  # fmt: skip
    assert code == 0


@pytest.fixture(scope="module")
def runs(toy: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Runs of ``scaling-bench run --plugin toy_workload``: two sizes (a scaling study the report
    fits), then the one case again."""
    base_dir, current_dir = (tmp_path_factory.mktemp(name) for name in ("base", "current"))
    _scaling_bench_run(base_dir, "1e4,1e5")
    _scaling_bench_run(current_dir, "1e4")
    return base_dir, current_dir


def _record(folder: Path) -> dict:
    (line,) = (folder / "results.jsonl").read_text().splitlines()
    return json.loads(line)


def test_no_file_of_the_package_or_its_benchmarks_names_the_toy_workload() -> None:
    sources = [*(ROOT / "scaling_bench").rglob("*.py"), *(ROOT / "benchmarks").glob("*.py")]
    assert sources
    assert not [p for p in sources if "toy" in p.read_text(encoding="utf-8").lower()]


@pytest.mark.slow
def test_scaling_bench_run_with_the_plugin_records_the_toy_figures(runs) -> None:
    record = _record(runs[1])
    assert record["status"] == "ok", record["error"]
    assert record["case_id"] == CASE_ID
    metrics = record["metrics"]
    assert metrics["toy_bytes"] == {"value": 4 * record["params"], "unit": "bytes", "n": 1}
    assert metrics["toy_answer_s"]["unit"] == "s" and metrics["toy_answer_s"]["n"] == 5
    assert 0 < metrics["toy_answer_s"]["value"] < 1
    assert "train_step_s" in metrics and "forward_step_s" not in metrics
    assert record["predicted"]["toy_bytes"] == metrics["toy_bytes"]


@pytest.mark.slow
def test_compare_reads_the_toy_figures_by_their_specs(runs, capsys) -> None:
    code = main(["compare", *map(str, runs), "--json", "--all"])
    report = json.loads(capsys.readouterr().out)
    assert code in (0, 1)  # a step time may move between two runs; the bytes never do
    rows = {r["metric"]: r for r in report["rows"] if r["case_id"] == CASE_ID}
    assert rows["toy_bytes"]["verdict"] == "unchanged"
    assert rows["toy_bytes"]["unit"] == "bytes"
    assert rows["toy_answer_s"]["unit"] == "s"
    assert not {"toy_bytes", "toy_answer_s"} & set(report.get("unknown_metrics", []))
    assert report["only_base"] == ["mlp-1e5-fp32-cpu"]


@pytest.mark.slow
def test_the_report_fits_the_toy_bytes_it_predicted(runs, tmp_path, capsys) -> None:
    summary = tmp_path / "summary.md"
    html = tmp_path / "report.html"
    assert main(["report", str(runs[0]), "--markdown", str(summary), "--html", str(html)]) == 0
    assert CASE_ID in html.read_text(encoding="utf-8")
    figures, fits = summary.read_text(encoding="utf-8").split("### Fitted exponents")
    header = next(line for line in figures.splitlines() if line.startswith("| case |"))
    assert "toy bytes" in header  # the toy workload's column in the figures per case
    rows = [line for line in fits.split("###")[0].splitlines() if "toy" in line]
    assert rows and all("parameter bytes" in row for row in rows), rows


def _pytest(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **NO_SETTINGS, **PEAK, **(env or {}), "PYTHONPATH": str(HERE)}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "benchmarks", "-p", "no:cacheprovider", *args],
        cwd=ROOT, env=env, capture_output=True, text=True,
    )  # fmt: skip


ONE_CASE_OPTIONS = ("--sb-families", "mlp", "--sb-sizes", "1e4", "--sb-grid", "smoke")


@pytest.mark.slow
def test_the_pytest_front_end_collects_a_toy_test_with_the_plugin_option() -> None:
    done = _pytest("--collect-only", "-q", "--sb-plugin", "toy_workload", *ONE_CASE_OPTIONS)
    assert done.returncode == 0, done.stdout + done.stderr
    ids = [line for line in done.stdout.splitlines() if "::" in line]
    assert f"benchmarks/test_benchmarks.py::test_workload[{CASE_ID}-toy]" in ids
    order = [i.rsplit("-", 1)[1].rstrip("]") for i in ids]
    # registry order
    assert order == ["forward", "inference", "train", "toy", "checkpoint", "convergence"]


@pytest.mark.slow
def test_the_pytest_front_end_times_the_toy_workload_from_the_environment(tmp_path) -> None:
    out = tmp_path / "bench.json"
    done = _pytest(
        *ONE_CASE_OPTIONS, "--sb-workloads", "toy", f"--benchmark-json={out}",
        f"--benchmark-storage={tmp_path}", "-q", env={suites.PLUGINS_ENV: "toy_workload"},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout and "skipped" in done.stdout
    (bench,) = json.loads(out.read_text())["benchmarks"]
    assert bench["name"] == f"test_workload[{CASE_ID}-toy]"
    info = bench["extra_info"]
    assert (info["case_id"], info["workload"], info["metric"]) == (CASE_ID, "toy", "toy_s")
    assert info["toy_bytes"]["value"] == 4 * info["params"]
    metrics = load_run(out).cases[CASE_ID].metrics
    assert {"toy_s", "toy_bytes", "toy_answer_s"} <= set(metrics)
    assert metrics["toy_s"]["unit"] == "s"


@pytest.fixture
def bench_cases(toy: ModuleType, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """``benchmarks/bench_cases.py`` as asv imports it, with the plugin named in the environment."""
    for variable in NO_SETTINGS:
        monkeypatch.delenv(variable, raising=False)
    settings = {
        suites.PLUGINS_ENV: "toy_workload",
        "SCALING_BENCH_FAMILIES": "mlp,cnn",
        "SCALING_BENCH_SIZES": "1e4",
        "SCALING_BENCH_DEVICE": "cpu",
        "SCALING_BENCH_WORKLOADS": "toy",
    }
    for name, value in (settings | PEAK).items():
        monkeypatch.setenv(name, value)
    sys.modules.pop("benchmarks.bench_cases", None)
    yield importlib.import_module("benchmarks.bench_cases")
    sys.modules.pop("benchmarks.bench_cases", None)


def test_asv_suites_get_the_toy_workload_tracks(bench_cases: ModuleType) -> None:
    toy_suite = bench_cases.Toy
    assert toy_suite.param_names == list(suites.ASV_AXES)
    assert toy_suite.params[:2] == [["mlp", "cnn"], ["1e4"]]
    assert toy_suite.track_toy_answer_s.unit == "seconds"
    assert toy_suite.track_toy_bytes.unit == "bytes"
    assert not [n for n in dir(toy_suite) if n.startswith("time_")]  # toy has no step
    names = {suite.__name__ for suite in bench_cases.SUITES}
    assert {"ForwardStep", "TrainStep", "Forward", "Train", "Checkpoint", "Toy"} <= names


@pytest.mark.slow
def test_asv_setup_cache_measures_the_toy_workload_once_for_its_tracks(bench_cases) -> None:
    suite = bench_cases.Toy()
    figures = suite.setup_cache()
    assert set(figures) == {CASE_ID, "cnn-1e4-fp32-cpu"}
    mlp = next(v for v, case in bench_cases.GRID.cases.items() if case.case_id == CASE_ID)
    params = figures[CASE_ID]["metrics"]["toy"]["toy_bytes"]["value"] // 4
    assert suite.track_toy_bytes(figures, *mlp) == 4 * params
    assert 0 < suite.track_toy_answer_s(figures, *mlp) < 1
    with pytest.raises(SkipNotImplemented, match="not a case of this grid"):
        suite.track_toy_bytes(figures, mlp[0], "1e9", *mlp[2:])
    with pytest.raises(SkipNotImplemented, match="train is not among"):
        bench_cases.Train().track_train_step_s(figures, *mlp)
