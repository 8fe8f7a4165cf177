"""One run of a grid: decide what is feasible, fingerprint the machine, run, summarise.

Cases predicted not to fit in ``MEMORY_HEADROOM`` of the device's free memory are recorded as
``skipped`` with the reason instead of being attempted: an out-of-memory crash can take minutes
and, on the host, other processes with it.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from scaling_bench.config import grid
from scaling_bench.config.grid import Case, GridSpec
from scaling_bench.core.units import fmt_bytes
from scaling_bench.store.records import RESULTS_FILE, TRAIN_PEAK_NAMES, load_records

if TYPE_CHECKING:
    from scaling_bench.predict.plan import Plan

EXECUTE = "scaling_bench.engine.execute:run_case"
DISTRIBUTED_EXECUTE = "scaling_bench.engine.distributed.launch:run_case"


def predicted_peak_bytes(case: Case, p: Plan) -> int:
    """What the case's largest workload should hold: training state and activations, or weights.

    A distributed case needs one rank's share per device (FSDP shards the state, so a model too
    big for one device can fit); on a CPU, all the node's ranks share the host's memory.
    """
    from scaling_bench.engine.distributed.launch import rank_memory

    memory = rank_memory(p.train_memory, case.strategy, case.world_size)
    needs_training = set(case.workloads) & {"train", "checkpoint", "convergence"}
    need = memory.total_bytes if needs_training else memory.weights_bytes
    return need * (case.nproc_per_node if case.device == "cpu" else 1)


def check_convergence_data(case: Case, config: object) -> None:
    """The user's data mistakes (a dataset that does not fit the family or the model's config,
    sizes it cannot supply, CIFAR-10 not on disk) as one-line errors before any worker starts.

    Offline datasets are small, so they are built here and thrown away: whatever would fail in
    the worker fails now. CIFAR-10 is only looked for."""
    from scaling_bench.models.datasets import check_dataset, load_dataset

    s = case.convergence_settings()
    check_dataset(s.dataset, case.family, s.data_root, s.download)
    if s.dataset != "cifar10":
        load_dataset(
            s.dataset,
            case.family,
            config,
            train_size=s.train_size,
            heldout_size=s.heldout_size,
            label_noise=s.label_noise,
        )


def skip_reason(case: Case, p: Plan, free_bytes: int) -> str | None:
    need = predicted_peak_bytes(case, p)
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
        from scaling_bench.engine.runner import run_cases

        execute, derive = EXECUTE, None
        if self.spec.strategy:
            from scaling_bench.engine.distributed.launch import with_scaling_efficiency

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
    from scaling_bench.engine.distributed.launch import check_launch, launch_env
    from scaling_bench.hardware.peaks import (
        PEAK_FLOPS_ENV,
        fingerprint,
        measured_gemm_peak,
        peak_flops,
    )
    from scaling_bench.store.records import ensure_writable_dir

    device = grid.resolve_device(spec.device)
    check_launch(spec, device)
    ensure_writable_dir(out)
    for dtype in spec.dtypes:
        warning = grid.dtype_warning(device, dtype)
        if warning:
            print(f"scaling-bench: warning: {warning}", file=sys.stderr)
    cases = grid.build_cases(spec, device)
    free = grid.free_memory_bytes(device)
    skipped = {}
    for case in cases:
        p = case.plan()  # once per case: it traces the model on the meta device
        if "convergence" in case.workloads:
            check_convergence_data(case, p.config)
        if reason := skip_reason(case, p, free):
            skipped[case.case_id] = reason
    if device == "cpu" and not os.environ.get(PEAK_FLOPS_ENV):
        for dtype in spec.dtypes:  # here, once per run, not in every worker
            measured_gemm_peak(grid.DTYPES[dtype], refresh=True)
    else:
        for dtype in spec.dtypes:
            peak_flops(device, grid.DTYPES[dtype])  # an unknown GPU fails before any case runs
    env = fingerprint() | (launch_env(spec, device) if spec.strategy else {})
    return Campaign(spec, cases, skipped, out, resume, env=env)


#: Name under which the train workload's memory peak is measured and predicted, by device kind.
PEAK_NAMES = tuple(TRAIN_PEAK_NAMES.values())


def _peak(figures: dict) -> str:
    found = next((figures[name] for name in PEAK_NAMES if name in figures), None)
    return fmt_bytes(found["value"]) if found else ""


def _metric(name: str, fmt: str) -> Callable[[dict], str]:
    def cell(record: dict) -> str:
        metric = record["metrics"].get(name)
        return fmt.format(metric["value"]) if metric and metric["value"] is not None else ""

    return cell


#: The summary's columns: header and how to read the cell from a record. A column that is empty
#: for every record (a workload the grid did not run) is left out.
SUMMARY_COLUMNS: tuple[tuple[str, Callable[[dict], str]], ...] = (
    ("case", lambda r: r["case_id"]),
    ("params", lambda r: f"{r['params']:,}" if r["params"] else ""),
    ("status", lambda r: r["status"]),
    ("fwd samples/s", _metric("forward_samples_per_s", "{:,.0f}")),
    ("train samples/s", _metric("train_samples_per_s", "{:,.0f}")),
    ("MFU", _metric("train_mfu", "{:.1%}")),
    ("peak mem", lambda r: _peak(r["metrics"])),
    ("predicted", lambda r: _peak(r["predicted"])),
    ("ckpt bytes", _metric("checkpoint_bytes", "{:,.0f}")),
    ("final loss", _metric("final_loss_mean", "{:.3f}")),
    ("held-out", _metric("heldout_loss", "{:.3f}")),
    ("gap", _metric("generalization_gap", "{:+.3f}")),
    ("diverged", _metric("diverged_fraction", "{:.0%}")),
    ("best LR", _metric("best_lr", "{:g}")),
)


def summarize_run(out: Path, started: float, ran: list[dict]) -> None:
    """The table a person reads at the end: one row per case of the results file, and what share
    of this run's wall time (``ran``: its records) was spent inside timed regions."""
    from rich.console import Console
    from rich.table import Table

    records = load_records(out / RESULTS_FILE)
    rows = [[cell(r) for _, cell in SUMMARY_COLUMNS] for r in records]
    shown = [i for i, _ in enumerate(SUMMARY_COLUMNS) if any(row[i] for row in rows)]
    table = Table(title=f"{len(records)} cases in {out / RESULTS_FILE}")
    for i in shown:
        header = SUMMARY_COLUMNS[i][0]
        left = header in ("case", "status")
        table.add_column(header, justify="left" if left else "right", no_wrap=header == "case")
    for row in rows:
        table.add_row(*(row[i] for i in shown))
    timed = sum(v["value"] for r in ran for k, v in r["metrics"].items() if k.endswith("_timed_s"))
    console = Console(width=max(Console().width, 200))
    console.print(table)
    wall = time.perf_counter() - started
    console.print(f"wall time {wall:.1f}s, of which {timed:.1f}s ({timed / wall:.0%}) timed")
