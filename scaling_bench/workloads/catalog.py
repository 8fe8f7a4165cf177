"""What a record can hold, declared without torch: each built-in workload's name, order, metric
specs and summary columns, and the figures recorded beside them.

``compare``, ``report``, ``merge`` and ``ab``'s verdicts read records; they need what every
figure means and how workloads are ordered, not the code that measures (which imports torch,
seconds of start-up on every command). The workload modules take their declarations from here
(``class Train(TimedWorkload, declared=catalog.TRAIN)``), so each is written once. Importing this
module declares the built-ins: their names to the workloads axis, their specs to the registry. A
plugin's workload declares itself when it registers (``base.register``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from scaling_bench.config.axes import declare_choice
from scaling_bench.core.metrics import (
    HIGHER,
    LOWER,
    NEITHER,
    Kind,
    MetricSpec,
    prefixed,
    register,
)
from scaling_bench.meters import specs as meters
from scaling_bench.workloads import family_metrics

#: The unit of a loss (cross-entropy in nats): what the fits and figures read as a loss.
LOSS_UNIT = "nats"


class Needs(StrEnum):
    """The state of the case's model a workload needs before it starts."""

    WEIGHTS = "weights"  # the built model
    TRAINING = "training"  # the model after a training step: gradients and optimizer state exist
    OWN_MODELS = "own models"  # it builds models of its own; the case's model is freed first


@dataclass(frozen=True)
class Column:
    """A column of the run's summary table: the first of ``metrics`` a record has, formatted
    with ``fmt`` (a format spec, or ``"bytes"``), from the record's ``section``."""

    header: str
    metrics: tuple[str, ...]
    fmt: str
    section: str = "metrics"


@dataclass(frozen=True)
class Declared:
    """What a reader of records needs of one workload: where it runs in a case (``order``), what
    it needs, whether it times one step (``timed``), whether grids run it when none is named
    (``default``) and on a CPU's quick grid (``quick``), its figures and its summary columns."""

    name: str
    order: int
    needs: Needs
    timed: bool
    default: bool
    quick: bool
    specs: tuple[MetricSpec, ...]
    predicted_specs: tuple[MetricSpec, ...]
    columns: tuple[Column, ...]


def declare(declared: Declared) -> None:
    """Make a workload's name known to the workloads axis and its figures to the metric specs:
    its own, its predictions, and its whole time."""
    name = declared.name
    declare_choice("workloads", name, default=declared.default, quick=declared.quick)
    register((*declared.specs, *declared.predicted_specs, *_whole_time(name)))


def _whole_time(name: str) -> tuple[MetricSpec, MetricSpec]:
    """A whole workload's seconds: as pytest-benchmark times a workload without a step, and as
    the engine records it (``_wall_s``, bookkeeping: what a case's duration is made of)."""
    return (
        MetricSpec(f"{name}_s", "s", LOWER, label=f"{name} (whole workload)"),
        MetricSpec(f"{name}_wall_s", "s", NEITHER, "bookkeeping", label=f"{name} wall time"),
    )


