"""A case on several processes under PyTorch's own launcher: torchrun's elastic agent.

A distributed case runs in the runner's worker like any other case; its execute function,
``run_case``, makes that worker torchrun's elastic agent (``elastic_launch``, the API the
``torchrun`` command calls) with no restarts. The agent starts ``nproc_per_node`` ranks of
``scaling_bench.engine.distributed.worker`` on this node and meets the other nodes at a c10d
rendezvous: on one node at a free local port (as ``torchrun --standalone``), on several at the
run's ``rdzv_endpoint``, where the node of rank 0 (``node_rank``) hosts the store. The case id is
the rendezvous id, so the nodes of a grid meet case by case. Every rank runs ``rank.measure_rank``
(the one engine, on a wrapped model).

On a CPU the ranks share the machine: each gets cores // nproc_per_node threads, the peak FLOP/s
is the machine's (its measured GEMM peak, handed to the ranks in their job), and the ideal
scaling efficiency against one process that had every core is 1 / nproc_per_node, not 1.

**Faults.** A rank that raises reports it and exits; one that is killed just dies. Either way the
agent stops the other ranks of its node and the case is recorded as ``oom`` or ``crashed`` with
the first failure (its traceback, or a killed rank's last output); a rank that hangs is ended
with the rest by the runner's timeout (``distributed.worker`` says how every rank dies with the
agent).
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from scaling_bench.config.case import Case
from scaling_bench.config.grid import GridSpec
from scaling_bench.config.recipe import Recipe
from scaling_bench.core.errors import UserError
from scaling_bench.engine.protocol import Job, Settings, read_json, write_job
from scaling_bench.engine.worker import clip
from scaling_bench.hardware.peaks import peak_flops

if TYPE_CHECKING:
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

#: What every rank of a measured case runs.
RANK_EXECUTE = "scaling_bench.engine.distributed.rank:measure_rank"
RESULT_FILE = "result.json"
LOG_DIR = "torchelastic"


def backend_for(device: str) -> str:
    return "nccl" if device.startswith("cuda") else "gloo"


def threads_per_rank(nproc_per_node: int) -> int:
    """The rank's share of this machine's cores, so that ranks do not oversubscribe them."""
    return int(os.environ.get("OMP_NUM_THREADS") or 0) or max(
        1, len(os.sched_getaffinity(0)) // nproc_per_node
    )


def check_launch(spec: GridSpec, device: str, settings: Settings) -> None:
    """Refuse a launch that cannot work, before the first worker starts."""
    strategy, nproc, nnodes = (spec.value(k) for k in ("strategy", "nproc_per_node", "nnodes"))
    if strategy is None:
        if nproc * nnodes > 1:
            raise UserError("more than one process needs --strategy ddp or fsdp")
        return
    if nnodes > 1 and settings.rdzv_endpoint is None:
        raise UserError(f"--nnodes {nnodes} needs --rdzv-endpoint HOST:PORT of node rank 0")
    if not 0 <= settings.node_rank < nnodes:
        raise UserError(f"--node-rank {settings.node_rank} is not in 0..{nnodes - 1}")
    if device.startswith("cuda") and nproc > torch.cuda.device_count():
        raise UserError(f"--nproc-per-node {nproc}: only {torch.cuda.device_count()} GPU(s) here")


def launch_env(spec: GridSpec, device: str) -> dict[str, Any]:
    """What the fingerprint gains in a distributed run."""
    nproc, nnodes = spec.value("nproc_per_node"), spec.value("nnodes")
    return {
        "world_size": nproc * nnodes,
        "nnodes": nnodes,
        "nproc_per_node": nproc,
        "backend": backend_for(device),
        "threads_per_rank": threads_per_rank(nproc),
    }


def run_case(
    case: dict[str, Any], settings: Settings, execute: str = RANK_EXECUTE
) -> dict[str, Any]:
    """The worker's entry point for a distributed case: launch the ranks, return their fields.

    ``execute`` ("module:function") is what every rank runs on the case (tests pass faults).
    """
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs, Std
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    rank_settings = replace(settings, threads=threads_per_rank(case["nproc_per_node"]))
    if case["device"] == "cpu" and settings.peak_flops is None:
        # the machine's peak (cached by this run), not one a rank would measure on its few cores
        prec = Recipe.of(Case.from_dict(case)).precision
        machine_peak, _ = peak_flops("cpu", prec.compute_dtype)
        rank_settings = replace(rank_settings, peak_flops=machine_peak)
    with tempfile.TemporaryDirectory(prefix="scaling-bench-ranks-") as tmp:
        folder = Path(tmp)
        job = Job(execute, case, os.getpid(), rank_settings, folder=tmp)
        job_path = folder / "job.json"
        write_job(job_path, job)
        endpoint = settings.rdzv_endpoint
        config = LaunchConfig(
            min_nodes=case["nnodes"],
            max_nodes=case["nnodes"],
            nproc_per_node=case["nproc_per_node"],
            run_id=case["case_id"],
            rdzv_backend="c10d",
            rdzv_endpoint=endpoint or "localhost:0",
            rdzv_configs={"is_host": settings.node_rank == 0} if endpoint else {},
            max_restarts=0,
            # ranks' output to the console (the runner's log) and to files, for a crash record
            logs_specs=DefaultLogsSpecs(log_dir=str(folder / LOG_DIR), tee=Std.ALL),
        )
        args = ("-u", "-m", "scaling_bench.engine.distributed.worker", str(job_path))
        try:
            elastic_launch(config, sys.executable)(*args)
        except ChildFailedError as exc:
            return _failure(folder, exc, case["nproc_per_node"] * case["nnodes"])
        return read_json(folder / RESULT_FILE)


def _failure(folder: Path, exc: ChildFailedError, world_size: int) -> dict[str, Any]:
    """``oom`` or ``crashed``, with the first failure's traceback (or, for a rank that could not
    report, its last output) and how every failed rank ended.

    A rank killed by a signal leaves no report and is the likely cause (its peers then fail in
    their collectives); otherwise the rank that reported first is. It is named first.
    """
    reports = {int(p.stem.removeprefix("rank")): read_json(p) for p in folder.glob("rank*.json")}
    status = "oom" if any(r["status"] == "oom" for r in reports.values()) else "crashed"

    def cause_order(item: tuple[int, Any]) -> tuple[bool, float]:
        rank, failure = item
        return failure.exitcode >= 0, reports.get(rank, {}).get("time", math.inf)

    failures = sorted(exc.failures.items(), key=cause_order)
    ends = []
    for rank, failure in failures:
        code = failure.exitcode
        how = f"killed by {failure.signal_name()}" if code < 0 else f"exited with code {code}"
        ends.append(f"rank {rank} of {world_size} (pid {failure.pid}) {how}")
    summary = "; ".join(ends)
    first_rank, first = failures[0]
    if first_rank in reports:
        detail = reports[first_rank]["error"]
    else:  # torchelastic's layout: <log_dir>/<run id>_<suffix>/attempt_0/<local rank>/stderr.log
        logs = list(Path(folder, LOG_DIR).glob(f"*/attempt_0/{first.local_rank}/stderr.log"))
        detail = logs[0].read_text(encoding="utf-8", errors="replace") if logs else ""
    return {"status": status, "error": clip(f"{detail.strip()}\n{summary}".strip())}
