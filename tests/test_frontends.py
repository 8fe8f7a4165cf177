"""The benchmark front-ends: pytest-benchmark, asv and nox, run as users run them."""

from __future__ import annotations

import importlib
import json
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest
import torch
from asv_runner.benchmarks.mark import SkipNotImplemented

from scaling_bench.config import grid
from scaling_bench.config.axes import AXES
from scaling_bench.config.case import Case
from scaling_bench.core.metrics import LOWER, spec
from scaling_bench.frontends import cli, pytest_plugin, suites
from scaling_bench.store.foreign import asv_case_id, load_run
from scaling_bench.workloads.base import get, ordered, with_step

ROOT = Path(__file__).resolve().parent.parent
#: The subprocesses' case settings: none but these, whatever the calling shell exports.
NO_CASE_SETTINGS = dict.fromkeys([*suites.ENV.values(), suites.PLUGINS_ENV], "")
ONE_CASE = NO_CASE_SETTINGS | {"SCALING_BENCH_FAMILIES": "mlp", "SCALING_BENCH_SIZES": "1e5"}
CASE_ID = "mlp-1e5-fp32-cpu"
#: The default workloads and convergence (not a default, so named): one of each kind.
FOUR_WORKLOADS = "forward,train,checkpoint,convergence"


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
    assert [c.case_id for c in cases][:6] == [  # the GPU grid compiles gpt too
        f"gpt-1e6-{precision}-cuda{compiled}"
        for precision in ("fp32", "bf16", "amp-bf16")
        for compiled in ("", "-compile-default")
    ]
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
    ids = [line.split("[")[1].rstrip("]") for line in done.stdout.splitlines() if "::" in line]
    cases = [test_id.rsplit("-", 1)[0] for test_id in ids]
    smoke = suites.bench_cases({"grid": "smoke"}, environ={})
    assert list(dict.fromkeys(cases)) == [c.case_id for c in smoke]
    assert cases == sorted(cases, key=cases.index)  # each case's tests in a row
    registry = [w.name for w in ordered()]
    for case in smoke:  # a test per workload of the registry, in the order a worker runs them
        assert [i.rsplit("-", 1)[1] for i in ids if i.startswith(f"{case.case_id}-")] == registry


def test_pytest_skips_gpu_cases_with_the_reason_where_there_is_no_gpu(monkeypatch) -> None:
    _no_bench_env(monkeypatch)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    options = {"sb_device": "cuda", "sb_families": "mlp", "benchmark_disable": True}
    config = SimpleNamespace(
        stash=pytest.Stash(), getoption=lambda name, default=None: options.get(name, default)
    )
    params = pytest_plugin._cases(config)
    ids = ["mlp-1e6-fp32-cuda", "mlp-1e6-bf16-cuda", "mlp-1e6-amp-bf16-cuda"]
    assert [p.id for p in params] == ids
    reasons = [mark.kwargs["reason"] for p in params for mark in p.marks if mark.name == "skip"]
    assert reasons == ["cuda:0 asked for, but no CUDA GPU is usable on this machine"] * len(ids)


