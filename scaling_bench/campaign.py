"""One run of a grid: decide what is feasible, fingerprint the machine, run, summarise.

Cases predicted not to fit in ``MEMORY_HEADROOM`` of the device's free memory are recorded as
``skipped`` with the reason instead of being attempted: an out-of-memory crash can take minutes
and, on the host, other processes with it.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from scaling_bench import grid
from scaling_bench.grid import Case, GridSpec
from scaling_bench.results import RESULTS_FILE, load_records
from scaling_bench.units import fmt_bytes

EXECUTE = "scaling_bench.workloads.execute:run_case"
DISTRIBUTED_EXECUTE = "scaling_bench.distributed:run_case"


def predicted_peak_bytes(case: Case) -> int:
    """What the case's largest workload should hold: training state and activations, or weights.

    A distributed case needs one rank's share per device (FSDP shards the state, so a model too
    big for one device can fit); on a CPU, all the node's ranks share the host's memory.
    """
    from scaling_bench.distributed import rank_memory

    memory = rank_memory(case.plan().train_memory, case.strategy, case.world_size)
    needs_training = set(case.workloads) & {"train", "checkpoint", "convergence"}
    need = memory.total_bytes if needs_training else memory.weights_bytes
    return need * (case.nproc_per_node if case.device == "cpu" else 1)


def skip_reason(case: Case, free_bytes: int) -> str | None:
    need = predicted_peak_bytes(case)
    allowed = grid.MEMORY_HEADROOM * free_bytes
    if need > allowed:
        return (
            f"predicted to need {fmt_bytes(need)}, more than {grid.MEMORY_HEADROOM:.0%} of the "
            f"{fmt_bytes(free_bytes)} free on {case.device}"
        )
    return None


@dataclass
class Campaign:
    spec: GridSpec
    cases: list[Case]
    skipped: dict[str, str]
    out: Path
    resume: bool
    env: dict = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    def run(self, progress: bool = True) -> list[dict]:
        from scaling_bench.runner import run_cases

        execute, derive = EXECUTE, None
        if self.spec.strategy:
            from scaling_bench.distributed import with_scaling_efficiency

            execute = DISTRIBUTED_EXECUTE
            derive = with_scaling_efficiency(load_records(self.out / RESULTS_FILE))
        return run_cases(
            self.cases,
            execute,
            self.out,
            timeout_s=self.spec.timeout_s,
            env=self.env,
            resume=self.resume,
            progress=progress,
            skipped=self.skipped,
            derive=derive,
        )


def prepare(spec: GridSpec, out: Path, resume: bool = False) -> Campaign:
    """Everything that can fail on bad input fails here, before the first worker starts."""
    from scaling_bench.distributed import check_launch, launch_env
    from scaling_bench.hardware import PEAK_FLOPS_ENV, fingerprint, measured_gemm_peak, peak_flops
    from scaling_bench.results import ensure_writable_dir

    device = grid.resolve_device(spec.device)
    check_launch(spec, device)
    ensure_writable_dir(out)
    for dtype in spec.dtypes:
        warning = grid.dtype_warning(device, dtype)
        if warning:
            print(f"scaling-bench: warning: {warning}", file=sys.stderr)
    cases = grid.build_cases(spec, device)
    free = grid.free_memory_bytes(device)
    skipped = {c.case_id: reason for c in cases if (reason := skip_reason(c, free))}
    if device == "cpu" and not os.environ.get(PEAK_FLOPS_ENV):
        for dtype in spec.dtypes:  # here, once per run, not in every worker
            measured_gemm_peak(grid.DTYPES[dtype], refresh=True)
    else:
        for dtype in spec.dtypes:
            peak_flops(device, grid.DTYPES[dtype])  # an unknown GPU fails before any case runs
    env = fingerprint() | (launch_env(spec, device) if spec.strategy else {})
    return Campaign(spec, cases, skipped, out, resume, env=env)


def summarize_run(out: Path, started: float, ran: list[dict]) -> None:
    """The table a person reads at the end: one row per case of the results file, and what share
    of this run's wall time (``ran``: its records) was spent inside timed regions."""
    from rich.console import Console
    from rich.table import Table

    records = load_records(out / RESULTS_FILE)
    table = Table(title=f"{len(records)} cases in {out / RESULTS_FILE}")
    for name in ("case", "params", "status", "fwd samples/s", "train samples/s", "MFU"):
        table.add_column(name, justify="left" if name in ("case", "status") else "right")
    for name in ("peak mem", "predicted", "ckpt"):
        table.add_column(name, justify="right")
    timed = sum(v["value"] for r in ran for k, v in r["metrics"].items() if k.endswith("_timed_s"))
    for r in records:
        m, pr = r["metrics"], r["predicted"]
        peak = m.get("train_peak_gpu_allocated_bytes") or m.get(
            "train_peak_cpu_rss_above_baseline_bytes"
        )
        predicted = pr.get("train_peak_gpu_allocated_bytes") or pr.get(
            "train_peak_cpu_rss_above_baseline_bytes"
        )
        table.add_row(
            r["case_id"],
            f"{r['params']:,}" if r["params"] else "",
            r["status"],
            _value(m, "forward_samples_per_s", "{:,.0f}"),
            _value(m, "train_samples_per_s", "{:,.0f}"),
            _value(m, "train_mfu", "{:.1%}"),
            fmt_bytes(peak["value"]) if peak else "",
            fmt_bytes(predicted["value"]) if predicted else "",
            _value(m, "checkpoint_bytes", "{:,.0f}"),
        )
    console = Console(width=max(Console().width, 150))
    console.print(table)
    wall = time.perf_counter() - started
    console.print(f"wall time {wall:.1f}s, of which {timed:.1f}s ({timed / wall:.0%}) timed")


def _value(metrics: dict, name: str, fmt: str) -> str:
    return fmt.format(metrics[name]["value"]) if name in metrics else ""
