"""DDP and FSDP cases under torchrun: 2 ranks with gloo on this CPU, tiny models.

Each launch costs several seconds (an agent and two ranks import torch), so the end-to-end cases
run once per module and the tests read their records.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import ranks
from test_runner import made, running, wait_until
from torch import nn

from scaling_bench.config.case import Case
from scaling_bench.config.grid import GridSpec
from scaling_bench.core.stats import single, summarize
from scaling_bench.engine.campaign import prepare
from scaling_bench.engine.distributed.aggregate import combine, with_scaling_efficiency
from scaling_bench.engine.distributed.wrap import shard_units
from scaling_bench.engine.protocol import Settings
from scaling_bench.engine.runner import run_cases
from scaling_bench.frontends.cli import main
from scaling_bench.models import family
from scaling_bench.predict.plan import plan_for
from scaling_bench.report.progress import case_progress
from scaling_bench.store.records import RESULTS_FILE, load_records
from scaling_bench.workloads.base import Context, get

# A peak for MFU, so no test waits for the GEMM peak measurement; far above this CPU's.
PEAK_FLOPS = "1e13"
#: DDP on 2 ranks vs one process at the same global batch: float32 sums in another order.
LOSS_RTOL = 1e-5


@pytest.fixture(autouse=True)
def _known_peak(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCALING_BENCH_PEAK_FLOPS", PEAK_FLOPS)


def run_ranks(cases: list[ranks.Case], out: Path, timeout_s: float = 60.0) -> dict[str, dict]:
    records = run_cases(
        cases,
        ranks.EXECUTE,
        made(out),
        timeout_s=timeout_s,
        env={},
        progress=case_progress(bar=False),
    )
    return {r["case_id"]: r for r in records}


def pids_left(marker: Path) -> list[int]:
    return [int(p.read_text()) for p in sorted(marker.glob("rank*.pid"))]


def test_case_ids_name_the_strategy_and_ranks_and_keep_single_process_ids() -> None:
    assert Case("mlp", 1e6).case_id == "mlp-1e6-fp32-cpu"
    assert Case("mlp", 1e6, nproc_per_node=2, strategy="ddp").case_id == "mlp-1e6-fp32-cpu-ddp2"
    four = Case("gpt", 1e9, "bf16", "cuda:0", nproc_per_node=4, nnodes=2, strategy="fsdp")
    assert four.case_id == "gpt-1e9-bf16-cuda-fsdp2x4"
    assert Case.from_dict(four.to_dict()) == four


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--nproc-per-node", "2"], "needs --strategy"),
        (["--strategy", "zero"], "unknown strategy"),
        (["--strategy", "ddp", "--nnodes", "2"], "needs --rdzv-endpoint"),
        (["--strategy", "ddp", "--workloads", "convergence"], "convergence"),
    ],
)
def test_a_launch_that_cannot_work_is_one_line_and_exit_2(
    flags: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["run", "--families", "mlp", "--sizes", "1e4", "--out", str(tmp_path), *flags]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_fsdp_units_are_the_blocks_of_repeated_layers() -> None:
    gpt = family("gpt")
    model = gpt.build(gpt.config_for(1e5))
    assert shard_units(model) == list(model.h)
    mlp = family("mlp")
    layers = shard_units(mlp.build(mlp.config_for(1e5)))
    assert layers and all(isinstance(layer, nn.Linear) for layer in layers)


def test_aggregate_takes_the_slowest_rank_for_throughput_and_the_largest_peak() -> None:
    plan = plan_for(Case("mlp", 1e4, batch_size=8))
    per_rank = [
        {
            "peak_flops_per_s": single(1e12, "FLOP/s"),
            "train_step_s": summarize([0.010, 0.011, 0.012], "s"),
            "train_peak_cpu_rss_above_baseline_bytes": single(300, "bytes"),
        },
        {
            "peak_flops_per_s": single(1e12, "FLOP/s"),
            "train_step_s": summarize([0.019, 0.020, 0.021], "s"),
            "train_peak_cpu_rss_above_baseline_bytes": single(200, "bytes"),
        },
    ]
    m = combine(per_rank)
    ctx = Context(peak_flops=1e12, world_size=2, devices=2, strategy="ddp")
    m |= get("train").derive(m, SimpleNamespace(plan=plan), ctx)
    assert m["train_step_s"]["per_rank"] == pytest.approx([0.011, 0.020])
    assert m["train_samples_per_s"]["value"] == pytest.approx(2 * 8 / 0.020)
    assert m["train_samples_per_s_per_rank"]["value"] == pytest.approx(8 / 0.020)
    flops = 2 * 8 * plan.train_flops_per_sample / 0.020
    assert m["train_mfu"]["value"] == pytest.approx(flops / (2 * 1e12))
    peak = m["train_peak_cpu_rss_above_baseline_bytes"]
    assert (peak["value"], peak["per_rank"]) == (300, [300, 200])


def test_scaling_efficiency_is_global_throughput_over_world_times_the_single_process_record() -> (
    None
):
    case = Case("mlp", 1e4, nproc_per_node=2, strategy="ddp")
    reference = {"case_id": "mlp-1e4-fp32-cpu", "status": "ok"}
    reference["metrics"] = {"train_samples_per_s": single(1000.0, "samples/s")}
    fields = {"metrics": {"train_samples_per_s": single(1500.0, "samples/s")}}
    derived = with_scaling_efficiency([reference])(case, fields)
    efficiency = derived["metrics"]["train_scaling_efficiency"]
    assert efficiency["value"] == pytest.approx(0.75)
    assert efficiency["reference"] == "mlp-1e4-fp32-cpu"
    assert with_scaling_efficiency([])(case, fields) == fields, "no single-process record: none"


def test_ddp_on_two_processes_reaches_the_loss_of_one_process_at_the_same_global_batch(
    tmp_path: Path,
) -> None:
    record = run_ranks([ranks.Case("ddp-losses", "losses")], tmp_path)["ddp-losses"]
    assert record["status"] == "ok", record["error"]
    two = record["metrics"]["losses"]["samples"]
    one = ranks.train_losses(None)
    assert one[-1] < one[0], "the steps train"
    assert two == pytest.approx(one, rel=LOSS_RTOL)


@pytest.fixture(scope="module")
def fsdp_record(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One real FSDP case on 2 ranks, through prepare and the runner, as `scaling-bench run`."""
    spec = GridSpec(
        sizes={"mlp": (1e5,)},
        values={"device": ("cpu",), "budget_s": (0.3,), "timeout_s": (120.0,),
                "nproc_per_node": (2,), "strategy": ("fsdp",)},
    )  # fmt: skip
    out = tmp_path_factory.mktemp("fsdp")
    prepare(spec, out, settings=Settings(peak_flops=float(PEAK_FLOPS))).run(
        progress=case_progress(bar=False)
    )
    (record,) = load_records(out / RESULTS_FILE)
    return record