#: The figures derived from a timed workload's step time (each its samples scaled by a constant).
DERIVED_SPECS = (
    MetricSpec("samples_per_s", "samples/s", HIGHER, "derived", "step_s", label="throughput"),
    MetricSpec("tokens_per_s", "tokens/s", HIGHER, "derived", "step_s", label="tokens/s"),
    MetricSpec("flops_per_s", "FLOP/s", HIGHER, "derived", "step_s", label="FLOP/s"),
    MetricSpec("mfu", "fraction", HIGHER, "derived", "step_s", label="MFU"),
    MetricSpec("sample_s", "s", LOWER, "derived", "step_s", label="seconds per sample"),
    MetricSpec("samples_per_s_per_rank", "samples/s", HIGHER, "derived", "step_s",
               label="throughput per rank"),
    MetricSpec("scaling_efficiency", "fraction", HIGHER, "derived", "step_s",
               label="scaling efficiency against one process"),
    MetricSpec("mfu_achievable", "fraction", HIGHER, "derived", "step_s",
               label="MFU against the achievable GEMM peak"),
    MetricSpec("energy_per_sample_j", "J", LOWER, "derived", "energy_per_step_j",
               label="energy per sample"),
    MetricSpec("energy_per_token_j", "J", LOWER, "derived", "energy_per_step_j",
               label="energy per token"),
)  # fmt: skip
#: What compiling cost, per timed workload (``train_compile_s``; ``workloads/compiled.py``).
COMPILED = (
    MetricSpec("compile_s", "s", LOWER, label="first step, compilation included (cold cache)"),
    MetricSpec("compiled_frames", "frames", NEITHER, "counted", label="frames compiled"),
    MetricSpec("graph_breaks", "breaks", LOWER, "counted", label="graph breaks"),
    MetricSpec("recompiles", "frames", LOWER, "counted", label="frames recompiled while timed"),
)
#: The peak FLOP/s that MFU is measured against: about the machine, never compared.
PEAK_FLOPS = MetricSpec("peak_flops_per_s", "FLOP/s", NEITHER, "bookkeeping", label="peak")
#: The best GEMM measured on the device (GPUs: beside the data-sheet peak above).
ACHIEVABLE_FLOPS = MetricSpec(
    "achievable_peak_flops_per_s", "FLOP/s", NEITHER, "bookkeeping", label="achievable peak"
)
#: A case's largest batch (``--batch-sizes max``; ``workloads/batch_search.py``).
MAX_BATCH = (
    MetricSpec("max_batch_predicted", "samples", NEITHER, "bookkeeping",
               label="max batch predicted to fit"),
    MetricSpec("max_batch_size", "samples", NEITHER, "bookkeeping",
               label="max batch confirmed by a step"),
    MetricSpec("max_batch_backoffs", "steps", NEITHER, "bookkeeping",
               label="max batch: steps that did not fit"),
    MetricSpec("max_batch_limit_bytes", "bytes", NEITHER, "bookkeeping",
               label="max batch: memory limit"),
    MetricSpec("max_batch_step_peak_bytes", "bytes", NEITHER, "bookkeeping",
               label="max batch: the confirming step's peak"),
)  # fmt: skip
#: Compute processes of others on a case's GPU (``engine/isolation.py``).
FOREIGN_PROCESSES = MetricSpec(
    "foreign_processes", "processes", LOWER, "bookkeeping", label="other compute processes"
)


def timed_specs(name: str, own: tuple[MetricSpec, ...] = ()) -> tuple[MetricSpec, ...]:
    """A timed workload's figures (``timed.TimedWorkload``): the meters' and the derived ones
    under its name, every family's declared figures, the peaks, then its ``own``."""
    measured = (*meters.TIMING, *meters.MEMORY, *meters.ENERGY, *meters.DEVICE_STATE, *COMPILED,
                *meters.FOREIGN_LOAD)  # fmt: skip
    under_name = prefixed(name, (*measured, *DERIVED_SPECS)) + family_metrics.specs(name)
    return (*under_name, PEAK_FLOPS, ACHIEVABLE_FLOPS, *own)


def timed_predicted(name: str, own: tuple[MetricSpec, ...] = ()) -> tuple[MetricSpec, ...]:
    """A timed workload's predictions: the FLOPs of one sample, then its ``own``."""
    return (MetricSpec(f"{name}_flops_per_sample", "FLOP", NEITHER, "predicted"), *own)


FORWARD = Declared(
    name="forward", order=10, needs=Needs.WEIGHTS, timed=True, default=True, quick=True,
    specs=timed_specs("forward"), predicted_specs=timed_predicted("forward"),
    columns=(Column("fwd samples/s", ("forward_samples_per_s",), "{:,.0f}"),),
)  # fmt: skip

