"""The recipes users run: precisions, torch.compile, activation checkpointing, a ``max`` batch."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from scaling_bench.config import grid
from scaling_bench.config.case import Case
from scaling_bench.config.recipe import Recipe
from scaling_bench.core import precision as precisions
from scaling_bench.core.errors import UserError
from scaling_bench.engine.execute import execute
from scaling_bench.frontends.cli import main
from scaling_bench.models import checkpointing, gpt
from scaling_bench.models.gpt import GPTConfig
from scaling_bench.predict.batch import BatchFit, largest_fitting, max_batch
from scaling_bench.predict.memory import BatchAffine
from scaling_bench.predict.plan import plan, plan_for, saved_activation_bytes
from scaling_bench.store.records import RESULTS_FILE
from scaling_bench.workloads import batch_search, compiled
from scaling_bench.workloads.base import Context
from scaling_bench.workloads.setup import CaseSetup

TINY_GPT = (("n_layer", 2), ("seq_len", 16))
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _setup(**axes: object) -> CaseSetup:
    case = Case("gpt", 1e4, overrides=TINY_GPT, workloads=("train",), **axes)
    return CaseSetup.build(case)


# --- precisions ---------------------------------------------------------------------------------


def test_unknown_precision_is_a_user_error_naming_the_choices() -> None:
    with pytest.raises(UserError, match="unknown precision 'fp9'; choose from fp32, tf32, bf16"):
        precisions.get("fp9")


@pytest.mark.kernels
def test_amp_keeps_fp32_weights_and_gradients_and_runs_matmuls_in_bf16() -> None:
    setup = _setup(precision="amp-bf16")
    outputs: list[torch.dtype] = []
    linear = next(m for m in setup.model.modules() if isinstance(m, torch.nn.Linear))
    linear.register_forward_hook(lambda m, i, out: outputs.append(out.dtype))
    setup.train_step()()
    assert outputs == [torch.bfloat16]  # autocast over the forward
    assert {p.dtype for p in setup.model.parameters()} == {torch.float32}
    assert {p.grad.dtype for p in setup.model.parameters()} == {torch.float32}
    state = [t for s in setup.optimizer.state.values() for t in s.values() if t.dim()]
    assert {t.dtype for t in state} == {torch.float32}


@pytest.mark.kernels
def test_pure_bf16_keeps_everything_in_bf16() -> None:
    setup = _setup(precision="bf16")
    setup.train_step()()
    assert {p.grad.dtype for p in setup.model.parameters()} == {torch.bfloat16}


def test_amp_fp16_scales_the_loss() -> None:
    setup = _setup(precision="amp-fp16")
    setup.train_step()()
    assert setup.scaler is not None and setup.scaler.get_scale() > 1


@pytest.mark.kernels
@pytest.mark.parametrize(
    ("precision", "param_bytes", "copies"), [("fp32", 4, 0), ("bf16", 2, 0), ("amp-bf16", 4, 2)]
)
def test_memory_prediction_follows_the_precision(
    precision: str, param_bytes: int, copies: int
) -> None:
    p = plan("gpt", 1e5, precision=precision)
    m = p.train_memory
    assert m.weights_bytes == param_bytes * p.params
    assert m.optimizer_state_bytes >= 2 * param_bytes * p.params  # AdamW's two moments
    assert (m.weight_copies_bytes > 0) == bool(copies)
    assert m.weight_copies_bytes <= copies * p.params  # the matmuls' weights, not LayerNorm's


@pytest.mark.kernels
def test_amp_activations_are_traced_in_the_low_precision() -> None:
    full, amp = (plan("gpt", 1e5, precision=n).train_memory for n in ("fp32", "amp-bf16"))
    assert amp.activations_bytes < full.activations_bytes


def test_amp_checkpoint_holds_fp32_weights() -> None:
    amp, pure = (plan("gpt", 1e5, precision=n) for n in ("amp-bf16", "bf16"))
    assert amp.checkpoint_bytes == pytest.approx(4 * amp.params, rel=0.05)
    assert pure.checkpoint_bytes == pytest.approx(2 * pure.params, rel=0.05)


def test_peak_for_mfu_is_the_compute_dtypes() -> None:
    assert precisions.get("amp-bf16").peak_name == "bf16"
    assert precisions.get("tf32").peak_name == "tf32"
    assert precisions.get("fp8").peak_name == "fp8"


def test_old_records_with_a_dtype_read_as_the_precision() -> None:
    old = {"family": "mlp", "target_params": 1e5, "dtype": "bf16", "device": "cpu"}
    case = Case.from_dict(old)
    assert case.precision == "bf16" and case.case_id == "mlp-1e5-bf16-cpu"


def test_dtype_flag_and_dtypes_key_still_name_the_precision(tmp_path: Path) -> None:
    spec = grid.select("quick", {"precision": "fp32,amp-bf16"}, resolve=lambda _: "cpu")
    assert spec.values["precision"] == ("fp32", "amp-bf16")
    path = tmp_path / "g.toml"
    path.write_text('sizes = "1e5"\ndtypes = ["bf16"]\nbatch_size = [8]\n')
    file_spec = grid.load_grid_file(path)
    assert file_spec.values["precision"] == ("bf16",) and file_spec.values["batch_size"] == (8,)


def test_grid_files_take_the_four_recipe_axes(tmp_path: Path) -> None:
    path = tmp_path / "g.toml"
    path.write_text(
        'families = ["gpt"]\nsizes = "1e5"\nprecisions = ["fp32", "amp-bf16"]\n'
        'compile = ["eager", "default"]\nactivation_checkpointing = ["none", "full"]\n'
        'batch_sizes = [8, "max"]\nmemory_limit = "256MiB"\n'
    )
    spec = grid.load_grid_file(path)
    cases = grid.build_cases(spec, "cpu")
    assert len(cases) == 16 and len({c.case_id for c in cases}) == 16
    assert {c.memory_limit_bytes for c in cases} == {256 << 20}


def test_quick_gpu_grid_adds_amp_bf16_and_compiles_gpt_only() -> None:
    spec = grid.preset("quick", "cuda:0")
    assert "amp-bf16" in spec.values["precision"]
    cases = grid.build_cases(spec, "cuda:0")
    assert {c.compile for c in cases if c.family == "gpt"} == {"eager", "default"}
    assert {c.compile for c in cases if c.family != "gpt"} == {"eager"}
    assert grid.count_cases(spec) == len(cases)


# --- torch.compile ------------------------------------------------------------------------------


def test_compiled_case_saves_the_original_modules_state_dict() -> None:
    setup = _setup(compile="default")  # compilation itself waits for the first call
    assert setup.step_model is not setup.model
    assert next(iter(setup.step_model.state_dict())).startswith("_orig_mod.")
    keys = list(setup.model.state_dict())
    assert keys and not any(k.startswith("_orig_mod.") for k in keys)


def test_first_step_records_compile_time_frames_and_graph_breaks() -> None:
    import torch._dynamo

    torch._dynamo.reset()

    @torch.compile(backend="eager")
    def broken(x: torch.Tensor) -> torch.Tensor:
        y = x * 2
        torch._dynamo.graph_break()
        return y + 1

    x = torch.ones(3)
    figures = compiled.first_step("train", lambda: broken(x), torch.device("cpu"))
    assert figures["train_graph_breaks"]["value"] == 1
    assert figures["train_compiled_frames"]["value"] >= 1
    assert figures["train_compile_s"]["value"] > 0
    frames = compiled.compiled_frames_now()
    broken(x)
    assert compiled.recompiles("train", frames)["train_recompiles"]["value"] == 0


def test_compile_failure_is_recorded_crashed_with_the_dynamo_error() -> None:
    def boom(gm: torch.fx.GraphModule, inputs: list) -> object:
        raise RuntimeError("backend refused this graph")

    setup = _setup()
    setup.step_model = torch.compile(setup.model, backend=boom)
    fields = execute(setup.case, setup, Context(peak_flops=1e12), "override")
    assert fields["status"] == "crashed"
    assert "BackendCompilerFailed" in fields["error"] and "backend refused" in fields["error"]


# --- activation checkpointing -------------------------------------------------------------------


CFG = GPTConfig(n_layer=3, d_model=32, n_head=2, vocab_size=64, seq_len=16)


def test_checkpointing_leaves_autograd_only_the_tensors_outside_the_blocks() -> None:
    batch = gpt.sample_batch(CFG, 4)
    plain = saved_activation_bytes(gpt.build(CFG), batch)
    kept = saved_activation_bytes(checkpointing.apply(gpt.build(CFG), "gpt"), batch)
    per_block_input = 4 * CFG.seq_len * CFG.d_model * 4
    assert kept < plain - CFG.n_layer * per_block_input


def test_checkpointed_gradients_equal_the_plain_ones() -> None:
    batch = gpt.sample_batch(CFG, 2)
    grads = []
    for mode in ("none", "full"):
        torch.manual_seed(0)
        model = checkpointing.apply(gpt.build(CFG), "gpt", mode)
        out = model(batch[0])
        F.cross_entropy(out.reshape(-1, out.shape[-1]), batch[1].reshape(-1)).backward()
        grads.append([p.grad for p in model.parameters()])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b)


def test_predicted_activations_fall_with_checkpointing() -> None:
    plain, ckpt = (plan("gpt", 1e6, activation_checkpointing=m) for m in ("none", "full"))
    assert ckpt.train_memory.activations_bytes < plain.train_memory.activations_bytes


def test_hfu_flops_are_the_flop_counters_with_the_recomputed_forward() -> None:
    overrides = {"n_layer": 3, "d_model": 32, "n_head": 2, "vocab_size": 64, "seq_len": 16}
    p = plan("gpt", 3e4, batch_size=2, activation_checkpointing="full", overrides=overrides)
    model = checkpointing.apply(gpt.build(p.config), "gpt")
    x, y = gpt.sample_batch(p.config, 2)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counted:
        out = model(x)
        F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1)).backward()
    assert counted.get_total_flops() == p.hardware_train_flops_per_sample * 2
    assert p.hardware_train_flops_per_sample > p.train_flops_per_sample


def test_families_without_blocks_cannot_be_checkpointed() -> None:
    assert "no repeated blocks" in checkpointing.skip_reason("mlp", "full")
    assert checkpointing.skip_reason("mlp", "none") is None
    assert checkpointing.skip_reason("resnet", "full") is None


# --- a max batch --------------------------------------------------------------------------------


def test_max_batch_is_the_largest_predicted_to_fit_a_small_limit() -> None:
    case = Case("gpt", 1e4, overrides=TINY_GPT, workloads=("train",), batch_size="max")
    limit = 64 << 20
    recipe = Recipe.of(case)
    fit = max_batch(case, recipe, limit)
    sizes = (fit.batch_size, fit.batch_size + 1)
    need = [plan_for(case, recipe.with_batch(b)).train_memory.total_bytes for b in sizes]
    assert need[0] <= limit < need[1]  # no margin: the largest predicted to fit
    assert fit.predicted_bytes == need[0]


def test_max_batch_of_a_resnet_never_replays_a_batch_of_one() -> None:
    """The reproducer: ``max`` planned at batch 1, where BatchNorm refuses one sample at the
    1×1 last stage ("Expected more than 1 value per channel when training")."""
    case = Case("resnet", 1e4, workloads=("train",), batch_size="max")
    recipe = Recipe.of(case)
    limit = plan_for(case, recipe.with_batch(6)).train_memory.total_bytes
    assert max_batch(case, recipe, limit).batch_size == 6


def test_a_phase_whose_bytes_fall_with_the_batch_bounds_nothing() -> None:
    """vit 1e6 was skipped ("not even one sample fits in 512 MiB, predicted 16 MiB at batch 1"):
    one phase's per-sample slope was negative and the budget was divided by it."""
    line = BatchAffine({"forward": (100, -3), "backward": (50, 10), "optimizer": (10, 0)})
    assert line.largest_batch(1050, top=1 << 14) == 100
    assert line.largest_batch(10, top=1 << 14) == 0


