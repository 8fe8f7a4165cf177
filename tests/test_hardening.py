"""`scaling-bench run` stopped or misused: a signal, Ctrl-C at any point, settings that cannot be
met. Each ends with one line and its exit code, never a traceback, and loses no record."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from test_runner import running, wait_until

from scaling_bench.config import grid
from scaling_bench.core.errors import ConfigError, UserError
from scaling_bench.engine import campaign
from scaling_bench.frontends import cli
from scaling_bench.frontends.cli import main
from scaling_bench.models import family
from scaling_bench.store.records import RESULTS_FILE, append_record, load_records, make_record

TINY = ["run", "--families", "mlp", "--sizes", "1e4", "--no-progress"]
NOTHING_RAN = "scaling-bench: interrupted before any case ran; nothing was recorded\n"


@pytest.fixture(autouse=True)
def _no_gemm_measurement(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCALING_BENCH_PEAK_FLOPS", "2e11")


# A plugin workload that hangs the grid's second case (2e4) the first time it runs, leaving its
# worker's pid in MARKER, and measures nothing otherwise: the grid a scheduler stops mid-case.
HANG_PLUGIN = """
import os
import time
from pathlib import Path

from scaling_bench.workloads.base import Workload, register

MARKER = Path({marker!r})


class HangOnce(Workload):
    name = "hang_once"
    order = 1000
    default = False

    def measure(self, setup, ctx):
        if setup.case.target_params == 2e4 and not MARKER.exists():
            MARKER.write_text(str(os.getpid()))
            while True:
                time.sleep(0.05)
        return {{}}


register(HangOnce())
"""


def test_sigterm_mid_run_stops_like_ctrl_c_with_143_and_resume_finishes(tmp_path: Path) -> None:
    """SIGTERM (kill, timeout, systemd, batch schedulers) while the second of three cases hangs:
    exit 143 and the Ctrl-C line, the first record intact, the worker and its scratch folder
    gone; the same command with --resume then runs the other two."""
    plugins, tmpdir, out = tmp_path / "plugins", tmp_path / "tmp", tmp_path / "out"
    plugins.mkdir()
    tmpdir.mkdir()
    marker = tmp_path / "worker.pid"
    (plugins / "hang_plugin.py").write_text(HANG_PLUGIN.format(marker=str(marker)))
    env = os.environ | {
        "PYTHONPATH": os.pathsep.join([str(plugins), *sys.path]),
        "TMPDIR": str(tmpdir),
        "SCALING_BENCH_PEAK_FLOPS": "2e11",
    }
    command = [sys.executable, "-m", "scaling_bench.frontends.cli", "run", "--families", "mlp"]
    command += ["--sizes", "1e4,2e4,3e4", "--workloads", "hang_once", "--plugin", "hang_plugin"]
    command += ["--timeout", "300", "--no-progress", "--out", str(out)]
    run = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(
            lambda: marker.exists() and marker.read_text() != "", "the second case to hang", 120
        )
        assert [r["case_id"] for r in load_records(out / RESULTS_FILE)] == ["mlp-1e4-fp32-cpu"]
        run.send_signal(signal.SIGTERM)
        _, stderr = run.communicate(timeout=60)
    finally:
        run.kill()
    assert run.returncode == 143, stderr
    assert "Traceback" not in stderr
    assert stderr.splitlines()[-1] == (
        f"scaling-bench: interrupted: 1 of 3 cases recorded in {out / RESULTS_FILE}; "
        "run the same command with --resume to run the rest"
    )
    (first,) = load_records(out / RESULTS_FILE)
    assert (first["case_id"], first["status"]) == ("mlp-1e4-fp32-cpu", "ok")
    assert (out / RESULTS_FILE).read_bytes().endswith(b"}\n"), "no half record after it"
    wait_until(lambda: not running(int(marker.read_text())), "the hanging worker to die", 30)
    assert list(tmpdir.glob("scaling-bench-*")) == [], "the case's scratch folder is removed"

    resumed = subprocess.run([*command, "--resume"], env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    records = load_records(out / RESULTS_FILE)
    assert [(r["case_id"], r["status"]) for r in records] == [
        ("mlp-1e4-fp32-cpu", "ok"),
        ("mlp-2e4-fp32-cpu", "ok"),
        ("mlp-3e4-fp32-cpu", "ok"),
    ]


def _interrupt(*args: object, **kwargs: object) -> None:
    raise KeyboardInterrupt


def test_ctrl_c_while_planning_exits_130_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(campaign, "plan_for", _interrupt)
    assert main([*TINY, "--out", str(tmp_path / "out")]) == 130
    assert capsys.readouterr().err == NOTHING_RAN
    assert not (tmp_path / "out" / RESULTS_FILE).exists()


class _Fallback(Exception):
    """What the test's own SIGTERM handler raises: SIGTERM must never end the test process."""


