"""The benchmark front-ends: pytest-benchmark, asv and nox, run as users run them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from scaling_bench.config import grid
from scaling_bench.config.case import Case
from scaling_bench.frontends import cli, pytest_plugin, suites

ROOT = Path(__file__).resolve().parent.parent
#: The subprocesses' case settings: none but these, whatever the calling shell exports.
NO_CASE_SETTINGS = dict.fromkeys(suites.ENV.values(), "")
ONE_CASE = NO_CASE_SETTINGS | {"SCALING_BENCH_FAMILIES": "mlp", "SCALING_BENCH_SIZES": "1e5"}
CASE_ID = "mlp-1e5-fp32-cpu"


def _run(*args: str, cwd: Path = ROOT, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        args, cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True
    )


def _no_bench_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in suites.ENV.values():
        monkeypatch.delenv(variable, raising=False)


@pytest.mark.parametrize(
    "flags",
    [[], ["--families", "mlp,gpt", "--sizes", "1e5,1e6"], ["--grid", "full", "--dtype", "fp32"]],
)
def test_benchmark_cases_are_the_cases_scaling_bench_run_measures(monkeypatch, flags) -> None:
    _no_bench_env(monkeypatch)
    run_spec = cli._spec_from_args(cli.build_parser().parse_args(["run", *flags]))
    run_cases = grid.build_cases(run_spec, grid.resolve_device(run_spec.value("device")))
    settings = {name: value for name, value in zip(flags[::2], flags[1::2], strict=True)}
    bench = suites.bench_cases({k.lstrip("-"): v for k, v in settings.items()})
    assert bench == run_cases
    assert not any(map(suites.skip_reason, bench))


def test_a_grid_file_gives_the_cases_of_scaling_bench_run(monkeypatch, tmp_path) -> None:
    _no_bench_env(monkeypatch)
    path = tmp_path / "grid.toml"
    path.write_text(
        'families = ["mlp", "cnn"]\nsizes = "1e4:1e5:x10"\ndevice = "cpu"\nbudget_s = 0.5\n'
    )
    run_spec = cli._spec_from_args(cli.build_parser().parse_args(["run", "--grid", str(path)]))
    assert suites.bench_cases({"grid": str(path)}) == grid.build_cases(run_spec, "cpu")


def test_settings_win_over_the_environment_which_wins_over_the_grid(monkeypatch) -> None:
    _no_bench_env(monkeypatch)
    monkeypatch.setenv("SCALING_BENCH_FAMILIES", "cnn")
    monkeypatch.setenv("SCALING_BENCH_SIZES", "1e4")
    assert [c.case_id for c in suites.bench_cases()] == ["cnn-1e4-fp32-cpu"]
    from_options = suites.bench_cases({"families": "mlp", "sizes": "1e5"})
    assert [c.case_id for c in from_options] == [CASE_ID]


def test_smoke_grid_is_the_quick_grid_smallest_size_of_each_family(monkeypatch) -> None:
    _no_bench_env(monkeypatch)
    quick = suites.bench_cases({"grid": "quick", "device": "cpu"})
    smoke = suites.bench_cases({"grid": "smoke", "device": "cpu"})
    smallest = {}
    for case in quick:
        smallest.setdefault(case.family, case.case_id)
    assert [c.case_id for c in smoke] == list(smallest.values())
    assert all(c.budget_s == grid.SMOKE_BUDGET_S for c in smoke)


def test_a_gpu_asked_for_without_one_gives_the_gpu_grid_and_a_reason(monkeypatch) -> None:
    _no_bench_env(monkeypatch)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cases = suites.bench_cases({"device": "cuda", "families": "gpt"})
    assert [c.case_id for c in cases][:2] == ["gpt-1e6-fp32-cuda", "gpt-1e6-bf16-cuda"]
    assert all("no CUDA GPU is usable" in suites.skip_reason(c) for c in cases)


def test_distributed_cases_are_left_to_scaling_bench_run() -> None:
    case = Case("mlp", 1e5, nproc_per_node=2, strategy="ddp")
    assert "scaling-bench run" in suites.skip_reason(case)
    assert suites.skip_reason(Case("mlp", 1e5)) is None


def test_a_bad_option_fails_collection_with_its_message_alone(monkeypatch) -> None:
    _no_bench_env(monkeypatch)
    config = SimpleNamespace(
        stash=pytest.Stash(),
        getoption=lambda name, default=None: "foo" if name == "sb_families" else default,
    )
    with pytest.raises(pytest.fail.Exception, match="unknown family 'foo'") as failed:
        pytest_plugin._cases(config)
    assert not failed.value.pytrace


def test_asv_clock_reads_seconds_per_sample_and_waits_for_the_gpu(monkeypatch) -> None:
    synchronized: list[torch.device] = []
    monkeypatch.setattr(torch.cuda, "synchronize", synchronized.append)
    monkeypatch.setattr(suites.time, "perf_counter", lambda: 64.0)
    clock = suites.SampleClock()
    device = torch.device("cuda:0")
    clock.use(SimpleNamespace(plan=SimpleNamespace(batch_size=16), device=device))
    assert clock() == 4.0
    assert synchronized == [device]


def test_asv_machine_name_carries_the_gpu_model() -> None:
    assert suites.asv_machine_name({"hostname": "box"}) == "box"
    env = {"hostname": "box", "gpu_name": "NVIDIA H200 NVL"}
    assert suites.asv_machine_name(env) == "box-nvidia-h200-nvl"


def test_pytest_benchmark_machine_info_gets_the_gpu_name_and_driver(monkeypatch) -> None:
    env = {"hostname": "box", "gpu_name": "NVIDIA H200", "gpu_driver_version": "570.1"}
    monkeypatch.setattr("scaling_bench.hardware.peaks.fingerprint", lambda: env)
    machine_info = {"node": "box"}
    pytest_plugin.pytest_benchmark_update_machine_info(None, machine_info)
    assert machine_info == {"node": "box", "gpu_name": "NVIDIA H200", "gpu_driver_version": "570.1"}


def test_plugin_leaves_tests_without_a_case_alone() -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("parametrized a test that asked for no case")

    pytest_plugin.pytest_generate_tests(
        SimpleNamespace(fixturenames=["tmp_path"], parametrize=refuse)
    )


def test_plugin_import_leaves_torch_unimported() -> None:
    code = "import sys, scaling_bench.frontends.pytest_plugin; print('torch' in sys.modules)"
    assert _run(sys.executable, "-c", code).stdout.strip() == "False"


@pytest.mark.slow
def test_benchmark_disable_runs_the_smoke_grid_grouped_by_case() -> None:
    done = _run(
        sys.executable,
        "-m",
        "pytest",
        "benchmarks",
        "--benchmark-disable",
        "--collect-only",
        "-q",
        "-p",
        "no:cacheprovider",
        env=NO_CASE_SETTINGS,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    ids = [line for line in done.stdout.splitlines() if "::" in line]
    cases = [line.split("[")[1].rstrip("]") for line in ids]
    smoke = suites.bench_cases({"grid": "smoke"}, environ={})
    assert list(dict.fromkeys(cases)) == [c.case_id for c in smoke]
    assert len(ids) == 4 * len(smoke)
    assert cases == sorted(cases, key=cases.index)  # each case's tests in a row


def test_pytest_skips_gpu_cases_with_the_reason_where_there_is_no_gpu(monkeypatch) -> None:
    _no_bench_env(monkeypatch)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    options = {"sb_device": "cuda", "sb_families": "mlp", "benchmark_disable": True}
    config = SimpleNamespace(
        stash=pytest.Stash(), getoption=lambda name, default=None: options.get(name, default)
    )
    params = pytest_plugin._cases(config)
    assert [p.id for p in params] == ["mlp-1e6-fp32-cuda", "mlp-1e6-bf16-cuda"]
    reasons = [mark.kwargs["reason"] for p in params for mark in p.marks if mark.name == "skip"]
    assert reasons == ["cuda:0 asked for, but no CUDA GPU is usable on this machine"] * 2


@pytest.mark.slow
def test_pytest_benchmark_json_holds_every_metric_in_extra_info(tmp_path) -> None:
    out = tmp_path / "bench.json"
    done = _run(
        sys.executable,
        "-m",
        "pytest",
        "benchmarks",
        "-p",
        "no:cacheprovider",
        "--sb-grid",
        "smoke",
        f"--benchmark-json={out}",
        f"--benchmark-storage={tmp_path}",
        env=ONE_CASE,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    benchmarks = {b["name"].split("[")[0]: b for b in json.loads(out.read_text())["benchmarks"]}
    assert set(benchmarks) == {
        "test_forward_step",
        "test_train_step",
        "test_checkpoint",
        "test_convergence",
    }
    assert {b["extra_info"]["case_id"] for b in benchmarks.values()} == {CASE_ID}
    train = benchmarks["test_train_step"]
    assert train["stats"]["rounds"] >= suites.MIN_ROUNDS
    info = train["extra_info"]
    assert info["train_step_s"]["unit"] == "s"
    assert info["train_samples_per_s"]["unit"] == "samples/s"
    assert 0 < info["train_mfu"]["value"] <= 1
    assert info["train_peak_cpu_rss_above_baseline_bytes"]["unit"] == "bytes"
    assert not any("samples" in m for m in info.values() if isinstance(m, dict))
    checkpoint = benchmarks["test_checkpoint"]["extra_info"]["checkpoint_bytes"]
    assert checkpoint["unit"] == "bytes" and checkpoint["value"] > 4 * info["params"]
    convergence = benchmarks["test_convergence"]["extra_info"]
    assert convergence["final_loss_mean"]["unit"] == "nats"
    assert "heldout_loss" in convergence


def _snapshot(dest: Path) -> Path:
    """A git repository holding this checkout's files as a clean clone would: tracked and
    untracked-but-not-ignored (so work not yet committed is what gets tested)."""
    listed = _run("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    if listed.returncode:
        pytest.skip("not a git checkout")
    for name in filter(None, listed.stdout.split("\0")):
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    for command in (
        ["git", "init", "-q", "-b", "main"],
        ["git", "add", "-A"],
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-qm", "x"],
    ):
        subprocess.run(command, cwd=dest, check=True)
    return dest


@pytest.mark.slow
def test_asv_check_and_quick_dry_run_on_one_case(tmp_path) -> None:
    repo = _snapshot(tmp_path / "repo")
    home = tmp_path / "home"  # asv keeps its machine file in ~
    home.mkdir()
    env = {**ONE_CASE, "HOME": str(home)}
    machine = _run(
        sys.executable, "-m", "scaling_bench.frontends.cli", "asv-machine", cwd=repo, env=env
    )
    assert machine.returncode == 0, machine.stderr
    assert (home / ".asv-machine.json").exists()

    check = _run(sys.executable, "-m", "asv", "check", cwd=repo, env=env)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "No problems found" in check.stdout

    run = _run(
        sys.executable,
        "-m",
        "asv",
        "run",
        "--quick",
        "--dry-run",
        "--show-stderr",
        "--machine",
        machine.stdout.strip(),
        "--bench",
        r"Train\.time_train_sample|Checkpoint\.track_checkpoint_bytes\(",
        cwd=repo,
        env=env,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    for name in ("time_train_sample", "track_checkpoint_bytes"):
        line = next(i for i, text in enumerate(run.stdout.splitlines()) if name in text)
        table = run.stdout.splitlines()[line : line + 8]
        assert any(CASE_ID in row and "n/a" not in row and "failed" not in row for row in table)
    assert not list((repo / ".asv" / "results").glob("*/*-*.json"))  # --dry-run saves nothing


def test_asv_configs_use_the_existing_environment_and_a_wheel_only_matrix() -> None:
    from asv.config import Config

    everyday = Config.load(str(ROOT / "asv.conf.json"))
    assert everyday.environment_type == "existing"
    assert everyday.results_dir.startswith(".asv") and everyday.html_dir.startswith(".asv")
    matrix = Config.load(str(ROOT / "asv-matrix.conf.json"))
    assert matrix.environment_type == "virtualenv"
    assert all("pip wheel --no-deps" in command for command in matrix.build_command)
    assert set(matrix.matrix["req"]) >= {"torch", "asv_runner"}
    assert all(len(versions) == 1 for versions in matrix.matrix["req"].values())


def test_nox_lists_the_four_sessions() -> None:
    done = _run("nox", "--list")
    assert done.returncode == 0, done.stderr
    listed = {line.split()[1] for line in done.stdout.splitlines() if line[:2] in ("* ", "- ")}
    assert listed == {"tests", "lint", "bench", "asv"}