#: The measured training peak that the prediction is held against, by device type.
TRAIN_PEAK_NAMES = {
    "cuda": "train_peak_gpu_allocated_bytes",
    "cpu": "train_peak_cpu_tensor_bytes",
}
#: The training state, per rank; then the rest of a training step's predicted memory.
TRAIN_STATE = ("weights", "gradients", "optimizer_state")
TRAIN_PARTS = (
    *TRAIN_STATE,
    "activations",
    "weight_copies",
    "buffers",
    "batch",
    "temporaries",
    "kernel_scratch",
)
TRAIN = Declared(
    name="train", order=20, needs=Needs.WEIGHTS, timed=True, default=True, quick=True,
    specs=timed_specs("train", (
        *(MetricSpec(f"train_{part}_bytes_per_rank", "bytes", LOWER, "counted")
          for part in TRAIN_STATE),
        MetricSpec("train_hfu", "fraction", HIGHER, "derived", "train_step_s",
                   label="HFU (recomputed FLOPs counted)"),
        *prefixed("train", meters.TENSOR_MEMORY),
    )),
    predicted_specs=timed_predicted("train", tuple(
        MetricSpec(name, "bytes", NEITHER, "predicted")
        for name in (
            *(f"train_{part}_bytes" for part in TRAIN_PARTS),
            "train_activations_bytes_per_rank",
        )
    )),
    columns=(
        Column("train samples/s", ("train_samples_per_s",), "{:,.0f}"),
        Column("MFU", ("train_mfu",), "{:.1%}"),
        Column("HFU", ("train_hfu",), "{:.1%}"),
        Column("peak mem", tuple(TRAIN_PEAK_NAMES.values()), "bytes"),
        Column("predicted", tuple(TRAIN_PEAK_NAMES.values()), "bytes", section="predicted"),
    ),
)  # fmt: skip

#: The formats a checkpoint is measured in, each named ``{format}_{metric}``, and what is timed.
CHECKPOINT_FORMATS = ("checkpoint", "safetensors", "dcp")
CHECKPOINT_OPS = ("save", "load")


def _format_specs(fmt: str) -> tuple[MetricSpec, ...]:
    return (
        MetricSpec(f"{fmt}_bytes", "bytes", LOWER, "counted", label=f"{fmt} size"),
        MetricSpec(f"{fmt}_bytes_with_optimizer", "bytes", LOWER, "counted"),
        *(MetricSpec(f"{fmt}_{op}_s", "s", LOWER, label=f"{fmt} {op}") for op in CHECKPOINT_OPS),
        *(
            MetricSpec(f"{fmt}_{op}_bytes_per_s", "bytes/s", HIGHER, "derived", f"{fmt}_{op}_s")
            for op in CHECKPOINT_OPS
        ),
    )


CHECKPOINT = Declared(
    name="checkpoint", order=30, needs=Needs.TRAINING, timed=False, default=True, quick=True,
    specs=(*(s for fmt in CHECKPOINT_FORMATS for s in _format_specs(fmt)),
           meters.TIMED.prefixed("checkpoint")),
    predicted_specs=(),
    columns=(Column("ckpt bytes", ("checkpoint_bytes", "dcp_bytes"), "{:,.0f}"),),
)  # fmt: skip


def _loss_spec(name: str, label: str, better: int = LOWER, unit: str = LOSS_UNIT) -> MetricSpec:
    return MetricSpec(name, unit, better, label=label)


CONVERGENCE = Declared(
    name="convergence", order=40, needs=Needs.OWN_MODELS, timed=False, default=False, quick=True,
    specs=(
        _loss_spec("final_loss_mean", "final training loss"),
        _loss_spec("final_loss_std", "final loss spread over seeds"),
        _loss_spec("heldout_loss", "held-out loss"),
        _loss_spec("generalization_gap", "held-out minus training loss"),
        _loss_spec("train_error", "training error", unit="fraction"),
        _loss_spec("heldout_error", "held-out error", unit="fraction"),
        _loss_spec("loss_spikes", "loss spikes", unit="count"),
        _loss_spec("diverged_fraction", "diverged runs", unit="fraction"),
        _loss_spec("initial_loss", "initial loss", better=NEITHER),
        _loss_spec("lr_sensitivity", "LR sensitivity"),
        _loss_spec("best_lr", "best LR", better=NEITHER, unit="lr"),
        _loss_spec("grad_norm", "gradient norm", better=NEITHER, unit="1"),
        _loss_spec("max_attention_logit", "largest attention logit", unit="1"),
    ),
    predicted_specs=(),
    columns=(
        Column("final loss", ("final_loss_mean",), "{:.3f}"),
        Column("held-out", ("heldout_loss",), "{:.3f}"),
        Column("gap", ("generalization_gap",), "{:+.3f}"),
        Column("diverged", ("diverged_fraction",), "{:.0%}"),
        Column("best LR", ("best_lr",), "{:g}"),
    ),
)  # fmt: skip