@pytest.mark.parametrize("guess", [1, 39, 40, 41, 500, 1 << 14])
def test_the_max_batch_search_finds_the_largest_that_fits_from_any_guess(guess: int) -> None:
    """Searched on the prediction itself (here a peak not linear in the batch), not on a line."""
    asked: list[int] = []

    def peak(batch: int) -> int:
        asked.append(batch)
        return 1000 + 10 * batch + batch**2

    assert largest_fitting(peak, limit=3000, guess=guess, slope=10, top=1 << 14) == 40
    assert 40 in asked and 41 in asked and len(asked) <= 16
    assert largest_fitting(peak, limit=999, guess=guess, slope=10, top=1 << 14) == 0


def test_max_batch_backs_off_on_out_of_memory() -> None:
    fit = BatchFit(batch_size=100, fixed_bytes=0, per_sample_bytes=1, limit_bytes=1000)
    tried: list[int] = []

    def attempt(batch: int) -> int | None:
        tried.append(batch)
        return None if batch > 60 else 10 * batch  # out of memory above 60

    batch, backoffs, peak = batch_search.search(fit, attempt)
    assert (batch, backoffs, peak) == (56, 2, 560)
    assert tried == [100, 75, 56]


def test_max_batch_backs_off_by_the_measured_overshoot() -> None:
    fit = BatchFit(batch_size=100, fixed_bytes=0, per_sample_bytes=1, limit_bytes=1000)
    batch, backoffs, _ = batch_search.search(fit, lambda b: 20 * b)
    assert backoffs == 1 and batch == 50  # 100 · 1000 / 2000