def test_a_recipe_the_family_cannot_take_is_skipped_with_its_reason_not_an_error(
    monkeypatch,
) -> None:
    """Activation checkpointing on mlp (no repeated blocks): ``scaling-bench run`` records the
    case skipped; pytest's and asv's collection skip it with the same reason instead of failing
    when the case is built."""
    from scaling_bench.workloads.setup import skip_reason as unsupported

    _no_bench_env(monkeypatch)
    options = {"sb_device": "cpu", "sb_families": "mlp,gpt", "sb_sizes": "1e5",
               "sb_activation_checkpointing": "full", "benchmark_disable": True}  # fmt: skip
    config = SimpleNamespace(
        stash=pytest.Stash(), getoption=lambda name, default=None: options.get(name, default)
    )
    params = {p.id: [m.kwargs["reason"] for m in p.marks if m.name == "skip"]
              for p in pytest_plugin._cases(config)}  # fmt: skip
    mlp = Case("mlp", 1e5, activation_checkpointing="full")
    reason = unsupported(mlp)
    assert reason is not None and "no repeated blocks" in reason
    assert params == {
        "mlp-1e5-fp32-cpu-ac-full": [reason],
        "gpt-1e5-fp32-cpu-ac-full-seq_len=128": [],
    }

    asv = _asv_grid(monkeypatch, device="cpu", families="mlp", sizes="1e5",
                    activation_checkpointing="full")  # fmt: skip
    with pytest.raises(SkipNotImplemented, match="no repeated blocks"):
        asv.case_for(next(iter(asv.cases)), get("train"))
    assert asv.runnable() == []


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
        env=ONE_CASE | {"SCALING_BENCH_WORKLOADS": FOUR_WORKLOADS},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    benchmarks = {b["extra_info"]["workload"]: b for b in json.loads(out.read_text())["benchmarks"]}
    assert {w: b["name"] for w, b in benchmarks.items()} == {
        "forward": f"test_step[{CASE_ID}-forward]",
        "train": f"test_step[{CASE_ID}-train]",
        "checkpoint": f"test_workload[{CASE_ID}-checkpoint]",
        "convergence": f"test_workload[{CASE_ID}-convergence]",
    }
    assert {w: b["extra_info"]["metric"] for w, b in benchmarks.items()} == {
        "forward": "forward_step_s",
        "train": "train_step_s",
        "checkpoint": "checkpoint_s",
        "convergence": "convergence_s",
    }
    assert {b["extra_info"]["case_id"] for b in benchmarks.values()} == {CASE_ID}
    train = benchmarks["train"]
    assert train["stats"]["rounds"] >= suites.MIN_ROUNDS
    info = train["extra_info"]
    assert info["train_step_s"]["unit"] == "s"
    assert info["train_samples_per_s"]["unit"] == "samples/s"
    assert 0 < info["train_mfu"]["value"] <= 1
    assert info["train_peak_cpu_tensor_bytes"]["unit"] == "bytes"  # what the prediction meets
    assert info["train_peak_cpu_rss_above_baseline_bytes"]["unit"] == "bytes"
    assert not any("samples" in m for m in info.values() if isinstance(m, dict))
    checkpoint = benchmarks["checkpoint"]["extra_info"]["checkpoint_bytes"]
    assert checkpoint["unit"] == "bytes" and checkpoint["value"] > 4 * info["params"]
    convergence = benchmarks["convergence"]["extra_info"]
    assert convergence["final_loss_mean"]["unit"] == "nats"
    assert "heldout_loss" in convergence
    # compare files each benchmark's time under the metric its extra_info names
    metrics = load_run(out).cases[CASE_ID].metrics
    timed = {"forward_step_s", "train_step_s", "checkpoint_s", "convergence_s"}
    assert timed <= set(metrics) and all(metrics[m]["unit"] == "s" for m in timed)
    assert metrics["train_step_s"]["n"] == train["stats"]["rounds"]  # pytest-benchmark's own


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
    env = {**ONE_CASE, "HOME": str(home), "SCALING_BENCH_WORKLOADS": "train,checkpoint"}
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
        r"TrainStep\.time_train_sample|Checkpoint\.track_checkpoint_bytes\(|Train\.track_train_step_s",
        cwd=repo,
        env=env,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    for name in ("time_train_sample", "track_checkpoint_bytes", "track_train_step_s"):
        line = next(i for i, text in enumerate(lines) if name in text)
        table = lines[line : line + 12]
        # one column per axis; the one case of the grid measured, not skipped or failed
        assert any("family" in row and "target_params" in row for row in table), table
        row = next(row for row in table if "mlp" in row.split() and "1e5" in row.split())
        assert "n/a" not in row and "failed" not in row, table
    assert sum("Setting up" in text for text in lines) == 1  # one setup_cache for two classes
    assert not list((repo / ".asv" / "results").glob("*/*-*.json"))  # --dry-run saves nothing


def _asv_grid(monkeypatch: pytest.MonkeyPatch, **settings: str) -> suites.AsvGrid:
    _no_bench_env(monkeypatch)
    return suites.AsvGrid(suites.bench_cases(settings))


