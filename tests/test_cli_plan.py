"""`scaling-bench plan`: the JSON contract, the table, and one-line errors for bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from scaling_bench.frontends.cli import main
from scaling_bench.models import FAMILY_NAMES


def run_plan(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["plan", *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_plan_json_has_the_contract_keys(capsys: pytest.CaptureFixture[str], name: str) -> None:
    code, out, _ = run_plan(capsys, "--family", name, "--params", "1e6", "--json")
    assert code == 0
    d = json.loads(out)
    assert d["family"] == name
    assert d["target_params"] == 1e6
    assert abs(d["params"] / 1e6 - 1) <= 0.02
    assert set(d["flops_per_sample"]) == {"forward", "train"}
    memory = d["predicted"]["train_memory_bytes"]
    parts = ("weights", "gradients", "optimizer_state", "activations", "weight_copies", "buffers",
             "batch", "temporaries", "kernel_scratch")  # fmt: skip
    assert memory["total_bytes"] == sum(memory[f"{k}_bytes"] for k in parts)
    assert memory["total_bytes"] == max(memory["phases"].values())
    assert memory["phases"][memory["peak_phase"]] == memory["total_bytes"]
    assert d["predicted"]["checkpoint_bytes"] >= 4 * d["params"]
    assert isinstance(d["config"], dict)


def test_adamw_fp32_is_16_bytes_per_parameter_before_activations(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """At an optimizer-step peak (a small batch) every gradient is live beside the state."""
    _, out, _ = run_plan(capsys, "--family", "mlp", "--params", "1e6", "--batch-size", "1",
                         "--json")  # fmt: skip
    d = json.loads(out)
    memory = d["predicted"]["train_memory_bytes"]
    assert memory["peak_phase"] == "optimizer"
    state = memory["weights_bytes"] + memory["gradients_bytes"] + memory["optimizer_state_bytes"]
    assert state == pytest.approx(16 * d["params"], abs=100)


@pytest.mark.parametrize(
    ("optimizer", "dtype", "bytes_per_param"),
    [("sgd", "fp32", 8), ("sgd-momentum", "fp32", 12), ("adam", "bf16", 8)],
)
def test_state_bytes_follow_optimizer_and_dtype(
    capsys: pytest.CaptureFixture[str], optimizer: str, dtype: str, bytes_per_param: int
) -> None:
    args = ("--family", "mlp", "--params", "1e5", "--optimizer", optimizer, "--dtype", dtype)
    _, out, _ = run_plan(capsys, *args, "--json")
    d = json.loads(out)
    memory = d["predicted"]["train_memory_bytes"]
    state = memory["weights_bytes"] + memory["optimizer_state_bytes"]
    itemsize = 4 if dtype == "fp32" else 2
    # gradients: those live at the peak; Adam's scalar step counters: 4 bytes a tensor
    assert state == pytest.approx((bytes_per_param - itemsize) * d["params"], abs=100)
    assert 0 <= memory["gradients_bytes"] <= itemsize * d["params"]


@pytest.mark.parametrize(
    ("optimizer", "dtype", "bytes_per_param"),
    [("adamw", "fp32", 16), ("sgd", "fp32", 8), ("sgd-momentum", "fp32", 12),
     ("adam", "bf16", 8), ("adamw", "amp-bf16", 16)],
)  # fmt: skip
def test_the_full_training_state_is_bytes_per_parameter_exactly(
    capsys: pytest.CaptureFixture[str], optimizer: str, dtype: str, bytes_per_param: int
) -> None:
    """What is held between steps, whatever the peak: the FSDP share and the counted bytes of a
    rank are held against it."""
    args = ("--family", "mlp", "--params", "1e5", "--optimizer", optimizer, "--precision", dtype)
    _, out, _ = run_plan(capsys, *args, "--json")
    d = json.loads(out)
    assert d["predicted"]["train_state_bytes"]["total_bytes"] == bytes_per_param * d["params"]


def test_gpt_plan_reports_flops_per_token_and_honours_set(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run_plan(
        capsys, "--family", "gpt", "--params", "1e8", "--seq-len", "512",
        "--set", "vocab_size=50257", "bias=false", "--json",
    )  # fmt: skip
    assert code == 0
    d = json.loads(out)
    assert d["config"]["vocab_size"] == 50257
    assert d["config"]["seq_len"] == 512
    assert d["config"]["bias"] is False
    assert d["tokens_per_sample"] == 512
    assert d["flops_per_token"]["train"] == d["flops_per_sample"]["train"] / 512


def test_plan_of_ten_billion_parameters_does_not_allocate(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # 1e10 fp32 parameters would be 40 GB: more than this machine has, so success proves it.
    code, out, _ = run_plan(capsys, "--family", "gpt", "--params", "1e10", "--json")
    assert code == 0
    assert json.loads(out)["predicted"]["train_memory_bytes"]["weights_bytes"] > 3.9e10


def test_human_output_is_a_table(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_plan(capsys, "--family", "vit", "--params", "125M")
    assert code == 0
    assert "parameters (exact)" in out
    assert "checkpoint" in out


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--family", "transformer", "--params", "1e6"), "unknown family 'transformer'"),
        (("--family", "mlp", "--params", "abc"), "'abc' is not a number"),
        (("--family", "mlp", "--params", "-5"), "not a positive"),
        (("--family", "mlp", "--params", "0"), "not a positive"),
        (("--family", "mlp", "--params", "1e6", "--set", "depth=3"), "depth: unknown field"),
        (("--family", "mlp", "--params", "1e6", "--set", "n_layer=x"), "n_layer = 'x'"),
        (("--family", "mlp", "--params", "1e6", "--set", "n_layer=0"), "n_layer=0"),
        (("--family", "mlp", "--params", "1e6", "--dtype", "fp9"), "unknown precision 'fp9'"),
        (("--family", "mlp", "--params", "1e6", "--optimizer", "lion"), "unknown optimizer"),
        (("--family", "gpt", "--params", "1e4", "--set", "vocab_size=50257"), "below"),
        (("--family", "mlp",), "required"),
    ],
)  # fmt: skip
def test_bad_input_exits_2_with_one_line(
    capsys: pytest.CaptureFixture[str], args: tuple[str, ...], needle: str
) -> None:
    code, out, err = run_plan(capsys, *args)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert needle in err


def test_console_script_reports_user_errors_without_traceback() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "scaling_bench.frontends.cli",
            "plan",
            "--family",
            "nope",
            "--params",
            "1e6",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip() == (
        f"scaling-bench: error: unknown family 'nope'; choose from {', '.join(FAMILY_NAMES)}"
    )


def test_a_sparse_familys_table_shows_its_active_parameters_and_6n_of_them(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """moe's compute follows its active parameters: the table names them, and its 6N is theirs
    (6 × total overstated a 1e9 moe's FLOPs per token 3.5×)."""
    code, out, _ = run_plan(capsys, "--family", "moe", "--params", "1e6", "--json")
    d = json.loads(out)
    code, table, _ = run_plan(capsys, "--family", "moe", "--params", "1e6")
    assert code == 0
    assert d["active_params"] < d["params"]
    assert f"{d['active_params']:,}" in table
    six_n = next(line for line in table.splitlines() if "6N" in line)
    assert "N active" in six_n
    code, dense, _ = run_plan(capsys, "--family", "llama", "--params", "1e6")
    assert "active parameters" not in dense
