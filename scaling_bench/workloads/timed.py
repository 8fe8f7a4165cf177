"""Workloads that time one step: the step under a memory meter, then throughput, FLOP/s and MFU.

A ``TimedWorkload`` subclass says how to build its step and how many FLOPs a sample costs; the
timing, the memory peaks, the derived figures and their specs are the same for every such
workload, named ``{workload}_{metric}`` (``catalog.timed_specs``). The energy and device-state
meters are read at the edges of each timed block: joules per step are samples like the step
times, and the step-time metric carries the clock state it ran at.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from scaling_bench.core.stats import scaled, single
from scaling_bench.meters import foreign_load
from scaling_bench.meters.device_state import DeviceStateMeter
from scaling_bench.meters.energy import EnergyMeter
from scaling_bench.meters.foreign_load import ForeignLoad
from scaling_bench.meters.memory import PeakMemory
from scaling_bench.meters.specs import clock_state
from scaling_bench.meters.timing import measure
from scaling_bench.workloads import catalog, compiled, family_metrics
from scaling_bench.workloads.base import Context, Workload

if TYPE_CHECKING:
    import torch

    from scaling_bench.predict.plan import Plan
    from scaling_bench.workloads.catalog import Declared
    from scaling_bench.workloads.setup import CaseSetup


class TimedWorkload(Workload):
    """A step timed until its median settles, under ``PeakMemory``."""

    timed = True
    #: FLOPs of one sample, from the plan (the workload's own formula).
    flops_field: ClassVar[str]

    def __init_subclass__(cls, declared: Declared | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(declared=declared, **kwargs)
        if declared is None:  # a plugin's: the timed figures under its name, then its own
            cls.specs = catalog.timed_specs(cls.name, cls.specs)
            cls.predicted_specs = catalog.timed_predicted(cls.name, cls.predicted_specs)

    def build_step(self, setup: CaseSetup, ctx: Context | None) -> Callable[[], object]:
        raise NotImplementedError

    def step(self, setup: CaseSetup) -> Callable[[], object]:
        return self.build_step(setup, None)

    def flops_per_sample(self, plan: Plan) -> int:
        return getattr(plan, self.flops_field)

    def measure(self, setup: CaseSetup, ctx: Context) -> dict[str, dict]:
        step = self.build_step(setup, ctx)
        is_compiled = setup.step_model is not setup.model
        cold = compiled.first_step(self.name, step, setup.device) if is_compiled else {}
        frames = compiled.compiled_frames_now()
        shared = ctx.distributed and setup.device.type == "cpu"
        with (
            PeakMemory(setup.device, baseline_rss_bytes=ctx.baseline_rss_bytes) as peaks,
            EnergyMeter(setup.device, shared_machine=shared) as joules,
            DeviceStateMeter(setup.device) as state,
            ForeignLoad() as load,
        ):
            own = () if ctx.distributed else (load,)  # a case's other ranks are not foreign
            timed = measure(step, setup.device, budget_s=setup.case.budget_s, agree=ctx.agree,
                            meters=(joules, state, *own), rel_ci=setup.case.ci_target)  # fmt: skip
        metrics = timed.metrics(self.name) | {f"{self.name}_timed_s": single(timed.timed_s, "s")}
        if is_compiled:
            metrics |= cold | compiled.recompiles(self.name, frames)
        metered = peaks.metrics() | joules.metrics() | state.metrics() | load.metrics()
        metrics |= {f"{self.name}_{name}": m for name, m in metered.items()}
        metrics |= family_metrics.read(self.name, setup.case.family, setup.model)
        step_s = metrics[f"{self.name}_step_s"]
        step_s |= state.annotation() | load.annotation()
        if joules.left_out:
            step_s["energy_left_out"] = joules.left_out
        if f"{self.name}_energy_per_step_j" in metrics:
            metrics[f"{self.name}_energy_per_step_j"] |= state.annotation() | load.annotation()
        return metrics

    def derive(self, metrics: dict[str, dict], setup: CaseSetup, ctx: Context) -> dict[str, dict]:
        step_s = metrics[f"{self.name}_step_s"]
        p = setup.plan
        out = derived_metrics(
            self.name,
            step_s,
            batch_size=p.batch_size * ctx.world_size,
            flops_per_sample=self.flops_per_sample(p),
            tokens_per_sample=p.tokens_per_sample,
            peak_flops=ctx.peak_flops,
            devices=ctx.devices,
            achievable_flops=ctx.achievable_flops,
        )
        if joules := metrics.get(f"{self.name}_energy_per_step_j"):
            samples = p.batch_size * ctx.world_size
            out[f"{self.name}_energy_per_sample_j"] = scaled(joules, 1 / samples, "J")
            if p.tokens_per_sample:
                tokens = samples * p.tokens_per_sample
                out[f"{self.name}_energy_per_token_j"] = scaled(joules, 1 / tokens, "J")
        if ctx.distributed:
            out[f"{self.name}_samples_per_s_per_rank"] = scaled(
                step_s, p.batch_size, "samples/s", invert=True
            )
        # A derived figure ran at its source's clocks, on its source's (busy or quiet) machine.
        state = clock_state(step_s) | foreign_load.busy_state(step_s)
        return {name: metric | state for name, metric in out.items()}

    def predict(self, plan: Plan, device: torch.device, ctx: Context) -> dict[str, dict]:
        return {f"{self.name}_flops_per_sample": single(self.flops_per_sample(plan), "FLOP")}


def derived_metrics(
    prefix: str,
    step_s: dict,
    *,
    batch_size: int,
    flops_per_sample: int,
    tokens_per_sample: int | None,
    peak_flops: float,
    devices: int = 1,
    achievable_flops: float | None = None,
) -> dict[str, dict]:
    """``{prefix}_samples_per_s``, ``_tokens_per_s``, ``_flops_per_s`` and ``_mfu`` from the
    step-time metric of ``batch_size`` samples on ``devices`` devices of ``peak_flops`` each.

    Each is the step time scaled by a constant, so its samples are the measurement's. MFU above 1
    means the peak is too low (a CPU peak measured on a busy machine, a wrong override) or the
    FLOP count too high: it is left out, with the reason on the FLOP/s metric, rather than
    reported or allowed to throw away the case's measurements. With ``achievable_flops`` (the
    best GEMM measured on the device), ``_mfu_achievable`` is held against it, under the same rule.
    """
    flops_per_step = flops_per_sample * batch_size
    out = {f"{prefix}_samples_per_s": scaled(step_s, batch_size, "samples/s", invert=True)}
    if tokens_per_sample:
        tokens = batch_size * tokens_per_sample
        out[f"{prefix}_tokens_per_s"] = scaled(step_s, tokens, "tokens/s", invert=True)
    flops = out[f"{prefix}_flops_per_s"] = scaled(step_s, flops_per_step, "FLOP/s", invert=True)
    peaks = {"mfu": peak_flops}
    if achievable_flops:
        peaks["mfu_achievable"] = achievable_flops
    for name, per_device in peaks.items():
        peak = devices * per_device
        if flops["value"] <= peak:
            out[f"{prefix}_{name}"] = scaled(step_s, flops_per_step / peak, "fraction", invert=True)
        else:
            flops[f"{name}_left_out"] = (
                f"achieved {flops['value']:.4g} FLOP/s is above the peak of {peak:.4g}: "
                "the peak is too low or the FLOP count too high"
            )
    return out