def test_max_batch_confirmed_in_setup_and_recorded() -> None:
    case = Case("gpt", 1e4, overrides=TINY_GPT, workloads=("train",), batch_size="max",
                memory_limit_bytes=64 << 20)  # fmt: skip
    setup = CaseSetup.build(case)
    found = setup.found
    assert found["max_batch_size"]["value"] == setup.plan.batch_size == len(setup.batch[0])
    assert found["max_batch_size"]["value"] <= found["max_batch_predicted"]["value"]
    assert found["max_batch_step_peak_bytes"]["value"] <= 64 << 20


def test_max_batch_is_confirmed_by_a_steady_step_that_peaks_as_predicted() -> None:
    """The confirming step runs after a warm-up step, so the optimizer's state is there (a first
    step peaked 8 MB below the steady one for gpt) and its peak is the predicted one."""
    case = Case("gpt", 1e4, overrides=TINY_GPT, workloads=("train",), batch_size="max",
                memory_limit_bytes=64 << 20)  # fmt: skip
    fit = max_batch(case, Recipe.of(case))
    found = CaseSetup.build(case).found
    assert found["max_batch_size"]["value"] == fit.batch_size
    assert found["max_batch_step_peak_bytes"]["value"] == fit.predicted_bytes


# --- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--families", "mlp", "--precision", "fp9"], "unknown precision 'fp9'"),
        (["--families", "mlp", "--compile", "fast"], "unknown compile mode 'fast'"),
        (["--families", "mlp", "--batch-sizes", "huge"], "--batch-sizes 'huge'"),
        (["--families", "mlp", "--precision", "fp8"], "fp8: needs a CUDA device"),
        (["--families", "mlp", "--compile", "reduce-overhead"], "CUDA graphs need a CUDA device"),
        (["--families", "mlp", "--activation-checkpointing", "full"], "no repeated blocks"),
    ],
)
def test_bad_recipes_exit_2_with_one_line_before_any_worker(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], needle: str
) -> None:
    out = tmp_path / "out"
    assert main(["run", "--sizes", "1e4", "--workloads", "train", *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err
    assert not (out / RESULTS_FILE).exists()


def test_an_impossible_combination_in_a_grid_is_skipped_with_its_reason() -> None:
    from scaling_bench.workloads.setup import skip_reason as unsupported

    assert "no repeated blocks" in unsupported(Case("mlp", 1e5, activation_checkpointing="full"))
    assert unsupported(Case("gpt", 1e5, activation_checkpointing="full")) is None
    assert "needs a CUDA device" in unsupported(Case("gpt", 1e5, precision="tf32"))


# --- GPU-only checks ----------------------------------------------------------------------------


@needs_cuda
def test_tf32_precision_turns_tf32_matmuls_on_and_fp32_off() -> None:
    _setup(precision="tf32", device="cuda")
    assert torch.backends.cuda.matmul.fp32_precision == "tf32"
    _setup(precision="fp32", device="cuda")
    assert torch.backends.cuda.matmul.fp32_precision == "ieee"


@pytest.mark.kernels
@needs_cuda
def test_fp8_converts_the_aligned_linear_layers() -> None:
    reason = precisions.get("fp8").skip_reason(torch.device("cuda"))
    if reason:
        pytest.skip(reason)
    case = Case("gpt", 1e6, precision="fp8", device="cuda", workloads=("train",),
                overrides=(("d_model", 128), ("n_head", 2), ("n_layer", 2)))  # fmt: skip
    setup = CaseSetup.build(case)
    assert any(type(m).__name__ == "Float8Linear" for m in setup.model.modules())
    setup.train_step()()


@needs_cuda
def test_reduce_overhead_compiles_and_steps_on_cuda() -> None:
    setup = _setup(compile="reduce-overhead", device="cuda")
    step = setup.train_step()
    figures = compiled.first_step("train", step, setup.device)
    assert figures["train_graph_breaks"]["value"] == 0
    step()


def test_recipe_axes_leave_old_case_ids_unchanged() -> None:
    case = Case("mlp", 1e5)
    assert case.case_id == "mlp-1e5-fp32-cpu"
    assert replace(case, compile="default", activation_checkpointing="full").case_id == (
        "mlp-1e5-fp32-cpu-compile-default-ac-full"
    )
