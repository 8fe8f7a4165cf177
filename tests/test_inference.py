"""The inference workload: per-call latency, prefill and decode, bandwidth, int8, compare, CLI."""

from __future__ import annotations

import itertools
import json
import random
from dataclasses import replace

import numpy as np
import pytest
import synthetic
import torch

from scaling_bench.analysis.fits import by_series
from scaling_bench.config.case import Case
from scaling_bench.core import int8_weight
from scaling_bench.core.errors import UserError
from scaling_bench.core.metrics import LOWER, spec
from scaling_bench.core.stats import scaled, single
from scaling_bench.frontends.cli import main
from scaling_bench.hardware import bandwidth
from scaling_bench.meters import latency
from scaling_bench.meters.latency import MIN_CALLS, Latency, measure_calls
from scaling_bench.models import gpt
from scaling_bench.report.serving import compression_rows, serving_plots
from scaling_bench.workloads.base import Context, get
from scaling_bench.workloads.inference import _stored_tensors
from scaling_bench.workloads.setup import CaseSetup

TINY_GPT = (("d_model", 16), ("n_head", 2), ("n_layer", 1), ("seq_len", 32))
PEAK = 1e12


def fake_timer(durations):
    """A per-call timer that calls, and reads its seconds from ``durations``, in turn."""
    seconds = itertools.cycle(durations)

    def timer(device: torch.device):
        def run(call):
            call()
            return next(seconds)

        return run

    return timer


def test_every_call_is_timed_once_and_the_percentiles_are_its_quantiles(monkeypatch) -> None:
    durations = [0.001 * k for k in range(1, 51)]
    monkeypatch.setattr(latency, "_call_timer", fake_timer(durations))
    calls = []
    timed = measure_calls(lambda: calls.append(1), "cpu", warmup_calls=3, min_calls=50,
                          max_calls=50, budget_s=1e3)  # fmt: skip
    assert len(calls) == 1 + 3 + 50 == 1 + timed.warmup_calls + len(timed.call_s)
    metrics = timed.metrics("x")
    for name, q in latency.PERCENTILES.items():
        expected = np.quantile(timed.call_s, q)
        assert metrics[f"x_latency_{name}_s"]["value"] == pytest.approx(expected)
    assert len(metrics["x_latency_p99_s"]["samples"]) == 50
    assert "samples" not in metrics["x_latency_p90_s"]


def test_steady_calls_settle_at_the_minimum_a_p99_needs(monkeypatch) -> None:
    monkeypatch.setattr(latency, "_call_timer", fake_timer([0.01]))
    timed = measure_calls(lambda: None, "cpu", budget_s=1e3)
    assert timed.settled and len(timed.call_s) == MIN_CALLS == 300
    assert 0.99**MIN_CALLS < 0.05  # p99's distribution-free 95% interval has an upper bound


def test_calls_too_noisy_to_settle_stop_at_the_cap_unsettled(monkeypatch) -> None:
    monkeypatch.setattr(latency, "_call_timer", fake_timer([0.01, 1.0]))
    timed = measure_calls(lambda: None, "cpu", budget_s=1e3, max_calls=400)
    assert not timed.settled and len(timed.call_s) == 400
    assert timed.metrics("x")["x_latency_p50_s"]["settled"] is False


def tiny_case(**fields) -> Case:
    base = {"family": "gpt", "target_params": 1e4, "batch_size": 2, "budget_s": 0.05,
            "workloads": ["inference"], "overrides": TINY_GPT}  # fmt: skip
    return Case.from_dict(base | fields)


def measured(case: Case) -> dict[str, dict]:
    setup = CaseSetup.build(case)
    w, ctx = get("inference"), Context(peak_flops=PEAK)
    raw = w.measure(setup, ctx)
    return raw | w.derive(raw, setup, ctx)


