"""One case, inside its worker: build the model once, then run each asked-for workload on it.

The one engine for one process and for the ranks of a distributed case (``distributed.rank``
calls ``execute`` with its wrapped model and the ranks' hooks). Workloads share the worker
because starting Python and importing torch costs seconds (DESIGN §4); they run in their
registered order. A workload that fails (out of memory, an error) ends the case with its status
and error, but the figures of the workloads before it stay in the record; they are also saved
before each workload starts, so a timeout or a killed worker keeps them too.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import asdict
from traceback import format_exc
from typing import Any

import torch
from torch import nn

from scaling_bench.config.case import Case
from scaling_bench.core.optimizers import make_optimizer
from scaling_bench.core.stats import single
from scaling_bench.engine.isolation import foreign_processes, refusal, with_isolation
from scaling_bench.engine.protocol import Settings, save_partial
from scaling_bench.engine.worker import clip, is_oom
from scaling_bench.hardware.peaks import measured_gemm_peak, peak_flops
from scaling_bench.meters.memory import baseline_rss
from scaling_bench.predict.plan import Plan
from scaling_bench.store.records import figures_problem
from scaling_bench.workloads.base import Context, Needs, Workload, ordered
from scaling_bench.workloads.catalog import ACHIEVABLE_FLOPS, PEAK_FLOPS
from scaling_bench.workloads.setup import CaseSetup


class UnrecordableFigures(ValueError):
    """A workload returned a figure the record cannot hold (NaN, a wrong type)."""


#: How ranks combine their metrics: ``gather(metrics)`` returns the combined ones.
Gather = Callable[[dict[str, dict]], dict[str, dict]]


def case_peak_flops(setup: CaseSetup, override: float | None = None) -> tuple[float, str]:
    """The peak FLOP/s of the setup's device for its recipe's compute dtype
    (``precision.peak_name``: bf16 for ``amp-bf16``, TF32 for ``tf32``) and its source."""
    prec = setup.precision
    return peak_flops(setup.device, prec.compute_dtype, override, tf32=prec.tf32)


def case_achievable_flops(setup: CaseSetup) -> float:
    """The best GEMM measured on the setup's device for its recipe's dtype, under the matmul
    TF32 setting (cached per device)."""
    return measured_gemm_peak(setup.precision.compute_dtype, device=setup.device)


def warm_up_runtime(device: torch.device) -> None:
    """Pay the runtime's one-time costs before the RSS baseline is taken.

    The first operator starts the thread pools and maps the kernel libraries: about 170 MB of RSS
    on a CPU, whatever the model. Taken after it, ``*_above_baseline_bytes`` is the case's own
    memory and can be held against the prediction.
    """
    layer = nn.Linear(8, 8, device=device)
    optimizer = make_optimizer("adamw", layer.parameters())
    layer(torch.ones(2, 8, device=device)).sum().backward()
    optimizer.step()


def _free(setup: CaseSetup) -> None:
    """Drop the case's model before a workload that builds its own: they must not share memory."""
    setup.model = setup.batch = setup.optimizer = None
    gc.collect()
    if setup.device.type == "cuda":
        torch.cuda.empty_cache()


def run_workload(
    w: Workload, setup: CaseSetup, ctx: Context, derive: bool = True
) -> dict[str, dict]:
    """One workload's figures, with the state it needs made first (its derived figures too,
    unless the ranks must combine the raw ones before)."""
    started = time.perf_counter()
    if w.needs is Needs.OWN_MODELS:
        _free(setup)
    elif w.needs is Needs.TRAINING:
        setup.ensure_training_state()
    raw = w.measure(setup, ctx)
    raw[f"{w.name}_wall_s"] = single(time.perf_counter() - started, "s")
    return raw | w.derive(raw, setup, ctx) if derive else raw


def predicted(workloads: list[Workload], setup: CaseSetup, ctx: Context) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for w in workloads:
        out |= w.predict(setup.plan, setup.device, ctx)
    return out


def execute(
    case: Case,
    setup: CaseSetup,
    ctx: Context,
    peak_source: str,
    gather: Gather | None = None,
) -> dict[str, Any]:
    """Record fields for one case (status, error, params, config, metrics, predicted).

    Alone (``gather`` None), each workload's figures are derived as it ends and a failure ends the
    case with its status. On a rank, failures propagate (the launcher reports the first rank that
    failed) and figures are derived once ``gather`` has combined every rank's.
    """
    workloads = ordered(case.workloads)
    known = {
        "params": setup.plan.params,
        "config": asdict(setup.plan.config),
        "predicted": predicted(workloads, setup, ctx),
    }
    if setup.plan.active_params is not None:
        known["active_params"] = setup.plan.active_params
    peak_name = setup.precision.peak_name
    peak = single(ctx.peak_flops, PEAK_FLOPS.unit) | {"source": peak_source, "dtype": peak_name}
    metrics: dict[str, dict] = {PEAK_FLOPS.name: peak} | setup.found
    if ctx.achievable_flops:
        achievable = single(ctx.achievable_flops, ACHIEVABLE_FLOPS.unit) | {"source": "measured"}
        metrics[ACHIEVABLE_FLOPS.name] = achievable
    outcome: dict[str, Any] = {"status": "ok", "error": None}
    for w in workloads:
        save_partial(known | {"metrics": metrics})
        try:
            raw = run_workload(w, setup, ctx, derive=gather is None)
            if problem := figures_problem(raw):
                raise UnrecordableFigures(f"{w.name}: its figures cannot be recorded: {problem}")
            metrics |= raw
        except Exception as exc:
            if gather is not None:
                raise
            status = "oom" if is_oom(exc) else "crashed"
            detail = f"{type(exc).__name__}: {exc}" if status == "oom" else format_exc()
            error = str(exc) if isinstance(exc, UnrecordableFigures) else f"{w.name}: {detail}"
            outcome = {"status": status, "error": clip(error)}
            break
        if status := w.outcome(raw):
            outcome["status"] = status
    if gather is not None:
        metrics = gather(metrics)
        for w in workloads:
            metrics |= w.derive(metrics, setup, ctx)
    return outcome | known | {"metrics": metrics}


def run_case(
    case_dict: dict[str, Any], settings: Settings, plan: Plan | None = None
) -> dict[str, Any]:
    """The worker's entry point for a case on one process; other compute processes on its
    device are looked for at its start and end (``engine.isolation``). ``plan``: the one the
    runner made while checking the grid (replaying a step to predict its memory takes up to a
    second), else made here."""
    case = Case.from_dict(case_dict)
    device = torch.device(case.device)
    start = foreign_processes(device)
    if reason := refusal(case.isolation, start):
        return with_isolation({"status": "skipped", "error": reason}, case.isolation, start, None)
    warm_up_runtime(device)
    baseline = baseline_rss()
    setup = CaseSetup.build(case, plan)
    peak, source = case_peak_flops(setup, settings.peak_flops)
    achievable = case_achievable_flops(setup) if source == "table" else None
    ctx = Context(peak_flops=peak, baseline_rss_bytes=baseline, achievable_flops=achievable)
    fields = execute(case, setup, ctx, source)
    return with_isolation(fields, case.isolation, start, foreign_processes(device, start))
