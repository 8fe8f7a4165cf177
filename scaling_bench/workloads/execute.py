"""One case, inside its worker: build the model once, then run each asked-for workload on it.

Workloads share the worker because starting Python and importing torch costs seconds (DESIGN §4).
They run in a fixed order, forward before train, so the inference peak is not inflated by
gradients and optimizer state, and checkpoint last, so it can save the optimizer state that
training created.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict

import torch

from scaling_bench.dtypes import parse_dtype
from scaling_bench.grid import Case
from scaling_bench.hardware import peak_flops
from scaling_bench.meters.memory import baseline_rss
from scaling_bench.models import family
from scaling_bench.predict import Plan, plan
from scaling_bench.stats import single
from scaling_bench.workloads.checkpoint import measure_checkpoint
from scaling_bench.workloads.forward import forward_step
from scaling_bench.workloads.throughput import measure_step
from scaling_bench.workloads.train_step import make_optimizer, train_step


def predicted_metrics(p: Plan, device: torch.device) -> dict[str, dict]:
    """Theory under the names of the measurements it predicts, so analysis can pair them by name."""
    memory = p.train_memory
    peak_name = (
        "train_peak_gpu_allocated_bytes"
        if device.type == "cuda"
        else "train_peak_cpu_rss_above_baseline_bytes"
    )
    out = {
        peak_name: single(memory.total_bytes, "bytes"),
        "checkpoint_bytes": single(p.checkpoint_bytes, "bytes"),
        "checkpoint_bytes_with_optimizer": single(p.checkpoint_bytes_with_optimizer, "bytes"),
        "forward_flops_per_sample": single(p.forward_flops_per_sample, "FLOP"),
        "train_flops_per_sample": single(p.train_flops_per_sample, "FLOP"),
    }
    for name, value in asdict(memory).items():
        out[f"train_{name}"] = single(value, "bytes")
    return out


def run_case(case_dict: dict) -> dict:
    """The worker's entry point: record fields for one case (params, config, metrics, predicted)."""
    baseline = baseline_rss()
    case = Case.from_dict(case_dict)
    device = torch.device(case.device)
    dtype = parse_dtype(case.dtype)
    p = plan(
        case.family,
        case.target_params,
        batch_size=case.batch_size,
        dtype=case.dtype,
        optimizer=case.optimizer,
        overrides=case.overrides_dict(),
    )
    fam = family(case.family)
    peak, source = peak_flops(device, dtype)
    metrics: dict[str, dict] = {"peak_flops_per_s": single(peak, "FLOP/s") | {"source": source}}
    torch.manual_seed(0)
    model = fam.build(p.config, device=device, dtype=dtype)
    batch = fam.sample_batch(p.config, p.batch_size, device=device, dtype=dtype)
    common = {
        "batch_size": p.batch_size,
        "tokens_per_sample": p.tokens_per_sample,
        "peak_flops": peak,
        "budget_s": case.budget_s,
        "baseline_rss_bytes": baseline,
    }
    if "forward" in case.workloads:
        step = forward_step(model, batch[0])
        found, _ = measure_step(
            "forward", step, device, flops_per_sample=p.forward_flops_per_sample, **common
        )
        metrics |= found
    optimizer = make_optimizer(case.optimizer, model.parameters())
    step = train_step(model, optimizer, batch)
    if "train" in case.workloads:
        found, _ = measure_step(
            "train", step, device, flops_per_sample=p.train_flops_per_sample, **common
        )
        metrics |= found
    if "checkpoint" in case.workloads:
        if not optimizer.state:
            step()
        with tempfile.TemporaryDirectory(prefix="scaling-bench-") as scratch:
            metrics |= measure_checkpoint(model, optimizer, scratch, budget_s=4 * case.budget_s)
    return {
        "params": p.params,
        "config": asdict(p.config),
        "metrics": metrics,
        "predicted": predicted_metrics(p, device),
    }