def test_asv_takes_one_parameter_per_axis_and_each_combination_names_its_case(
    monkeypatch,
) -> None:
    grid = _asv_grid(monkeypatch, families="mlp,gpt", batch_size="64,8", optimizer="sgd,adamw")
    multi = [a.name for a in AXES if a.multi]
    assert [n for n in grid.param_names if n != "device"] == multi
    by_name = dict(zip(grid.param_names, grid.params, strict=True))
    assert by_name["family"] == ["mlp", "gpt(seq_len=128)"]  # the quick grid's gpt overrides
    assert by_name["target_params"] == ["1e4", "1e5", "1e6", "1e7"]  # along the size
    assert (by_name["precision"], by_name["device"]) == (["fp32"], ["cpu"])
    assert (by_name["batch_size"], by_name["optimizer"]) == ([64, 8], ["sgd", "adamw"])
    for values, case in grid.cases.items():
        assert asv_case_id(grid.param_names, [repr(v) for v in values]) == case.case_id
        assert grid.case_for(values) == case
    assert len(grid.cases) == 6 * 2 * 2 < math.prod(len(p) for p in grid.params)


def test_asv_skips_what_is_no_case_or_does_not_run_here(monkeypatch) -> None:
    grid = _asv_grid(monkeypatch, families="mlp", sizes="1e5", workloads="train")
    values = next(iter(grid.cases))
    with pytest.raises(SkipNotImplemented, match="not a case of this grid"):
        grid.case_for(("mlp", "1e9", *values[2:]))
    with pytest.raises(SkipNotImplemented, match="forward is not among this grid's workloads"):
        grid.case_for(values, get("forward"))
    assert grid.case_for(values, get("train")).case_id == CASE_ID
    distributed = suites.AsvGrid([Case("mlp", 1e5, nproc_per_node=2, strategy="ddp")])
    with pytest.raises(SkipNotImplemented, match="scaling-bench run"):
        distributed.case_for(next(iter(distributed.cases)))
    assert distributed.runnable() == []


