"""Every workload on the token families (llama, moe) at 1e4 and 1e5.

The five built-in workloads (convergence on ``text``) run once through ``scaling-bench run``, one
grid of four cases with grouped-query attention; the recipes, int8 serving and the synthetic
convergence run through the engine's ``execute`` in this process, one case per family and
recipe; the front-ends' enumeration of cases comes from the registry. Steps of 2 sequences of 32
tokens keep the file to a few minutes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from scaling_bench.config.case import Case
from scaling_bench.engine.execute import execute
from scaling_bench.frontends import suites
from scaling_bench.frontends.cli import main
from scaling_bench.hardware.bandwidth import BANDWIDTH_ENV
from scaling_bench.models import family
from scaling_bench.store.records import RESULTS_FILE, load_records
from scaling_bench.workloads.base import Context
from scaling_bench.workloads.setup import CaseSetup

FAMILIES = ("llama", "moe")
SIZES = (1e4, 1e5)
BATCH, SEQ = 2, 32
#: Four query heads on two key/value heads: the cache holds half the heads' keys and values.
GQA = {"seq_len": SEQ, "n_head": 4, "n_kv_head": 2}
PROMPT, GEN = SEQ // 2, SEQ // 4  # the inference workload's defaults: half, then a quarter
WORKLOADS = "forward,train,checkpoint,convergence,inference"
CONVERGENCE = ["--steps", "3", "--seeds", "1", "--lrs", "1e-3",
               "--convergence", "train_size=32", "heldout_size=16"]  # fmt: skip
#: One figure of each workload (inference: its three timed calls).
HEADLINES = ("forward_step_s", "train_step_s", "checkpoint_bytes", "safetensors_bytes",
             "final_loss_mean", "heldout_loss", "inference_latency_p50_s",
             "inference_prefill_latency_p50_s", "inference_decode_latency_p50_s")  # fmt: skip
CASES = [(name, size) for name in FAMILIES for size in SIZES]
IDS = [f"{name}-{size:.0e}" for name, size in CASES]


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, float], dict]:
    """One ``scaling-bench run`` of every workload on both families at both sizes."""
    out = tmp_path_factory.mktemp("token-families")
    settings = [f"{k}={v}" for k, v in GQA.items()]
    with pytest.MonkeyPatch.context() as env:
        env.setenv(BANDWIDTH_ENV, "1e15")  # no STREAM run on a busy test machine
        code = main(["run", "--families", ",".join(FAMILIES), "--sizes", "1e4,1e5",
                     "--workloads", WORKLOADS, "--batch-sizes", str(BATCH), "--set", *settings,
                     "--dataset", "text", *CONVERGENCE, "--budget", "0.02",
                     "--peak-flops", "1e13", "--out", str(out), "--no-progress"])  # fmt: skip
    assert code == 0
    loaded = load_records(Path(out) / RESULTS_FILE)
    return {(r["case"]["family"], r["case"]["target_params"]): r for r in loaded}


@pytest.mark.parametrize(("name", "size"), CASES, ids=IDS)
def test_every_workload_runs_through_the_cli_and_records_its_figures(records, name, size) -> None:
    r = records[name, size]
    assert r["status"] == "ok", r["error"]
    m = r["metrics"]
    for metric in HEADLINES:
        assert m[metric]["value"] > 0, metric
    assert m["inference_heldout_loss"]["dataset"] == "text"
    assert m["final_loss_mean"]["value"] < 1.5 * m["initial_loss"]["value"]


@pytest.mark.parametrize(("name", "size"), CASES, ids=IDS)
def test_the_training_peak_is_predicted_to_the_byte(records, name, size) -> None:
    r = records[name, size]
    peak = "train_peak_cpu_tensor_bytes"
    assert r["metrics"][peak]["value"] == r["predicted"][peak]["value"]


@pytest.mark.parametrize(("name", "size"), CASES, ids=IDS)
def test_the_kv_cache_holds_the_kv_heads_of_every_layer(records, name, size) -> None:
    """2·L·B·T·n_kv_head·d_head·itemsize, T the prompt and the generation."""
    r = records[name, size]
    cfg = r["config"]
    assert cfg["n_kv_head"] < cfg["n_head"]  # grouped
    head_dim = cfg["d_model"] // cfg["n_head"]
    expected = 2 * cfg["n_layer"] * BATCH * (PROMPT + GEN) * cfg["n_kv_head"] * head_dim * 4
    kv = r["metrics"]["inference_kv_cache_bytes"]
    assert kv["value"] == kv["predicted"] == expected


@pytest.mark.parametrize("size", SIZES)
def test_moe_records_both_counts_and_its_routing(records, size) -> None:
    r = records["moe", size]
    cfg = family("moe").MoEConfig(**r["config"])
    assert r["active_params"] == family("moe").active_param_count(cfg) < r["params"]
    for workload in ("forward", "train"):
        routing = r["metrics"][f"{workload}_expert_load_imbalance"]
        per_layer = routing["tokens_per_expert"]
        assert len(per_layer) == cfg.n_layer
        pairs = BATCH * SEQ * cfg.top_k
        assert all(len(c) == cfg.n_expert and sum(c) == pairs for c in per_layer)
        worst = max(max(c) / (pairs / cfg.n_expert) for c in per_layer)
        assert routing["value"] == pytest.approx(worst) and routing["value"] >= 1
    assert "train_expert_load_imbalance" not in records["llama", size]["metrics"]


@pytest.mark.parametrize(("name", "size"), CASES, ids=IDS)
@torch.inference_mode()
def test_greedy_decoding_with_the_cache_equals_decoding_without_it(name, size) -> None:
    fam = family(name)
    cfg = fam.config_for(size, **GQA)
    model = fam.build(cfg).eval()
    prompt = torch.randint(0, cfg.vocab_size, (BATCH, PROMPT))
    cached = fam.generate(model, prompt, GEN, use_cache=True)
    assert torch.equal(cached, fam.generate(model, prompt, GEN, use_cache=False))


def executed(name: str, **axes: object) -> dict:
    """The record fields of one case run through the engine in this process."""
    fields = {"family": name, "target_params": 1e4, "batch_size": BATCH, "budget_s": 0.02,
              "overrides": {"seq_len": SEQ}} | axes  # fmt: skip
    case = Case.from_dict(fields)
    out = execute(case, CaseSetup.build(case), Context(peak_flops=1e13), "override")
    assert out["status"] == "ok", out["error"]
    return out


RECIPES = {
    "bf16": {"precision": "bf16", "workloads": ["train"]},
    "amp-bf16": {"precision": "amp-bf16", "workloads": ["train"]},
    "activation-checkpointing": {"activation_checkpointing": "full", "workloads": ["train"]},
    "max-batch": {"batch_size": "max", "memory_limit_bytes": 16 * 2**20, "workloads": ["train"]},
}


@pytest.mark.kernels
@pytest.mark.parametrize("recipe", RECIPES)
@pytest.mark.parametrize("name", FAMILIES)
def test_each_recipe_trains_and_its_peak_is_predicted(name, recipe) -> None:
    out = executed(name, **RECIPES[recipe])
    m, peak = out["metrics"], "train_peak_cpu_tensor_bytes"
    assert m["train_step_s"]["value"] > 0
    assert m[peak]["value"] == out["predicted"][peak]["value"]
    if recipe == "max-batch":
        assert m["max_batch_size"]["value"] >= 1


@pytest.mark.kernels
@pytest.mark.parametrize("name", FAMILIES)
def test_int8_weights_serve_with_fewer_bytes_and_their_quality_measured(name, monkeypatch) -> None:
    monkeypatch.setenv(BANDWIDTH_ENV, "1e15")
    fp32 = executed(name, workloads=["inference"])["metrics"]
    int8 = executed(name, workloads=["inference"], precision="int8-weight")["metrics"]
    assert int8["inference_checkpoint_bytes"]["value"] < fp32["inference_checkpoint_bytes"]["value"]
    assert 0 < int8["inference_top1_agreement"]["value"] <= 1
    assert int8["inference_decode_latency_p50_s"]["value"] > 0


@pytest.mark.parametrize("name", FAMILIES)
def test_convergence_on_synthetic_data(name) -> None:
    settings = {"steps": 3, "seeds": 1, "train_size": 32, "heldout_size": 16}
    m = executed(name, workloads=["convergence"], convergence=settings)["metrics"]
    assert m["final_loss_mean"]["value"] > 0 and m["diverged_fraction"]["value"] == 0


@pytest.mark.slow
@pytest.mark.parametrize("name", FAMILIES)
def test_a_compiled_step_is_timed_cold_and_then_warm(name) -> None:
    m = executed(name, workloads=["train"], compile="default")["metrics"]
    assert m["train_compile_s"]["value"] > 0 and m["train_step_s"]["value"] > 0


def test_the_benchmark_front_ends_enumerate_both_families(monkeypatch) -> None:
    for variable in suites.ENV.values():
        monkeypatch.delenv(variable, raising=False)
    cases = suites.bench_cases({"families": "llama,moe", "sizes": "1e4,1e5"})
    assert {(c.family, c.target_params) for c in cases} == set(CASES)
    grid = suites.AsvGrid(cases)
    families = dict(zip(grid.param_names, grid.params, strict=True))["family"]
    assert [f.split("(")[0] for f in families] == list(FAMILIES)
    moe = next(c for c in cases if c.family == "moe" and c.target_params == 1e4)
    moe = Case.from_dict(moe.to_dict() | {"batch_size": BATCH, "budget_s": 0.02,
                                          "overrides": {"seq_len": SEQ}})  # fmt: skip
    metrics = suites.measure(moe, "train")
    assert metrics["train_step_s"]["value"] > 0
    assert metrics["train_expert_load_imbalance"]["value"] >= 1