def test_fsdp_case_is_recorded_with_world_size_backend_and_global_throughput(
    fsdp_record: dict,
) -> None:
    r = fsdp_record
    assert r["status"] == "ok", r["error"]
    assert r["case_id"] == "mlp-1e5-fp32-cpu-fsdp2"
    assert (r["env"]["world_size"], r["env"]["backend"]) == (2, "gloo")
    m = r["metrics"]
    batch = r["case"]["batch_size"] or plan_for(Case.from_dict(r["case"])).batch_size
    slowest = max(m["train_step_s"]["per_rank"])
    assert m["train_step_s"]["value"] == slowest
    assert m["train_samples_per_s"]["value"] == pytest.approx(2 * batch / slowest)
    for name in ("forward_samples_per_s", "train_samples_per_s_per_rank", "train_mfu"):
        assert name in m, name
    peak = m["train_peak_cpu_rss_above_baseline_bytes"]
    assert len(peak["per_rank"]) == 2 and peak["value"] == max(peak["per_rank"])


def test_fsdp_holds_half_the_parameters_and_optimizer_state_per_rank(fsdp_record: dict) -> None:
    """Against the state held between steps (the plan's ``train_state``), not the parts live at
    the step's peak, which also count Adam's step counters (every rank has all of them)."""
    m, predicted = fsdp_record["metrics"], fsdp_record["predicted"]
    state = plan_for(Case("mlp", 1e5)).train_state
    for name in ("weights", "optimizer_state"):
        one_process = getattr(state, f"{name}_bytes")
        held = m[f"train_{name}_bytes_per_rank"]["per_rank"]
        assert sum(held) == one_process, "the shards add up to the whole"
        assert max(held) / one_process == pytest.approx(0.5, abs=0.01)
        assert predicted[f"train_{name}_bytes_per_rank"]["value"] == pytest.approx(
            one_process / 2, abs=1
        )