def _fallback(signum: int, frame: object) -> None:
    raise _Fallback


def test_sigterm_while_planning_exits_143_and_restores_the_handler(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def terminated(*args: object) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)  # the handler raises before this ends
        pytest.fail("SIGTERM was not turned into an interrupt")

    monkeypatch.setattr(campaign, "plan_for", terminated)
    previous = signal.signal(signal.SIGTERM, _fallback)
    try:
        assert main([*TINY, "--out", str(tmp_path / "out")]) == 143
        assert signal.getsignal(signal.SIGTERM) is _fallback, "main puts the handler back"
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert capsys.readouterr().err == NOTHING_RAN
    assert not (tmp_path / "out" / RESULTS_FILE).exists()


def test_ctrl_c_mid_run_exits_130_with_the_runners_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from scaling_bench.engine.runner import RunInterrupted

    out = tmp_path / "out"

    def interrupted(self: campaign.Campaign, progress: bool) -> None:
        raise RunInterrupted(1, 3, out / RESULTS_FILE)

    monkeypatch.setattr(campaign.Campaign, "run", interrupted)
    assert main([*TINY, "--out", str(out)]) == 130
    assert capsys.readouterr().err == (
        f"scaling-bench: interrupted: 1 of 3 cases recorded in {out / RESULTS_FILE}; "
        "run the same command with --resume to run the rest\n"
    )


def test_ctrl_c_after_the_last_case_says_every_case_is_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import scaling_bench.report.summary

    monkeypatch.setattr(campaign.Campaign, "run", lambda self, progress: [{}, {}])
    monkeypatch.setattr(scaling_bench.report.summary, "summarize_run", _interrupt)
    out = tmp_path / "out"
    assert main([*TINY, "--out", str(out)]) == 130
    assert capsys.readouterr().err == (
        f"scaling-bench: interrupted after the run: its 2 cases are recorded in "
        f"{out / RESULTS_FILE}; scaling-bench report {out} shows them\n"
    )


def test_ctrl_c_in_another_command_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import scaling_bench.hardware.peaks

    monkeypatch.setattr(scaling_bench.hardware.peaks, "fingerprint", _interrupt)
    assert main(["env"]) == 130
    assert capsys.readouterr().err == "scaling-bench: interrupted\n"


def test_terminated_is_an_interrupt_so_the_runner_stops_as_on_ctrl_c() -> None:
    assert issubclass(cli.Terminated, KeyboardInterrupt)


# --- convergence data that would not fit in memory --------------------------------------------


