"""``scaling-bench check``: is this machine fit to measure on? One command, a table, an exit code.

Each check measures something whose answer is known (a GEMM against the data sheet, a kernel of
known length against the host's clock, an allocation of known size against the memory meters)
or runs the real thing small (one tiny case of each family through the engine, every workload).
A check passes, fails, warns (the figures are usable, with a caveat) or is not available here;
any failure makes the exit status 1. On a CPU the CUDA checks are left out. torch is imported
inside the checks, so that building the CLI's parser stays cheap.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scaling_bench.core.errors import UserError

if TYPE_CHECKING:
    import torch

PASS, FAIL, WARN, UNAVAILABLE = "pass", "fail", "warn", "n/a"
#: An achievable GEMM peak outside this share of the data sheet means a wrong table entry (above)
#: or a device that is shared, throttled or misconfigured (below); MAMF finds 80-87% on A100/H100.
GEMM_FRACTION = (0.5, 1.0)
#: The CUDA-event timer and the host's clock must agree this well on a kernel of known length.
TIMER_TOLERANCE = 0.05
SLEEP_S = 0.05
#: A device-to-device copy reaches 80-90% of the data sheet's bandwidth on A100/H100.
BANDWIDTH_FRACTION = (0.5, 1.0)
COPY_BYTES = 2**30
ALLOCATION_BYTES = 256 * 2**20
#: Tiny cases: the smoke grid's sizes and budgets at a small batch, and a few convergence
#: steps; they check that every path runs, not what it measures.
CHECK_BATCH_SIZE = "8"
CHECK_CONVERGENCE = {"steps": "4", "seeds": "1", "eval_every": "2", "train_size": "64",
                     "heldout_size": "32"}  # fmt: skip


@dataclass
class Result:
    """One line of the check table; ``figures`` are the numbers behind it, for ``--json``."""

    name: str
    status: str
    summary: str
    figures: dict[str, Any] = field(default_factory=dict)


Check = Callable[["torch.device"], list[Result]]


def _gflops(x: float) -> str:
    return f"{x / 1e9:,.1f} GFLOP/s" if x < 1e12 else f"{x / 1e12:,.1f} TFLOP/s"


def check_device(device: torch.device) -> list[Result]:
    """The device and its driver are there."""
    import torch

    from scaling_bench.hardware.peaks import fingerprint

    env = fingerprint()
    if device.type == "cpu":
        summary = (
            f"{env['cpu_model']}, {env['cpu_logical_cores']} cpus, torch {env['torch_version']}"
        )
        return [Result("device", PASS, summary, env)]
    if not torch.cuda.is_available():
        return [Result("device", FAIL, "no usable CUDA device", env)]
    driver = env.get("gpu_driver_version")
    status = PASS if driver else WARN
    summary = (
        f"{env['gpu_name']}, driver {driver or 'unknown (no NVML)'}, "
        f"CUDA {env['torch_cuda_version']}"
    )
    return [Result("device", status, summary, env)]


def check_gemm_peak(device: torch.device) -> list[Result]:
    """The best GEMM per dtype: on a CPU the cached best (what MFU is held against) after a new
    measurement; on a GPU a new shape search, as a share of the data-sheet peak."""
    import torch

    from scaling_bench.hardware.peaks import matmul_tf32_enabled, measured_gemm_peak

    if device.type == "cuda":
        fp32 = "tf32" if matmul_tf32_enabled() else "fp32"
        return [_gpu_gemm(device, torch.bfloat16, "bf16"), _gpu_gemm(device, torch.float32, fp32)]
    fp32 = measured_gemm_peak(torch.float32, refresh=True)
    bf16 = measured_gemm_peak(torch.bfloat16, refresh=True)
    slow = "" if bf16 >= fp32 else ": slower than fp32, no native bf16 here"
    return [
        Result("GEMM peak fp32", PASS if fp32 > 0 else FAIL, _gflops(fp32), {"flops_per_s": fp32}),
        Result("GEMM peak bf16", WARN if slow else PASS, f"{_gflops(bf16)}{slow}",
               {"flops_per_s": bf16, "of_fp32": bf16 / fp32}),
    ]  # fmt: skip


def check_drift(device: torch.device) -> list[Result]:
    """Run-to-run drift: a small fixed step's median in a few fresh processes, their spread as
    a relative figure, cached for ``compare`` to gate unpaired runs against; a warning where it
    leaves a 2x slowdown undetectable (the run's figures are then for ``ab`` only)."""
    from scaling_bench.analysis.compare import ALPHA
    from scaling_bench.analysis.unpaired import machine_drift
    from scaling_bench.hardware.drift import DRIFT_REPETITIONS, run_drift
    from scaling_bench.hardware.peaks import fingerprint

    sigma = run_drift(refresh=True)
    env = fingerprint()
    drift = machine_drift(env, env)
    bound = drift.bound(ALPHA)
    summary = (
        f"σ {sigma:.1%} over {DRIFT_REPETITIONS} fresh processes; compare holds an unpaired "
        f"move to ±{bound:.0%} ({drift.source})"
    )
    return [Result("run-to-run drift", PASS if bound < 1 else WARN, summary, {"sigma": sigma})]


def _gpu_gemm(device: torch.device, dtype: torch.dtype, precision: str) -> Result:
    import torch

    from scaling_bench.hardware.peaks import measure_gemm_flops, table_peak_flops

    name = torch.cuda.get_device_name(device)
    table = table_peak_flops(name, precision)
    measured = measure_gemm_flops(dtype, device)
    figures = {"flops_per_s": measured, "table_flops_per_s": table}
    if table is None:
        summary = f"{_gflops(measured)}; no table entry for {name!r}"
        return Result(f"GEMM peak {precision}", FAIL, summary, figures)
    fraction = measured / table
    status = PASS if GEMM_FRACTION[0] <= fraction <= GEMM_FRACTION[1] else FAIL
    summary = f"{_gflops(measured)} = {fraction:.0%} of the table's {_gflops(table)}"
    return Result(f"GEMM peak {precision}", status, summary, figures | {"fraction": fraction})


def check_peak_table(device: torch.device) -> list[Result]:
    """The GPU has an entry in the dense peak table (else MFU needs --peak-flops)."""
    import torch

    from scaling_bench.hardware.peaks import table_peak_flops

    name = torch.cuda.get_device_name(device)
    found = {p: table_peak_flops(name, p) for p in ("fp32", "tf32", "bf16", "fp16")}
    known = {p: v for p, v in found.items() if v}
    if not known:
        return [Result("peak table", FAIL, f"no entry for {name!r}; pass --peak-flops", found)]
    return [
        Result("peak table", PASS, ", ".join(f"{p} {v / 1e12:g}T" for p, v in known.items()), found)
    ]


def check_bandwidth(device: torch.device) -> list[Result]:
    """Memory bandwidth: a CPU's STREAM triad, measured now; on a GPU a device-to-device copy
    as a share of the data sheet's figure (a copy reads and writes each byte)."""
    import torch

    from scaling_bench.hardware.bandwidth import measured_stream_bandwidth, table_bandwidth

    if device.type == "cpu":
        measured = measured_stream_bandwidth(refresh=True)
        status = PASS if measured > 0 else FAIL
        return [Result("memory bandwidth", status, f"{measured / 1e9:,.1f} GB/s (STREAM triad)",
                       {"bytes_per_s": measured})]  # fmt: skip
    name = torch.cuda.get_device_name(device)
    table = table_bandwidth(name)
    src = torch.empty(COPY_BYTES, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    fastest_s = math.inf
    for _ in range(10):
        start.record()
        dst.copy_(src)
        end.record()
        end.synchronize()
        fastest_s = min(fastest_s, start.elapsed_time(end) / 1e3)
    measured = 2 * COPY_BYTES / fastest_s
    figures = {"bytes_per_s": measured, "table_bytes_per_s": table}
    if table is None:
        return [Result("memory bandwidth", FAIL, f"{measured / 1e9:,.0f} GB/s; no table entry "
                       f"for {name!r}", figures)]  # fmt: skip
    fraction = measured / table
    status = PASS if BANDWIDTH_FRACTION[0] <= fraction <= BANDWIDTH_FRACTION[1] else FAIL
    summary = f"copy {measured / 1e9:,.0f} GB/s = {fraction:.0%} of the table's {table / 1e9:,.0f}"
    return [Result("memory bandwidth", status, summary, figures | {"fraction": fraction})]


def check_timer(device: torch.device) -> list[Result]:
    """The CUDA-event timer against the host's clock on a kernel of known length (``_sleep``)."""
    import torch

    from scaling_bench.meters.timing import measure

    torch.cuda._sleep(1_000_000)  # calibrate: cycles per second of this GPU's clock
    torch.cuda.synchronize(device)
    started = time.perf_counter()
    torch.cuda._sleep(10_000_000)
    torch.cuda.synchronize(device)
    cycles = int(10_000_000 * SLEEP_S / (time.perf_counter() - started))
    timing = measure(lambda: torch.cuda._sleep(cycles), device, budget_s=2.0, min_samples=10)
    host = []
    for _ in range(10):
        started = time.perf_counter()
        torch.cuda._sleep(cycles)
        torch.cuda.synchronize(device)
        host.append(time.perf_counter() - started)
    host_s = sorted(host)[len(host) // 2]
    off = timing.median_s / host_s - 1
    status = PASS if abs(off) <= TIMER_TOLERANCE else FAIL
    summary = f"events {timing.median_s * 1e3:.2f} ms, host {host_s * 1e3:.2f} ms ({off:+.1%})"
    return [
        Result("CUDA-event timer", status, summary, {"event_s": timing.median_s, "host_s": host_s})
    ]


def check_memory_meter(device: torch.device) -> list[Result]:
    """``PeakMemory`` against an allocation of known size (every page written)."""
    import torch

    from scaling_bench.meters.memory import PeakMemory

    before = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
    with PeakMemory(device) as mem:
        x = torch.ones(ALLOCATION_BYTES // 4, device=device)
    del x
    metrics = {k: m["value"] for k, m in mem.metrics().items()}
    key = (
        "peak_cpu_rss_above_baseline_bytes" if device.type == "cpu" else "peak_gpu_allocated_bytes"
    )
    seen = metrics[key] - before  # on a GPU, tensors alive at entry count in the peak
    # RSS carries the allocator's pages around the tensor; the GPU allocator rounds to 2 MiB.
    ok = ALLOCATION_BYTES <= seen <= ALLOCATION_BYTES * (1.25 if device.type == "cpu" else 1.01)
    summary = f"{seen / 2**20:.1f} MiB seen for {ALLOCATION_BYTES / 2**20:.0f} MiB ({key})"
    return [Result("memory meter", PASS if ok else FAIL, summary, metrics)]


def check_tensor_meter(device: torch.device) -> list[Result]:
    """The exact CPU tensor meter against allocations of known size: what was held at entry
    plus the two tensors live together at the region's peak, to the byte."""
    import torch

    from scaling_bench.meters.tensor_memory import TensorMemory

    held = torch.ones(2**20)  # 4 MiB of float32, live at entry
    with TensorMemory([held]) as meter:
        a = torch.ones(16 * 2**20)
        b = torch.ones(8 * 2**20)
        del a, b
    expected = (1 + 16 + 8) * 2**20 * 4
    seen = meter.peak_bytes
    status = PASS if seen == expected else FAIL
    summary = f"{seen:,} bytes at the peak, {expected:,} allocated"
    return [Result("tensor meter", status, summary, {"peak_bytes": seen, "expected": expected})]


def check_energy(device: torch.device) -> list[Result]:
    """The energy counter the timed workloads read, over a busy half second."""
    import torch

    from scaling_bench.meters.energy import EnergyMeter

    a = torch.randn(1024, 1024, device=device)
    with EnergyMeter(device) as meter:
        for _ in range(5):
            meter.block_started()
            end = time.perf_counter() + 0.12
            while time.perf_counter() < end:
                a @ a
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            meter.block_ended(0.12, 1)
    metrics = meter.metrics()
    if not metrics:
        status = UNAVAILABLE if device.type == "cpu" else FAIL
        return [Result("energy counter", status, f"not available: {meter.left_out}")]
    power = metrics["power_w"]
    return [
        Result("energy counter", PASS, f"{power['value']:.1f} W busy ({power['source']})", power)
    ]


def check_nvml(device: torch.device) -> list[Result]:
    """NVML reads this device's memory, clocks, power and throttle reasons."""
    from scaling_bench.hardware import nvml as device_nvml
    from scaling_bench.hardware.peaks import nvml

    with nvml() as lib:
        h = None if lib is None else device_nvml.handle(lib, device)
        if h is None:
            return [Result("NVML", FAIL, "NVML cannot read this device")]
        used = lib.nvmlDeviceGetMemoryInfo(h).used
        state = device_nvml.device_state(lib, h)
    figures = asdict(state) | {"memory_used_bytes": used}
    missing = [k for k, v in figures.items() if v is None]
    notes = [
        f"{used / 2**30:.1f} GiB used",
        f"SM {state.sm_clock_mhz} MHz, memory {state.memory_clock_mhz} MHz",
        f"{state.temperature_c} C, {state.power_w} of {state.power_limit_w} W",
    ]
    if state.throttled:
        reasons = device_nvml.throttle_reasons(state.clock_event_bitmask or 0)
        notes.append(f"throttled: {', '.join(reasons)}")
    if missing:
        notes.append(f"missing {', '.join(missing)}")
    status = WARN if missing or state.throttled else PASS
    return [Result("NVML", status, "; ".join(notes), figures)]


def check_precisions(device: torch.device) -> list[Result]:
    """bf16 and TF32 on this GPU (TF32 from compute capability 8.0, Ampere)."""
    import torch

    major, minor = torch.cuda.get_device_capability(device)
    bf16 = torch.cuda.is_bf16_supported()
    tf32 = major >= 8
    status = PASS if bf16 and tf32 else WARN
    summary = f"bf16 {'yes' if bf16 else 'no'}, tf32 {'yes' if tf32 else 'no'} (sm_{major}{minor})"
    return [Result("bf16 / tf32", status, summary, {"bf16": bf16, "tf32": tf32})]


def check_tiny_cases(
    device: torch.device,
    families: Sequence[str] | None = None,
    workloads: Sequence[str] | None = None,
) -> list[Result]:
    """One tiny case of each family, every registered workload, through the real engine."""
    from dataclasses import replace

    from scaling_bench.config import grid
    from scaling_bench.engine.campaign import prepare
    from scaling_bench.models import FAMILY_NAMES
    from scaling_bench.report.progress import case_progress
    from scaling_bench.workloads.base import ordered

    names = [w.name for w in ordered(workloads)]
    given = {
        "device": str(device),
        "family": ",".join(families or FAMILY_NAMES),
        "workloads": ",".join(names),
        "batch_size": CHECK_BATCH_SIZE,
    }
    spec = grid.select("smoke", given)
    settings = grid.convergence_values(CHECK_CONVERGENCE, strict=False)
    spec = replace(spec, convergence=dict(spec.convergence) | settings)
    out = []
    with tempfile.TemporaryDirectory(prefix="scaling-bench-check-") as tmp:
        records = prepare(spec, Path(tmp)).run(progress=case_progress(bar=False))
    for r in records:
        if r["status"] == "ok":
            status, line = PASS, f"{', '.join(names)} in {r['duration_s']:.1f}s"
        else:  # a traceback's last line says what broke
            status = UNAVAILABLE if r["status"] == "skipped" else FAIL
            last = (r["error"] or "").strip().splitlines()[-1:]
            line = f"{r['status']}: {last[0] if last else 'no error recorded'}"
        figures = {"case_id": r["case_id"], "status": r["status"], "error": r["error"]}
        out.append(Result(f"tiny {r['case']['family']}", status, line, figures))
    return out


def checks_for(device: torch.device) -> list[Check]:
    """The checks that apply to the device, in the order they run."""
    if device.type == "cpu":
        return [
            check_device,
            check_gemm_peak,
            check_drift,
            check_bandwidth,
            check_memory_meter,
            check_tensor_meter,
            check_energy,
            check_tiny_cases,
        ]
    return [
        check_device,
        check_peak_table,
        check_gemm_peak,
        check_precisions,
        check_timer,
        check_memory_meter,
        check_nvml,
        check_energy,
        check_bandwidth,
        check_tiny_cases,
    ]


def run_checks(device: torch.device, checks: Sequence[Check]) -> list[Result]:
    """Every check's results; a check that raises fails with its error, the others still run."""
    results = []
    for check in checks:
        try:
            results.extend(check(device))
        except Exception as exc:  # a broken path is what check is for: report it, go on
            name = check.__name__.removeprefix("check_").strip("_").replace("_", " ")
            results.append(Result(name, FAIL, f"{type(exc).__name__}: {exc}".splitlines()[0]))
    return results


def print_results(results: Sequence[Result], device: torch.device) -> None:
    """The pass/fail table, readable at any width (``FittedTable``: blocks where narrow)."""
    from rich.console import Console

    from scaling_bench.report.terminal import FittedTable, TextColumn

    failed = sum(r.status == FAIL for r in results)
    verdict = f"{failed} of {len(results)} checks failed" if failed else "all checks passed"
    columns = (TextColumn("check"), TextColumn("result"), TextColumn("figures"))
    table = FittedTable(f"scaling-bench check on {device}", columns, caption=verdict)
    for r in results:
        table.add_row(r.name, r.status, r.summary)
    Console().print(table)


def add_check(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "check", help="check this machine before measuring on it; exit 1 on a failure"
    )
    p.add_argument("--device", default="auto", help="cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p.set_defaults(func=cmd_check)


def cmd_check(args: argparse.Namespace) -> int:
    """Run the checks for ``--device``, print the table, write ``--json``; 1 if any failed."""
    import torch

    from scaling_bench.config.grid import resolve_device

    device = torch.device(resolve_device(args.device))
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"--device {args.device!r}: check runs on cpu or cuda")
    results = run_checks(device, checks_for(device))
    print_results(results, device)
    if args.json:
        try:
            Path(args.json).write_text(
                json.dumps([asdict(r) for r in results], indent=2, default=str)
            )
        except OSError as exc:
            raise UserError(f"--json {args.json}: cannot write ({exc.strerror})") from None
    return 1 if any(r.status == FAIL for r in results) else 0