@pytest.fixture
def bench_cases(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """``benchmarks/bench_cases.py`` as asv imports it, on one case."""
    _no_bench_env(monkeypatch)
    monkeypatch.setenv("SCALING_BENCH_FAMILIES", "mlp")
    monkeypatch.setenv("SCALING_BENCH_SIZES", "1e5")
    # convergence too, though it is no default workload: it runs after checkpoint
    monkeypatch.setenv("SCALING_BENCH_WORKLOADS", FOUR_WORKLOADS)
    sys.modules.pop("benchmarks.bench_cases", None)
    yield importlib.import_module("benchmarks.bench_cases")
    sys.modules.pop("benchmarks.bench_cases", None)


def test_asv_suites_come_from_the_registry_and_share_one_setup_cache(bench_cases) -> None:
    from asv_runner.benchmarks._base import get_setup_cache_key

    suites_by_name = {suite.__name__: suite for suite in bench_cases.SUITES}
    for w in with_step():
        suite = suites_by_name[f"{w.name.title()}Step"]
        assert hasattr(suite, f"time_{w.name}_sample")
        assert isinstance(suite.timer, suites.SampleClock)
    tracks = {
        name: getattr(suite, name)
        for suite in bench_cases.SUITES
        for name in dir(suite)
        if name.startswith("track_")
    }
    assert {"track_checkpoint_bytes", "track_train_step_s", "track_final_loss_mean"} <= set(tracks)
    for name, track in tracks.items():
        metric = spec(name.removeprefix("track_"))
        assert metric.better == LOWER and metric.kind in ("measured", "counted"), metric
        assert track.unit == {"s": "seconds"}.get(metric.unit, metric.unit)
    assert "track_train_mfu" not in tracks and "track_train_samples_per_s" not in tracks
    figures = [s for s in bench_cases.SUITES if any(n.startswith("track_") for n in dir(s))]
    keys = {get_setup_cache_key(s().setup_cache) for s in figures}
    assert len(figures) == len(ordered()) and len(keys) == 1  # asv runs it once for them all
    assert bench_cases.Train.setup_cache.timeout == sum(
        c.timeout_s for c in bench_cases.GRID.runnable()
    )


def test_one_measurement_feeds_every_track_and_a_failure_ends_its_case(
    bench_cases, monkeypatch
) -> None:
    calls: list[tuple[str, str]] = []

    def measure(case: Case, workload: str) -> dict[str, dict]:
        calls.append((case.case_id, workload))
        if workload == "checkpoint":
            raise RuntimeError("disk full")
        return {f"{workload}_step_s": {"value": 0.5, "unit": "s"}}

    monkeypatch.setattr(suites, "measure", measure)
    figures = bench_cases.Train().setup_cache()
    assert calls == [(CASE_ID, "forward"), (CASE_ID, "train"), (CASE_ID, "checkpoint")]
    assert figures[CASE_ID]["errors"] == {
        "checkpoint": "RuntimeError: disk full",
        "convergence": "not run: checkpoint failed before it",
    }
    values = next(iter(bench_cases.GRID.cases))
    assert bench_cases.Train().track_train_step_s(figures, *values) == 0.5
    with pytest.raises(SkipNotImplemented, match="train_cold_start_s is not measured here"):
        bench_cases.Train().track_train_cold_start_s(figures, *values)
    with pytest.raises(RuntimeError, match="checkpoint: RuntimeError: disk full"):
        bench_cases.Checkpoint().track_checkpoint_bytes(figures, *values)


def test_a_case_predicted_not_to_fit_is_skipped_not_measured(bench_cases, monkeypatch) -> None:
    monkeypatch.setattr("scaling_bench.hardware.devices.free_memory_bytes", lambda device: 1000)
    monkeypatch.setattr(suites, "measure", lambda case, workload: pytest.fail("measured"))
    figures = bench_cases.Train().setup_cache()
    assert "predicted to need" in figures[CASE_ID]["skipped"]
    with pytest.raises(SkipNotImplemented, match="predicted to need"):
        bench_cases.Train().track_train_step_s(figures, *next(iter(bench_cases.GRID.cases)))


def test_asv_results_of_per_axis_suites_are_read_back_under_case_ids(tmp_path) -> None:
    names = list(suites.ASV_AXES)
    sizes = ["'1e5'", "'1e6'"]
    # every axis at its default, as asv writes values (repr); family and size varied
    params = [[repr(v)] for v in suites.asv_values(Case("mlp", 1e5))]
    params[names.index("family")] = ["'mlp'", "'gpt(seq_len=128)'"]
    params[names.index("target_params")] = sizes
    (tmp_path / "box").mkdir()
    described = {"version": 2} | {
        f"bench_cases.{name}": {"unit": unit, "param_names": names, "params": params}
        for name, unit in (("TrainStep.time_train_sample", "seconds"),
                           ("Checkpoint.track_checkpoint_bytes", "bytes"))
    }  # fmt: skip
    (tmp_path / "benchmarks.json").write_text(json.dumps(described))
    result = tmp_path / "box" / "abc-existing.json"
    result.write_text(
        json.dumps(
            {
                "version": 2,
                "result_columns": ["result", "params"],
                "results": {
                    "bench_cases.TrainStep.time_train_sample": [[1e-5, None, 2e-5, 3e-5], params],
                    "bench_cases.Checkpoint.track_checkpoint_bytes": [[4e5, 4e6, 4e5, 4e6], params],
                },
            }
        )
    )
    cases = load_run(result).cases
    assert set(cases) == {
        "mlp-1e5-fp32-cpu", "mlp-1e6-fp32-cpu",
        "gpt-1e5-fp32-cpu-seq_len=128", "gpt-1e6-fp32-cpu-seq_len=128",
    }  # fmt: skip
    assert cases["mlp-1e5-fp32-cpu"].metrics["train_sample_s"]["value"] == 1e-5
    assert "train_sample_s" not in cases["mlp-1e6-fp32-cpu"].metrics  # skipped there
    assert cases["gpt-1e6-fp32-cpu-seq_len=128"].metrics["checkpoint_bytes"]["unit"] == "bytes"
    assert cases["gpt-1e5-fp32-cpu-seq_len=128"].family == "gpt"


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