def test_fsdp_checkpoint_goes_through_dcp_and_back_into_the_model(fsdp_record: dict) -> None:
    m, predicted = fsdp_record["metrics"], fsdp_record["predicted"]
    assert m["dcp_bytes"]["value"] >= predicted["train_weights_bytes"]["value"]
    assert m["dcp_bytes_with_optimizer"]["value"] > m["dcp_bytes"]["value"]
    assert m["dcp_save_s"]["value"] > 0 and m["dcp_load_s"]["value"] > 0


@pytest.fixture(scope="module")
def token_fsdp_records(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """llama and moe at 1e4 under FSDP on 2 ranks, in one run: their rotary tables are buffers no
    state dict holds, which the ranks' meta-device build must fill again."""
    spec = GridSpec(
        sizes={"llama": (1e4,), "moe": (1e4,)},
        values={"device": ("cpu",), "budget_s": (0.1,), "timeout_s": (120.0,), "batch_size": (2,),
                "nproc_per_node": (2,), "strategy": ("fsdp",)},
        overrides={"llama": {"seq_len": 32}, "moe": {"seq_len": 32}},
    )  # fmt: skip
    out = tmp_path_factory.mktemp("token-fsdp")
    prepare(spec, out, settings=Settings(peak_flops=float(PEAK_FLOPS))).run(
        progress=case_progress(bar=False)
    )
    return {r["case"]["family"]: r for r in load_records(out / RESULTS_FILE)}


@pytest.mark.parametrize("name", ["llama", "moe"])
def test_the_token_families_train_and_checkpoint_under_fsdp(token_fsdp_records, name) -> None:
    r = token_fsdp_records[name]
    assert r["status"] == "ok", r["error"]
    m = r["metrics"]
    assert m["train_step_s"]["value"] > 0
    assert m["dcp_bytes"]["value"] >= r["predicted"]["train_weights_bytes"]["value"]


def test_moe_under_fsdp_records_the_routing_of_the_worst_rank(token_fsdp_records) -> None:
    routing = token_fsdp_records["moe"]["metrics"]["train_expert_load_imbalance"]
    assert len(routing["per_rank"]) == 2 and routing["value"] == max(routing["per_rank"])


def test_a_killed_rank_is_crashed_within_the_timeout_and_an_oom_rank_is_oom(
    tmp_path: Path,
) -> None:
    killed, oom = tmp_path / "killed", tmp_path / "oom"
    killed.mkdir(), oom.mkdir()
    cases = [
        ranks.Case("killed", "kill_rank_1", str(killed)),
        ranks.Case("oom", "oom_on_rank_1", str(oom)),
    ]
    records = run_ranks(cases, tmp_path / "out")
    assert records["killed"]["status"] == "crashed"
    assert "rank 1 of 2" in records["killed"]["error"]
    assert "SIGKILL" in records["killed"]["error"]
    assert "last words of rank 1" in records["killed"]["error"], "its output ends the record"
    assert records["oom"]["status"] == "oom"
    assert "no room for the activations on rank 1" in records["oom"]["error"]
    for pid in pids_left(killed) + pids_left(oom):
        wait_until(lambda pid=pid: not running(pid), f"rank pid {pid} to end")


def test_a_hung_rank_times_out_and_no_rank_outlives_the_case(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    marker.mkdir()
    records = run_ranks([ranks.Case("hung", "hang_rank_1", str(marker))], tmp_path, timeout_s=20)
    assert records["hung"]["status"] == "timeout"
    pids = pids_left(marker)
    assert len(pids) == 2, "both ranks started before the timeout"
    for pid in pids:
        wait_until(lambda pid=pid: not running(pid), f"rank pid {pid} to end", limit_s=10)


def test_a_metric_some_rank_lacks_is_left_out_not_combined_from_a_part() -> None:
    per_rank = [
        {"train_step_s": single(0.02, "s"), "train_energy_per_step_j": single(3.0, "J")},
        {"train_step_s": single(0.03, "s")},
    ]
    assert set(combine(per_rank)) == {"train_step_s"}
