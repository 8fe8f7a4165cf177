"""What the meters write into a record: their metric specs and the annotations they put on a
metric, declared here without torch.

``compare``, the report and ``merge`` read records on machines and in processes that never
measure; they need the meaning of every figure a meter records, but none of the meters' code
(which imports torch, seconds of start-up). Each meter module takes its specs from here, so each
spec is declared once. Each tuple is what the meter records before a workload's prefix.
"""

from __future__ import annotations

from typing import Any

from scaling_bench.core.metrics import LOWER, NEITHER, MetricSpec

#: Seconds inside timed regions: the run's summary adds up every workload's ``{name}_timed_s``.
TIMED = MetricSpec("timed_s", "s", NEITHER, kind="bookkeeping", reduce="max", label="time timed")
#: ``timing.measure``.
TIMING = (
    MetricSpec("step_s", "s", LOWER, label="seconds per step"),
    MetricSpec("cold_start_s", "s", LOWER, label="first step (cold start)"),
    TIMED,
)
#: ``memory.PeakMemory``; the GPU ones on CUDA only.
MEMORY = (
    MetricSpec("peak_cpu_rss_bytes", "bytes", LOWER, label="peak RSS", gated=False),
    MetricSpec(
        "peak_cpu_rss_above_baseline_bytes",
        "bytes",
        LOWER,
        label="peak RSS above baseline",
        gated=False,
    ),
    MetricSpec("peak_gpu_allocated_bytes", "bytes", LOWER, label="peak GPU allocated"),
    MetricSpec("peak_gpu_reserved_bytes", "bytes", LOWER, label="peak GPU reserved"),
    MetricSpec("peak_gpu_nvml_bytes", "bytes", LOWER, label="peak GPU used (NVML)"),
)
#: ``tensor_memory.TensorMemory``.
TENSOR_MEMORY = (
    MetricSpec("peak_cpu_tensor_bytes", "bytes", LOWER, label="peak live CPU tensor bytes"),
    MetricSpec(
        "tensor_meter_s", "s", NEITHER, "bookkeeping", label="seconds of the tensor-metered region"
    ),
)
#: ``energy.EnergyMeter``. Ranks' devices add up.
ENERGY = (
    MetricSpec("energy_per_step_j", "J", LOWER, reduce="sum", label="energy per step"),
    MetricSpec("power_w", "W", NEITHER, reduce="sum", label="average power"),
)
_STATE: dict[str, Any] = {"kind": "bookkeeping", "better": NEITHER}
#: ``device_state.DeviceStateMeter``.
DEVICE_STATE = (
    MetricSpec("sm_clock_mhz", "MHz", reduce="min", label="SM clock", **_STATE),
    MetricSpec("memory_clock_mhz", "MHz", reduce="min", label="memory clock", **_STATE),
    MetricSpec("temperature_c", "C", reduce="max", label="GPU temperature", **_STATE),
    MetricSpec("power_draw_w", "W", reduce="sum", label="power draw", **_STATE),
    MetricSpec("power_limit_w", "W", reduce="sum", label="power limit", **_STATE),
    MetricSpec("throttled_blocks", "fraction", reduce="max", label="throttled blocks", **_STATE),
)
#: ``foreign_load.ForeignLoad``: about the measurement, never compared (the busy flag on the
#: timed figure is what ``compare`` reads).
FOREIGN_SHARE = MetricSpec(
    "foreign_cpu_fraction", "fraction", NEITHER, "bookkeeping", label="CPU used by other processes"
)
FOREIGN_LOAD = (
    FOREIGN_SHARE,
    MetricSpec("load_avg_1m", "tasks", NEITHER, "bookkeeping", label="1-minute load average"),
)
BUSY_SHARE = 0.05
"""Other processes' share of the machine above which a figure is marked busy: as much as
``compare``'s default threshold, so a neighbour that can move a figure past the gate by itself
is named (on 2 cores, a tenth of a core)."""
#: The latency quantiles recorded, by the name of their metric.
PERCENTILES = {"p50": 0.5, "p90": 0.9, "p95": 0.95, "p99": 0.99}
#: A latency's ``settled_within``: its interval holds for the calls of one worker process.
#: Between separate runs a figure moves far more than that (gpt 1e6's per-token latency ranged
#: 0.52-1.46 ms over five runs, each settled); ``--processes N`` pools N workers' calls and keeps
#: each one's value, which ``compare`` tests.
WITHIN_ONE_PROCESS = "one process"
#: ``latency.measure_calls``, under a prefix (``inference_prefill_latency_p99_s``).
LATENCY = (
    *(
        MetricSpec(f"latency_{name}_s", "s", LOWER, label=f"latency {name} per call")
        for name in PERCENTILES
    ),
    MetricSpec("cold_start_s", "s", LOWER, label="first call (cold start)"),
    TIMED,
)

#: SM clocks within this share of each other are one clock state.
CLOCK_TOLERANCE = 0.03
#: What ``DeviceStateMeter.annotation`` adds to a metric.
CLOCK_KEYS = ("sm_clock_mhz", "throttled", "throttle_reasons")


def clock_state(metric: dict) -> dict[str, Any]:
    """The clock-state annotation a metric carries (``DeviceStateMeter.annotation``), for the
    figures derived from it to carry too."""
    return {k: metric[k] for k in CLOCK_KEYS if k in metric}


def clock_states_differ(base: dict, current: dict, tolerance: float = CLOCK_TOLERANCE) -> str:
    """Why two metrics ran at different clock states (``annotation`` on each), or ``""``: SM
    clocks more than ``tolerance`` apart, or one side throttled and the other not."""
    b, c = base.get("sm_clock_mhz"), current.get("sm_clock_mhz")
    if b and c and abs(c - b) > tolerance * max(b, c):
        return f"clocks differ: {b:.0f} vs {c:.0f} MHz"
    tb, tc = base.get("throttled"), current.get("throttled")
    if tb is not None and tc is not None and tb != tc:
        return f"throttled on the {'base' if tb else 'current'} side only"
    return ""


RUNNER_PID_ENV = "SCALING_BENCH_RUNNER_PID"
"""Names the runner to its workers: the runner and the fork server between it and a worker
supervise the case (the progress display, the pipes), so their CPU time is the run's own, not a
neighbour's (counted as foreign, it marked half the quick grid busy on an idle machine)."""
