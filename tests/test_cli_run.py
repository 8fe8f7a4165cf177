"""`scaling-bench run`: a real grid end to end, and one-line errors that lose nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scaling_bench.frontends.cli import main
from scaling_bench.store.records import RESULTS_FILE, load_records

TINY = ["--families", "mlp,gpt", "--sizes", "1e4", "--budget", "0.3", "--no-progress"]
TINY += ["--workloads", "forward,train,checkpoint,convergence", "--steps", "12", "--seeds", "2"]
TINY += ["--convergence", "eval_every=4", "train_size=64", "heldout_size=32"]
#: The data checks are convergence's, which no default grid runs: the cases that test them name it.
CONVERGE = ["--workloads", "convergence"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run")
    assert main(["run", *TINY, "--set", "gpt.seq_len=16", "--out", str(out), "--report"]) == 0
    return out


def test_every_case_is_recorded_ok_with_measurements_beside_predictions(tiny_run: Path) -> None:
    records = load_records(tiny_run / RESULTS_FILE)
    assert [r["case_id"] for r in records] == ["mlp-1e4-fp32-cpu", "gpt-1e4-fp32-cpu-seq_len=16"]
    for r in records:
        assert r["status"] == "ok", r["error"]
        m = r["metrics"]
        for name in (
            "forward_step_s", "forward_samples_per_s", "forward_mfu", "forward_cold_start_s",
            "train_step_s", "train_samples_per_s", "train_flops_per_s", "train_mfu",
            "train_peak_cpu_tensor_bytes", "train_peak_cpu_rss_bytes",
            "train_peak_cpu_rss_above_baseline_bytes",
            "checkpoint_bytes", "checkpoint_bytes_with_optimizer", "checkpoint_save_s",
        ):  # fmt: skip
            assert name in m, name
        assert 0 < m["train_mfu"]["value"] <= 1
        assert m["train_step_s"]["samples"], "raw samples are kept"
        assert "train_peak_cpu_tensor_bytes" in r["predicted"]  # the exact meter, not RSS
        ratio = m["checkpoint_bytes"]["value"] / r["predicted"]["checkpoint_bytes"]["value"]
        assert abs(ratio - 1) < 0.01
        assert "peak_gpu_nvml_bytes" not in json.dumps(m), "no driver: absent, not zero"
        assert r["env"]["cpu_logical_cores"] >= 1
    assert "train_tokens_per_s" in records[1]["metrics"]


def test_convergence_figures_join_the_same_record(tiny_run: Path) -> None:
    for r in load_records(tiny_run / RESULTS_FILE):
        m = r["metrics"]
        assert len(m["final_loss_mean"]["samples"]) == 2, "one final loss per seed"
        assert m["final_loss_mean"]["value"] < m["initial_loss"]["value"]
        assert {"heldout_loss", "generalization_gap", "loss_spikes", "lr_sensitivity"} <= set(m)
        assert r["case"]["convergence"]["steps"] == 12


def test_a_learning_rate_that_blows_up_is_recorded_as_diverged(tmp_path: Path) -> None:
    args = ["run", "--families", "mlp", "--sizes", "1e4", "--workloads", "convergence"]
    args += ["--lrs", "1000", "--steps", "20", "--seeds", "1", "--out", str(tmp_path)]
    assert main([*args, "--no-progress"]) == 0
    (record,) = load_records(tmp_path / RESULTS_FILE)
    assert record["status"] == "diverged"
    assert record["metrics"]["diverged_fraction"]["value"] == 1


def test_report_flag_writes_the_html_report_beside_the_records(tiny_run: Path) -> None:
    html = (tiny_run / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 3
    assert "mlp-1e4-fp32-cpu" in html


def test_a_second_run_into_the_same_folder_needs_resume(
    tiny_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = (tiny_run / RESULTS_FILE).read_bytes()
    args = ["run", *TINY, "--set", "gpt.seq_len=16", "--out", str(tiny_run)]
    assert main(args) == 2
    assert "--resume" in capsys.readouterr().err
    assert main([*args, "--resume"]) == 0
    assert (tiny_run / RESULTS_FILE).read_bytes() == before


def test_summary_table_names_each_case(tiny_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["run", *TINY, "--set", "gpt.seq_len=16", "--out", str(tiny_run), "--resume"])
    out = capsys.readouterr().out
    assert "mlp-1e4-fp32-cpu" in out
    assert "samples/s" in out


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--sizes", "1e5,abc"], "'abc' is not a number"),
        (["--workloads", "serving"], "unknown workload 'serving'"),
        (["--dtype", "fp9"], "unknown precision 'fp9'"),
        (["--device", "tpu"], "unknown device 'tpu'"),
        (["--families", "rnn"], "unknown family 'rnn'"),
        (["--grid", "huge"], "unknown grid 'huge'"),
        (["--grid", "missing.toml"], "does not exist"),
        (["--timeout", "0"], "--timeout '0': input should be greater than 0"),
        (["--timeout", "nan"], "--timeout 'nan': input should be a finite number"),
        (["--timeout", "inf"], "--timeout 'inf': input should be a finite number"),
        (["--timeout", "1e300"], "--timeout '1e300': input should be less than or equal to 604800"),
        (["--budget", "0"], "--budget '0': input should be greater than 0"),
        (["--budget", "-1"], "--budget '-1': input should be greater than 0"),
        (["--budget", "nan"], "--budget 'nan': input should be a finite number"),
        (["--budget", "inf"], "--budget 'inf': input should be a finite number"),
        (["--sizes", ""], "--sizes '': empty item"),
        (["--families", ""], "--families '': no family given"),
        (["--workloads", ""], "--workloads '': no workload given"),
        (["--dtype", ""], "--precision '': no precision given"),
        (["--sizes", "1e4:1e5:x1.0001"], "--sizes '1e4:1e5:x1.0001': 23,028 sizes; at most 1,000"),
        (["--set", "colour=red"], "no family of this grid has"),
        (["--lrs", "0"], "learning rates must be positive"),
        (["--lrs", "1e-3,abc"], "input should be a valid number"),
        (["--lrs", ""], "learning-rate grid is empty"),
        (["--steps", "0"], "steps=0 must be at least 1"),
        (["--dataset", "imagenet"], "unknown dataset 'imagenet'"),
        (["--malloc", "tcmalloc"], "--malloc 'tcmalloc': choose from steady, default"),
        (["--processes", "0"], "--processes 0: give 1 to 100"),
        (["--parallel", "101"], "--parallel 101: give 1 to 100"),
        ([*CONVERGE, "--families", "gpt", "--dataset", "digits"], "does not fit family 'gpt'"),
        ([*CONVERGE, "--dataset", "cifar10"], "needs --data-root"),
        ([*CONVERGE, "--dataset", "cifar10", "--data-root", "."], "CIFAR-10 is not in --data-root"),
        (["--convergence", "schedule=wavy"], "unknown schedule 'wavy'"),
        (["--convergence", "batch_size=3"], "set it with --batch-size"),
        (
            [*CONVERGE, "--dataset", "digits", "--convergence", "train_size=2000"],
            "digits has 1797 images",
        ),
        ([*CONVERGE, "--families", "gpt", "--dataset", "text", "--set", "vocab_size=99"], ">= 256"),
        ([*CONVERGE, "--dataset", "digits", "--set", "n_classes=5"], "has 10 classes"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_runs_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], needle: str
) -> None:
    out = tmp_path / "out"
    assert main(["run", "--families", "mlp", "--sizes", "1e4", *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert needle in err
    assert not (out / RESULTS_FILE).exists()


def test_cuda_without_a_gpu_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert main(["run", "--device", "cuda", "--out", str(tmp_path)]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err


def test_output_folder_that_cannot_be_written_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["run", "--families", "mlp", "--sizes", "1e4", "--out", str(blocker / "x")]) == 2
    assert capsys.readouterr().err.count("\n") == 1


@pytest.mark.parametrize(
    "content",
    ['{"schema_version": 1, "case_id": "x", "sta', '{"schema_version": 99, "case_id": "x"}\n'],
)
def test_corrupt_results_file_is_refused_and_left_as_it_was(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str
) -> None:
    (tmp_path / RESULTS_FILE).write_text(content)
    args = ["run", "--families", "mlp", "--sizes", "1e4", "--out", str(tmp_path), "--resume"]
    assert main(args) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert (tmp_path / RESULTS_FILE).read_text() == content


def test_a_case_predicted_not_to_fit_is_skipped_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from scaling_bench.engine import campaign

    monkeypatch.setattr(campaign, "free_memory_bytes", lambda device: 10_000_000)
    assert main(["run", "--families", "mlp", "--sizes", "1e7", "--out", str(tmp_path)]) == 0
    (record,) = load_records(tmp_path / RESULTS_FILE)
    assert record["status"] == "skipped"
    assert "predicted to need" in record["error"]


def test_env_prints_the_fingerprint_records_carry(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["env"]) == 0
    env = json.loads(capsys.readouterr().out)
    assert {"cpu_model", "cpu_logical_cores", "ram_bytes", "torch_version", "hostname"} <= set(env)


def test_a_strategy_leaves_the_presets_one_process_workloads_out_as_the_workloads_say() -> None:
    """The flags ask each workload's own rule (``strategy_reason``), the one a case's skip
    reason gives: what it leaves out is exactly what would be skipped."""
    from scaling_bench.frontends import cli
    from scaling_bench.workloads.base import ordered

    def workloads(*flags: str) -> tuple[str, ...]:
        args = cli.build_parser().parse_args(["run", "--device", "cpu", *flags])
        return cli._spec_from_args(args).value("workloads")

    every, kept = workloads(), workloads("--strategy", "ddp", "--nproc-per-node", "2")
    left_out = [n for n in every if n not in kept]
    assert left_out == [w.name for w in ordered(every) if w.strategy_reason("ddp")]
    assert left_out and kept and set(kept) < set(every)