@pytest.fixture
def fast_latency(monkeypatch: pytest.MonkeyPatch) -> None:
    """The device's bandwidth as an override (no STREAM run on a busy test machine)."""
    monkeypatch.setenv(bandwidth.BANDWIDTH_ENV, "1e15")


def test_gpt_serving_records_ttft_tpot_cache_bytes_and_bandwidth(fast_latency) -> None:
    m = measured(tiny_case(prompt_len=10, gen_len=6))
    cfg = gpt.GPTConfig(**dict(TINY_GPT))
    assert m["inference_kv_cache_bytes"]["value"] == 2 * 1 * 2 * 16 * 16 * 4
    assert m["inference_kv_cache_bytes"]["predicted"] == gpt.kv_cache_bytes(cfg, 2, 16, 4)
    for prefix in ("inference", "inference_prefill", "inference_decode"):
        p50 = m[f"{prefix}_latency_p50_s"]
        # settled or not as the machine allows: the rules are pinned with a fake timer
        assert p50["n"] == len(p50["samples"]) >= 1 and isinstance(p50["settled"], bool)
    tpot = m["inference_decode_latency_p50_s"]["value"]
    assert m["inference_decode_tokens_per_s"]["value"] == pytest.approx(2 / tpot)
    step_bytes = m["inference_decode_bytes_per_step"]["value"]
    assert step_bytes > m["inference_checkpoint_bytes"]["value"] * 0.5
    utilisation = m["inference_bandwidth_utilisation"]["value"]
    assert utilisation == pytest.approx(step_bytes / tpot / 1e15)
    assert m["inference_memory_bandwidth_bytes_per_s"]["source"] == "env"
    assert m["inference_heldout_loss"]["dataset"] == "text"
    assert "inference_top1_agreement" not in m  # fp32 is the reference: nothing to agree with


@pytest.mark.kernels
def test_int8_weights_cost_less_and_their_quality_is_measured(fast_latency) -> None:
    fp32 = measured(tiny_case())
    int8 = measured(tiny_case(precision="int8-weight"))
    assert int8["inference_checkpoint_bytes"]["value"] < fp32["inference_checkpoint_bytes"]["value"]
    assert 0.5 < int8["inference_top1_agreement"]["value"] <= 1
    assert -1e-6 < int8["inference_kl_divergence"]["value"] < 0.1  # float rounding below 0
    assert int8["inference_heldout_loss"]["value"] == pytest.approx(
        fp32["inference_heldout_loss"]["value"], rel=0.05
    )


def test_a_family_without_decode_gets_the_per_call_forward_latency_only(fast_latency) -> None:
    m = measured(Case.from_dict({"family": "mlp", "target_params": 1e4, "batch_size": 4,
                                 "budget_s": 0.05, "workloads": ["inference"]}))  # fmt: skip
    assert m["inference_samples_per_s"]["value"] == pytest.approx(
        4 / m["inference_latency_p50_s"]["value"]
    )
    assert not any(name.startswith("inference_decode") for name in m)


@pytest.mark.kernels
def test_int8_keeps_a_tied_head_tied_and_quantizes_the_other_linears() -> None:
    cfg = gpt.GPTConfig(**dict(TINY_GPT))
    model = gpt.build(cfg)
    names = int8_weight.untied_linears(model)
    assert "lm_head" not in names and len(names) == 4 * cfg.n_layer
    converted = int8_weight.convert(model, torch.device("cpu"))
    assert converted.lm_head.weight is converted.wte.weight


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"prompt_len": 30, "gen_len": 3}, "do not fit the 32-token context"),
        ({"prompt_len": 32}, "do not fit the 32-token context"),
    ],
)
def test_a_generation_longer_than_the_context_is_skipped_with_the_reason(fields, reason) -> None:
    assert reason in get("inference").skip_reason(tiny_case(**fields))