def test_a_convergence_data_set_too_big_for_the_host_is_refused_before_it_is_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import scaling_bench.models.datasets

    def built(*args: object, **kwargs: object) -> None:
        pytest.fail("the data set was built")

    monkeypatch.setattr(scaling_bench.models.datasets, "load_dataset", built)
    monkeypatch.setattr(campaign, "free_memory_bytes", lambda device: 16 * 2**30)
    out = tmp_path / "out"
    args = [*TINY, "--workloads", "convergence", "--convergence", "train_size=100000000"]
    assert main([*args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("scaling-bench: error: convergence train_size=100000000, heldout_size=")
    assert "mlp-1e4-fp32-cpu would need 292.8" in err  # 1e8 samples of 784 float32 and a label
    assert "more than 80% of the 16.00 GiB of host memory available" in err
    assert not (out / RESULTS_FILE).exists()


@pytest.mark.parametrize(
    ("name", "config", "per_sample"),
    [
        ("mlp", family("mlp").MLPConfig(), 784 * 4 + 8),
        ("cnn", family("cnn").CNNConfig(), 3 * 32 * 32 * 4 + 8),
        ("gpt", family("gpt").GPTConfig(n_layer=1, d_model=8, n_head=1, seq_len=16), 17 * 8),
    ],
)
def test_data_set_bytes_are_inputs_and_targets(name: str, config: object, per_sample: int) -> None:
    assert campaign.dataset_bytes(name, config, 10) == 10 * per_sample


def test_a_data_set_of_more_than_a_billion_samples_is_a_typo(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [*TINY, "--workloads", "convergence", "--convergence", "heldout_size=2000000000"]
    assert main([*args, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "convergence heldout_size=2000000000 is more than 1,000,000,000 samples" in err


# --- config overrides name the field the user set ---------------------------------------------


@pytest.mark.parametrize(
    ("families", "pair", "needle"),
    [
        ("gpt", "gpt.n_head=0", "n_head=0 must be at least 1"),
        ("gpt", "n_head=-2", "n_head=-2 must be at least 1"),
        ("gpt", "gpt.d_model=96", "d_model=96 is not divisible by n_head=5"),
        ("vit", "vit.n_head=0", "n_head=0 must be at least 1"),
        ("vit", "vit.image_size=30", "image_size=30 is not a positive multiple of patch_size=4"),
        ("mlp", "mlp.n_layer=0", "n_layer=0 must be at least 1"),
        ("cnn", "cnn.width_mult=0", "width_mult=0.0 must be a positive number"),
        ("resnet", "resnet.layers=0,2,2,2", "layers=(0, 2, 2, 2) must be four integers"),
        ("resnet", "resnet.layers=1,1,1", "--set: layers = ['1', '1', '1']: item 4 is missing"),
    ],
)
def test_a_bad_override_is_named_as_the_user_set_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], families: str, pair: str, needle: str
) -> None:
    extra = ["--set", "gpt.n_head=5"] if "d_model" in pair else []
    args = ["run", "--families", families, "--sizes", "1e5", "--set", pair, *extra]
    assert main([*args, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert needle in err
    assert not (tmp_path / "out" / RESULTS_FILE).exists()


@pytest.mark.parametrize("name", ["gpt", "vit"])
def test_sizing_checks_the_pinned_fields_before_deriving_the_others(name: str) -> None:
    with pytest.raises(ConfigError, match=r"^n_head=0 must be at least 1$"):
        family(name).config_for(1e6, n_head=0)
    cfg = family(name).config_for(1e6, n_head=3)  # a pinned head count the width follows
    assert cfg.n_head == 3 and cfg.d_model % 3 == 0


# --- bad grid files and grids too big: refused before anything is planned ---------------------


@pytest.fixture
def nothing_planned(monkeypatch: pytest.MonkeyPatch) -> None:
    def planned(*args: object, **kwargs: object) -> None:
        pytest.fail("a case was planned")

    monkeypatch.setattr(campaign, "plan_for", planned)
    monkeypatch.setattr(grid, "build_cases", planned)


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("timeout_s = inf", "timeout_s inf: input should be a finite number"),
        ("batch_size = true", "batch_size True: input should be a valid integer"),
        ("nproc_per_node = 1.9", "nproc_per_node 1.9: input should be a valid integer"),
        ('budget_s = "0.2"', "budget_s '0.2': input should be a valid number"),
        (None, "x.toml is a folder, not a file"),
    ],
)
@pytest.mark.usefixtures("nothing_planned")
def test_a_bad_grid_file_exits_2_with_one_line_naming_the_key_and_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, needle: str
) -> None:
    path = tmp_path / "x.toml"
    if content is None:
        path.mkdir()
    else:
        path.write_text(f'sizes = "1e4"\nfamilies = "mlp"\n{content}\n')
    out = tmp_path / "out"
    assert main(["run", "--grid", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert needle in err
    assert not (out / RESULTS_FILE).exists()


BIG_GRID = ["--families", "mlp,gpt", "--sizes", "1e4:1e7:1000", "--dtype", "fp32,bf16,fp16"]


@pytest.mark.usefixtures("nothing_planned")
def test_a_grid_of_6000_cases_is_refused_before_any_is_made(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main(["run", *BIG_GRID, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == (
        "scaling-bench: error: the grid has 6,000 cases, more than --max-cases 1,000; "
        "narrow --sizes or the other axes, or raise --max-cases\n"
    )
    assert not out.exists()


def test_max_cases_lets_a_big_grid_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def built(spec: grid.GridSpec, device: str) -> None:
        raise UserError(f"would build {grid.count_cases(spec)} cases")

    monkeypatch.setattr(grid, "build_cases", built)
    args = ["run", *BIG_GRID, "--max-cases", "6000", "--out", str(tmp_path / "out")]
    assert main(args) == 2
    lines = capsys.readouterr().err.splitlines()  # after any warning that a dtype is slow here
    assert lines[-1] == "scaling-bench: error: would build 6000 cases"


# --- --resume with other workloads -------------------------------------------------------------


def test_resume_with_other_workloads_is_refused_naming_the_case_and_both_lists(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--resume never reruns a recorded case, so a case recorded with workloads (checkpoint,)
    would silently lack forward: refused, saying what to do instead."""
    given = {"family": "mlp", "target_params": "1e4", "workloads": "checkpoint"}
    spec = grid.select("quick", given, resolve=lambda name: "cpu")
    (case,) = grid.build_cases(spec, "cpu")
    assert case.case_id == "mlp-1e4-fp32-cpu" and case.workloads == ("checkpoint",)
    results = tmp_path / RESULTS_FILE
    record = make_record(
        case.case_id, case.to_dict(), "ok", env={}, started_at=datetime.now(UTC), duration_s=0.0
    )
    append_record(results, record)
    before = results.read_bytes()
    args = [*TINY, "--workloads", "checkpoint,forward", "--resume", "--out", str(tmp_path)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "mlp-1e4-fp32-cpu" in err
    assert "workloads checkpoint," in err and "checkpoint,forward" in err
    assert "--out" in err and "--workloads checkpoint" in err
    assert results.read_bytes() == before


@pytest.mark.parametrize(
    "command",
    [
        TINY,
        [
            "frontier",
            "--flops",
            "1.2e8",
            "--budgets",
            "2",
            "--ratio",
            "2",
            "--sizes-per-budget",
            "3",
            "--tokens-per-param",
            "0.5",
            "--seq-len",
            "16",
            "--batch-size",
            "4",
            "--no-progress",
        ],
        ["ab", "--base", ".", "--current", ".", "--", "--families", "mlp", "--sizes", "1e4"],
    ],
    ids=["run", "frontier", "ab"],
)
def test_an_out_that_cannot_be_made_exits_2_with_one_line_naming_it(
    command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``campaign.prepare`` checks ``--out`` for every command that runs cases (the runner no
    longer does); the A/B checks its own folder before its rounds run."""
    (tmp_path / "file").write_text("")
    out = tmp_path / "file" / "out"
    assert main([*command, "--out", str(out)] if command[0] != "ab" else
                [command[0], "--out", str(out), *command[1:]]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"{out}: cannot create or write here" in err