INFERENCE_NAME = "inference"
#: The precision the others' quality is measured against.
INFERENCE_REFERENCE_PRECISION = "fp32"
#: The prefixes of the prefill's and the decode's latencies.
INFERENCE_PREFILL = f"{INFERENCE_NAME}_prefill"
INFERENCE_DECODE = f"{INFERENCE_NAME}_decode"
_P, _D = INFERENCE_PREFILL, INFERENCE_DECODE


def _inference_spec(name: str, unit: str, better: int, kind: Kind = "measured",
                    source: str | None = None, label: str = "") -> MetricSpec:  # fmt: skip
    return MetricSpec(f"{INFERENCE_NAME}_{name}", unit, better, kind, source, label=label)


INFERENCE = Declared(
    # after forward (10), before train (20): the served model, no training state; hundreds of
    # single calls per batch size: not within a CPU's quick grid
    name=INFERENCE_NAME, order=15, needs=Needs.WEIGHTS, timed=False, default=False, quick=False,
    specs=(
        *prefixed(INFERENCE_NAME, meters.LATENCY),
        *prefixed(_P, meters.LATENCY),
        *prefixed(_D, meters.LATENCY),
        _inference_spec("samples_per_s", "samples/s", HIGHER, "derived",
                        f"{INFERENCE_NAME}_latency_p50_s", "throughput at the median latency"),
        _inference_spec("decode_tokens_per_s", "tokens/s", HIGHER, "derived",
                        f"{_D}_latency_p50_s", "decode tokens/s (batch / TPOT)"),
        _inference_spec("decode_bandwidth_bytes_per_s", "B/s", HIGHER, "derived",
                        f"{_D}_latency_p50_s", "bytes read per decode step / TPOT"),
        _inference_spec("bandwidth_utilisation", "fraction", HIGHER, "derived",
                        f"{_D}_latency_p50_s", "decode bandwidth / device memory bandwidth"),
        _inference_spec("decode_bytes_per_step", "bytes", NEITHER, "counted",
                        label="bytes a decode step reads (weights + mean KV cache)"),
        _inference_spec("kv_cache_bytes", "bytes", LOWER, "counted",
                        label="KV cache at prompt + generation"),
        _inference_spec("checkpoint_bytes", "bytes", LOWER, "counted",
                        label="served model's state_dict bytes"),
        _inference_spec("memory_bandwidth_bytes_per_s", "B/s", NEITHER, "bookkeeping",
                        label="device memory bandwidth"),
        _inference_spec("top1_agreement", "fraction", HIGHER, "counted",
                        label="top-1 agreement with the fp32 model"),
        _inference_spec("kl_divergence", LOSS_UNIT, LOWER, "counted",
                        label="mean KL from the fp32 model"),
        _inference_spec("heldout_loss", LOSS_UNIT, LOWER, "counted",
                        label="held-out loss (real data)"),
    ),
    predicted_specs=(),
    columns=(
        Column("p50 s", (f"{INFERENCE_NAME}_latency_p50_s",), "{:.4f}"),
        Column("p99 s", (f"{INFERENCE_NAME}_latency_p99_s",), "{:.4f}"),
        Column("TTFT s", (f"{_P}_latency_p50_s",), "{:.4f}"),
        Column("TPOT s", (f"{_D}_latency_p50_s",), "{:.4f}"),
        Column("decode tok/s", (f"{INFERENCE_NAME}_decode_tokens_per_s",), "{:,.0f}"),
        Column("BW util", (f"{INFERENCE_NAME}_bandwidth_utilisation",), "{:.1%}"),
        Column("top-1", (f"{INFERENCE_NAME}_top1_agreement",), "{:.3f}"),
    ),
)  # fmt: skip

#: The built-in workloads, in the order they are declared; each is ``workloads/{name}.py``.
BUILTIN = (FORWARD, TRAIN, CHECKPOINT, CONVERGENCE, INFERENCE)

for _declared in BUILTIN:
    declare(_declared)
register((*MAX_BATCH, FOREIGN_PROCESSES))