def test_prompt_and_gen_lengths_on_a_family_that_cannot_decode_are_skipped() -> None:
    case = Case.from_dict({"family": "mlp", "target_params": 1e4, "gen_len": 4})
    assert get("inference").skip_reason(case) == "--gen-len: the mlp family does not decode"


RUN = ["run", "--families", "gpt", "--sizes", "1e5", "--workloads", "inference"]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--prompt-len", "200", "--gen-len", "100"], "do not fit the 128-token context"),
        (["--gen-len", "0"], "--gen-len '0': input should be greater than or equal to 1"),
        (["--batch-sizes", "0"], "--batch-sizes '0'"),
    ],
)
def test_bad_lengths_and_batches_exit_2_with_one_line(capsys, tmp_path, flags, message) -> None:
    assert main([*RUN, *flags, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_training_workloads_skip_the_inference_only_precision(capsys, tmp_path) -> None:
    args = ["run", "--families", "gpt", "--sizes", "1e5", "--workloads", "train",
            "--precision", "int8-weight", "--out", str(tmp_path / "out")]  # fmt: skip
    assert main(args) == 2
    assert "int8-weight is for inference" in capsys.readouterr().err


def latency_records(slowdown: float, seed: int) -> dict:
    rng = random.Random(seed)
    calls = [0.01 * slowdown * (1 + rng.gauss(0, 0.02)) for _ in range(300)]
    figures = Latency(0.02, calls, True, 5.0, 3).metrics("inference")
    return synthetic.record("gpt", 1e6, rng=rng, extra_metrics=figures)


def test_compare_gates_the_p50_and_p99_latency(capsys, tmp_path) -> None:
    for name in ("inference_latency_p50_s", "inference_latency_p99_s"):
        assert spec(name).better == LOWER and spec(name).compared
    base = synthetic.write(tmp_path / "base", [latency_records(1.0, 0)])
    current = synthetic.write(tmp_path / "cur", [latency_records(1.3, 1)])
    assert main(["compare", str(base), str(current), "--json"]) == 1
    rows = {r["metric"]: r["verdict"] for r in json.loads(capsys.readouterr().out)["rows"]}
    assert rows["inference_latency_p50_s"] == rows["inference_latency_p99_s"] == "regressed"


@pytest.mark.parametrize(
    ("name", "bytes_per_s"),
    [
        ("NVIDIA H200", 4.8e12),
        ("NVIDIA H100 80GB HBM3", 3.35e12),
        ("NVIDIA H100 PCIe", 2.0e12),
        ("NVIDIA A100-SXM4-80GB", 2.039e12),
        ("NVIDIA A100-SXM4-40GB", 1.555e12),
        ("NVIDIA L4", 3.0e11),
    ],
)
def test_gpu_bandwidth_comes_from_the_data_sheet_table(name: str, bytes_per_s: float) -> None:
    assert bandwidth.table_bandwidth(name) == bytes_per_s


def test_bandwidth_override_and_a_bad_one(monkeypatch) -> None:
    assert bandwidth.memory_bandwidth("cpu", override=2e11) == (2e11, "override")
    monkeypatch.setenv(bandwidth.BANDWIDTH_ENV, "3.35T")
    assert bandwidth.memory_bandwidth("cpu") == (3.35e12, "env")
    monkeypatch.setenv(bandwidth.BANDWIDTH_ENV, "fast")
    with pytest.raises(UserError, match="SCALING_BENCH_MEMORY_BANDWIDTH 'fast'"):
        bandwidth.memory_bandwidth("cpu")


def test_the_cpu_bandwidth_is_measured_once_and_cached(monkeypatch) -> None:
    monkeypatch.delenv(bandwidth.BANDWIDTH_ENV, raising=False)
    runs = []
    monkeypatch.setattr(bandwidth, "_measure_triad", lambda: runs.append(1) or 5e10 * len(runs))
    first = bandwidth.memory_bandwidth("cpu")
    assert bandwidth.memory_bandwidth("cpu") == first and first[1] == "measured"
    assert bandwidth.measured_stream_bandwidth(refresh=True) == max(first[0], 5e10 * len(runs))
    assert len(runs) == (1 if first[0] == 5e10 else 0) + 1


def test_triad_counts_three_arrays_of_bytes_per_pass() -> None:
    assert bandwidth._measure_triad(n_bytes=2**20, seconds=0.01) > 0


def test_the_quality_reference_is_the_fp32_model_of_the_same_seed(fast_latency) -> None:
    case = tiny_case(precision="bf16")
    reference = CaseSetup.build(replace(case, precision="fp32")).model
    served = CaseSetup.build(case).model
    assert torch.equal(reference.wte.weight.bfloat16(), served.wte.weight)


def serving_record(target: float, batch: int, precision: str, rng: random.Random) -> dict:
    """A gpt case's inference figures as the workload records them (synthetic latencies)."""
    figures = {}
    for prefix, seconds in (("inference", 1e-9), ("inference_prefill", 5e-10),
                            ("inference_decode", 1e-10)):  # fmt: skip
        calls = [seconds * target * batch**0.5 * (1 + rng.gauss(0, 0.02)) for _ in range(40)]
        figures |= Latency(calls[0], calls, False, 1.0, 3).metrics(prefix)
    figures["inference_latency_p50_s"]["batch_size"] = batch
    tpot = figures["inference_decode_latency_p50_s"]
    figures |= {
        "inference_samples_per_s": scaled(figures["inference_latency_p50_s"], batch, "samples/s",
                                          invert=True),
        "inference_decode_tokens_per_s": scaled(tpot, batch, "tokens/s", invert=True),
        "inference_decode_bytes_per_step": single(4 * target, "bytes"),
        "inference_memory_bandwidth_bytes_per_s": single(1e11, "B/s") | {"source": "measured"},
        "inference_bandwidth_utilisation": scaled(tpot, 4 * target / 1e11, "fraction",
                                                  invert=True),
        "inference_checkpoint_bytes": single(4 * target if precision == "fp32" else target,
                                             "bytes"),
        "inference_heldout_loss": single(5.5, "nats"),
    }  # fmt: skip
    if precision != "fp32":
        figures |= {"inference_top1_agreement": single(0.99, "fraction"),
                    "inference_kl_divergence": single(1e-4, "nats")}  # fmt: skip
    r = synthetic.record("gpt", target, rng=rng, extra_metrics=figures)
    case = Case.from_dict({"family": "gpt", "target_params": target, "batch_size": batch,
                           "precision": precision, "workloads": ["inference"]})  # fmt: skip
    return r | {"case": case.to_dict(), "case_id": case.case_id}


def styles(groups: dict) -> dict:
    return {series: {"color": "C0", "marker": "o"} for series in groups}


def test_the_report_draws_the_serving_plots_and_the_compression_table() -> None:
    rng = random.Random(0)
    records = [serving_record(n, b, p, rng) for n in (1e5, 1e6) for b in (1, 8)
               for p in ("fp32", "int8-weight")]  # fmt: skip
    groups = by_series(records)
    plots = {anchor: fig for anchor, _, fig, _ in serving_plots(groups, styles(groups))}
    assert set(plots) == {"latency", "throughput-latency", "decode-roofline", "compression"}
    assert all(fig is not None for fig in plots.values())
    header, rows = compression_rows(records)
    assert header[:2] == ["case", "checkpoint"] and "top-1" in header and len(rows) == 8
    fp32_row = next(r for r in rows if "-fp32-" in r[0])
    assert fp32_row[header.index("top-1")] == ""  # the reference has no agreement to show


def test_a_run_without_inference_has_no_serving_sections() -> None:
    records = synthetic.run(seed=0)
    groups = by_series(records)
    assert serving_plots(groups, styles(groups)) == []


@pytest.mark.kernels
@pytest.mark.parametrize("backend", ["torchao", "torch.ao dynamic"])
def test_both_int8_backends_store_fewer_weight_bytes_and_keep_the_head_tied(
    monkeypatch, backend: str
) -> None:
    if backend == "torchao":
        pytest.importorskip("torchao")
    monkeypatch.setattr(int8_weight, "backend", lambda device: backend)
    cfg = gpt.GPTConfig(n_layer=2, d_model=64, n_head=2, vocab_size=64, seq_len=16)
    model = gpt.build(cfg).eval()
    tokens = torch.randint(0, 64, (2, 16))
    with torch.inference_mode():
        reference = model(tokens)
    fp32_bytes = sum(t.numel() * t.element_size() for t in _stored_tensors(model))
    converted = int8_weight.convert(model, torch.device("cpu"))
    assert converted.lm_head.weight is converted.wte.weight
    stored = sum(t.numel() * t.element_size() for t in _stored_tensors(converted))
    linear = 12 * cfg.n_layer * cfg.d_model**2  # the quantized weights: 4 bytes -> 1 (+ scales)
    assert stored < fp32_bytes - 2.5 * linear
    with torch.inference_mode():
        agree = (converted(tokens).argmax(-1) == reference.argmax(-1)).float().mean()
    assert agree > 0.9


def test_a_decode_out_of_memory_names_the_batch_and_the_lengths(fast_latency, monkeypatch) -> None:
    def out_of_memory(model, token, cache):
        raise torch.OutOfMemoryError("no memory left")

    monkeypatch.setattr(gpt, "decode_step", out_of_memory)
    with pytest.raises(torch.OutOfMemoryError, match="batch 2, prompt 10 \\+ 6 tokens"):
        measured(tiny_case(prompt_len=10, gen_len=6))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA events per call need a GPU")
def test_on_a_gpu_each_call_is_timed_by_its_own_events_and_the_bandwidth_is_the_tables() -> None:
    x = torch.randn(1024, 1024, device="cuda")
    timed = measure_calls(lambda: x @ x, "cuda", budget_s=0.5, min_calls=20, max_calls=20)
    assert len(timed.call_s) == 20 and all(s > 0 for s in timed.call_s)
    _, source = bandwidth.memory_bandwidth("cuda")
    assert source in ("table", "env")


def test_a_settled_latency_says_it_is_settled_within_its_process_and_processes_widen_it(
    monkeypatch, tmp_path
) -> None:
    """gpt 1e6 TPOT ranged 0.52-1.46 ms over five separate runs, each record settled: a figure
    settled in one process says so, the summary points to ``--processes N``, and a record of
    several processes says how many its figure spans."""
    from rich.console import Console

    from scaling_bench.engine.processes import combine_processes
    from scaling_bench.report import summary
    from scaling_bench.report.terminal import FittedTable

    monkeypatch.setattr(latency, "_call_timer", fake_timer([0.01]))
    metrics = measure_calls(lambda: None, "cpu", budget_s=1e3).metrics("x")
    p50 = metrics["x_latency_p50_s"]
    assert p50["settled"] and p50["settled_within"] == "one process"
    records = [{"case_id": "x", "status": "ok", "metrics": metrics}]
    assert summary.settled_within_one_process(records)
    combined = combine_processes([{"status": "ok", "metrics": metrics}] * 3, 3)["metrics"]
    assert combined["x_latency_p50_s"]["settled_within"] == "3 processes"
    assert not summary.settled_within_one_process([{"metrics": combined}])
    console = Console(width=200, record=True)
    recorded = [records[0] | {"params": None, "predicted": {}}]  # as the file holds it
    monkeypatch.setattr(summary, "iter_records", lambda path: iter(recorded))
    monkeypatch.setattr(summary, "summary_table", lambda records, title: FittedTable("", []))
    summary.summarize_run(tmp_path, 0.0, [], console)
    assert "--processes N" in console.export_text()
