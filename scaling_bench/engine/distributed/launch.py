"""A case on several processes under PyTorch's own engine: torchrun launch, DDP / FSDP, aggregation.

**Launch.** A distributed case runs in the runner's worker like any other case; its execute
function, ``run_case``, makes that worker torchrun's elastic agent (``elastic_launch``, the API
the ``torchrun`` command calls) with no restarts. The agent starts ``nproc_per_node`` ranks of
``scaling_bench.engine.distributed.worker`` on this node and meets the other nodes at a c10d
rendezvous:
on one node at a free local port (as ``torchrun --standalone``), on several at
``$SCALING_BENCH_RDZV_ENDPOINT``, where the node of rank 0 (``$SCALING_BENCH_NODE_RANK``) hosts
the store. The case id is the rendezvous id, so the nodes of a grid meet case by case.

**Work.** Weak scaling: every rank trains on the case's batch, so the global batch is world size ×
batch size, and every rank's batch is the same synthetic one (values do not change the cost). DDP
keeps a replica per rank and all-reduces gradients in buckets that the gradients are views of, so
there is no second copy of them. FSDP (FSDP2's ``fully_shard``) shards parameters, gradients and
optimizer state over all ranks, with one unit per block of the model's repeated-layer containers;
a unit's parameters are gathered only while it runs, and the model is built on the meta device so
that no rank ever holds all of it. Forward passes run under ``no_grad``. On a CPU the ranks share
the machine: each gets cores // nproc_per_node threads (``OMP_NUM_THREADS``, unless set), the
peak FLOP/s is the machine's (its measured GEMM peak, handed to the ranks), and the ideal scaling
efficiency against one process that had every core is 1 / nproc_per_node, not 1.

**Measurement.** Each rank measures with the project's meters, as one process does. Timing stops
by joint decision only: a rank that stopped stepping would leave its peers waiting in a collective
forever. The ranks then exchange their metrics (``all_gather_object``) and every rank aggregates
them the same way: for each metric the rank with the largest value gives it, with every rank's
value beside it (``per_rank``). So the step time is the slowest rank's, from which come the global
samples/s (world × batch / step), the per-rank samples/s and MFU (global FLOP/s over the devices'
peak); memory peaks are the largest rank's. Checkpoints go through ``torch.distributed.checkpoint``
(DCP, each rank writing its own shard, into one folder every rank sees): bytes on disk, save and
load seconds, and a round trip back into the model.

**Faults.** A rank that raises reports it and exits; one that is killed just dies. Either way the
agent stops the other ranks of its node and the case is recorded as ``oom`` or ``crashed`` with
the first failure (its traceback, or a killed rank's last output); a rank that hangs is ended
with the rest by the runner's timeout (``distributed_worker`` says how every rank dies with the
agent).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor

from scaling_bench.config.grid import STRATEGIES, Case, GridSpec
from scaling_bench.core.dtypes import parse_dtype
from scaling_bench.core.errors import UserError
from scaling_bench.core.stats import scaled, single, summarize
from scaling_bench.engine.distributed.worker import RESULT_FILE, backend_for, rank_device
from scaling_bench.engine.execute import (
    ORDER,
    CaseSetup,
    case_peak_flops,
    predicted_metrics,
    warm_up_runtime,
)
from scaling_bench.engine.worker import clip
from scaling_bench.hardware.peaks import PEAK_FLOPS_ENV, peak_flops
from scaling_bench.meters.memory import PeakMemory, baseline_rss
from scaling_bench.meters.timing import measure
from scaling_bench.models import family
from scaling_bench.predict.plan import Plan, TrainMemory
from scaling_bench.workloads.checkpoint import RoundTripError
from scaling_bench.workloads.timed import derived_metrics
from scaling_bench.workloads.train import make_optimizer

if TYPE_CHECKING:
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

NODE_RANK_ENV = "SCALING_BENCH_NODE_RANK"
RDZV_ENDPOINT_ENV = "SCALING_BENCH_RDZV_ENDPOINT"
#: What every rank of a measured case runs (``distributed_worker`` calls it on the case dict).
RANK_EXECUTE = "scaling_bench.engine.distributed.launch:measure_rank"
_DCP_REPEATS = 3
LOG_DIR = "torchelastic"


def threads_per_rank(nproc_per_node: int) -> int:
    """The rank's share of this machine's cores, so that ranks do not oversubscribe them."""
    return int(os.environ.get("OMP_NUM_THREADS") or 0) or max(
        1, len(os.sched_getaffinity(0)) // nproc_per_node
    )


def rendezvous() -> tuple[int, str | None]:
    """This node's rank and the rendezvous endpoint (``HOST:PORT``), as the CLI or a batch script
    sets them in the environment: they describe the machine, not the case."""
    text = os.environ.get(NODE_RANK_ENV, "0")
    try:
        node_rank = int(text)
    except ValueError:
        raise UserError(f"--node-rank {text!r} is not a whole number") from None
    return node_rank, os.environ.get(RDZV_ENDPOINT_ENV) or None


def check_launch(spec: GridSpec, device: str) -> None:
    """Refuse a launch that cannot work, before the first worker starts."""
    if spec.strategy is not None and spec.strategy not in STRATEGIES:
        raise UserError(f"unknown strategy {spec.strategy!r}; choose from {', '.join(STRATEGIES)}")
    if spec.nproc_per_node < 1 or spec.nnodes < 1:
        raise UserError("--nproc-per-node and --nnodes must be at least 1")
    if spec.strategy is None:
        if spec.nproc_per_node * spec.nnodes > 1:
            raise UserError("more than one process needs --strategy ddp or fsdp")
        return
    if "convergence" in spec.workloads:
        raise UserError(
            "the convergence workload runs on one process; leave it out with --strategy"
        )
    node_rank, endpoint = rendezvous()
    if spec.nnodes > 1 and endpoint is None:
        raise UserError(f"--nnodes {spec.nnodes} needs --rdzv-endpoint HOST:PORT of node rank 0")
    if not 0 <= node_rank < spec.nnodes:
        raise UserError(f"--node-rank {node_rank} is not in 0..{spec.nnodes - 1}")
    if device.startswith("cuda") and spec.nproc_per_node > torch.cuda.device_count():
        raise UserError(
            f"--nproc-per-node {spec.nproc_per_node}: only {torch.cuda.device_count()} GPU(s) here"
        )


def launch_env(spec: GridSpec, device: str) -> dict[str, Any]:
    """What the fingerprint gains in a distributed run."""
    return {
        "world_size": spec.nproc_per_node * spec.nnodes,
        "nnodes": spec.nnodes,
        "nproc_per_node": spec.nproc_per_node,
        "backend": backend_for(device),
        "threads_per_rank": threads_per_rank(spec.nproc_per_node),
    }


def rank_memory(memory: TrainMemory, strategy: str | None, world_size: int) -> TrainMemory:
    """One rank's share of the training memory: FSDP divides the state by the world, DDP does not.

    Activations stay whole: each rank runs the case's batch. FSDP's gathered units come on top.
    """
    if strategy != "fsdp":
        return memory
    return replace(
        memory,
        weights_bytes=math.ceil(memory.weights_bytes / world_size),
        gradients_bytes=math.ceil(memory.gradients_bytes / world_size),
        optimizer_state_bytes=math.ceil(memory.optimizer_state_bytes / world_size),
    )


# ---- launch: inside the runner's worker, which becomes the node's agent ----


def run_case(case: dict[str, Any], execute: str = RANK_EXECUTE) -> dict[str, Any]:
    """The worker's entry point for a distributed case: launch the ranks, return their fields.

    ``execute`` ("module:function") is what every rank runs on the case (tests pass faults).
    """
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs, Std
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    node_rank, endpoint = rendezvous()
    os.environ["OMP_NUM_THREADS"] = str(threads_per_rank(case["nproc_per_node"]))
    if case["device"] == "cpu" and not os.environ.get(PEAK_FLOPS_ENV):
        # the machine's peak (cached by this run), not one a rank would measure on its few cores
        machine_peak, _ = peak_flops("cpu", parse_dtype(case["dtype"]))
        os.environ[PEAK_FLOPS_ENV] = repr(machine_peak)
    with tempfile.TemporaryDirectory(prefix="scaling-bench-ranks-") as tmp:
        folder = Path(tmp)
        job = {"execute": execute, "case": case, "agent_pid": os.getpid(), "folder": tmp}
        job_path = folder / "job.json"
        job_path.write_text(json.dumps(job), encoding="utf-8")
        config = LaunchConfig(
            min_nodes=case["nnodes"],
            max_nodes=case["nnodes"],
            nproc_per_node=case["nproc_per_node"],
            run_id=case["case_id"],
            rdzv_backend="c10d",
            rdzv_endpoint=endpoint or "localhost:0",
            rdzv_configs={"is_host": node_rank == 0} if endpoint else {},
            max_restarts=0,
            # ranks' output to the console (the runner's log) and to files, for a crash record
            logs_specs=DefaultLogsSpecs(log_dir=str(folder / LOG_DIR), tee=Std.ALL),
        )
        args = ("-u", "-m", "scaling_bench.engine.distributed.worker", str(job_path))
        try:
            elastic_launch(config, sys.executable)(*args)
        except ChildFailedError as exc:
            return _failure(folder, exc, case["nproc_per_node"] * case["nnodes"])
        return json.loads((folder / RESULT_FILE).read_text(encoding="utf-8"))


def _failure(folder: Path, exc: ChildFailedError, world_size: int) -> dict[str, Any]:
    """``oom`` or ``crashed``, with the first failure's traceback (or, for a rank that could not
    report, its last output) and how every failed rank ended.

    A rank killed by a signal leaves no report and is the likely cause (its peers then fail in
    their collectives); otherwise the rank that reported first is. It is named first.
    """
    reports = {
        int(p.stem.removeprefix("rank")): json.loads(p.read_text(encoding="utf-8"))
        for p in folder.glob("rank*.json")
    }
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


# ---- wrapping ----


def shard_units(model: nn.Module) -> list[nn.Module]:
    """The outermost blocks of the model's repeated-layer containers (``Sequential``,
    ``ModuleList``) that hold parameters: a transformer block, a ResNet block, an MLP's layer.
    What is outside them (embeddings, heads) stays with the root unit."""
    units: list[nn.Module] = []

    def visit(module: nn.Module) -> None:
        container = isinstance(module, nn.Sequential | nn.ModuleList)
        for child in module.children():
            if container and any(True for _ in child.parameters()):
                units.append(child)
            else:
                visit(child)

    visit(model)
    return units


def wrap(model: nn.Module, strategy: str, device: torch.device) -> nn.Module:
    """The model under DDP, or sharded in place by FSDP2 (a new optimizer must follow)."""
    if strategy == "ddp":
        ids = [device] if device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(
            model, device_ids=ids, gradient_as_bucket_view=True
        )
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    for unit in shard_units(model):
        fully_shard(unit, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


# ---- measurement: on every rank ----


def measure_rank(case_dict: dict[str, Any]) -> dict[str, Any]:
    """Every rank's execute function: measure this rank, gather all ranks, aggregate.

    Returns the same record fields on every rank.
    """
    case = Case.from_dict(case_dict)
    device = torch.device(rank_device(case.device))
    case = replace(case, device=str(device))
    _warm_up(device, case.strategy)
    baseline = baseline_rss()
    setup = _set_up(case, device)
    peak, source = case_peak_flops(case)
    metrics: dict[str, dict] = {"peak_flops_per_s": single(peak, "FLOP/s") | {"source": source}}
    for workload in ORDER:
        if workload == "checkpoint" and workload in case.workloads:
            metrics |= _dcp_metrics(setup)
        elif workload in case.workloads:
            metrics |= _timed_metrics(setup, workload, baseline)
    if setup.optimizer.state:
        metrics |= _state_metrics(setup.model, setup.optimizer)
    per_rank: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(per_rank, metrics)
    devices = case.world_size if device.type == "cuda" else case.nnodes
    return {
        "params": setup.plan.params,
        "config": asdict(setup.plan.config),
        "metrics": aggregate(per_rank, setup.plan, devices),
        "predicted": _predicted(setup.plan, case, device),
    }


def _set_up(case: Case, device: torch.device) -> CaseSetup:
    """The case's model, wrapped, with its batch and a fresh optimizer on this rank.

    FSDP builds the model on the meta device, shards it there and allocates only this rank's
    shards, so a model too big for one device never exists whole on one. Its values then come
    from each layer's ``reset_parameters`` (N(0, 0.02) where a layer has none): not one process's
    initial values, but the same costs.
    """
    if case.strategy != "fsdp":
        built = CaseSetup.build(case)
        model = wrap(built.model, case.strategy, device)
    else:
        built = CaseSetup.build(replace(case, device="meta"))
        p = built.plan
        # drawn before the shards are initialised: their random draws may differ between ranks
        batch = family(case.family).sample_batch(
            p.config, p.batch_size, device=device, dtype=parse_dtype(case.dtype)
        )
        built = replace(built, case=case, device=device, batch=batch)
        model = wrap(built.model, case.strategy, device)
        model.to_empty(device=device)
        with torch.no_grad():
            for param in model.parameters():
                param.normal_(std=0.02)
            for module in model.modules():
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()
    optimizer = make_optimizer(case.optimizer, model.parameters())
    return replace(built, model=model, optimizer=optimizer)


def _warm_up(device: torch.device, strategy: str) -> None:
    """``warm_up_runtime`` for a wrapped model: the first collectives and the wrapper's one-time
    costs are paid before the RSS baseline, as the runtime's are."""
    warm_up_runtime(device)
    model = wrap(nn.Sequential(nn.Linear(8, 8, device=device)), strategy, device)
    optimizer = make_optimizer("adamw", model.parameters())
    model(torch.ones(2, 8, device=device)).sum().backward()
    optimizer.step()


def _agree(values: list[float], op: str) -> list[float]:
    """``values`` reduced (``"min"`` or ``"max"``) over all ranks: how ranks decide together."""
    on = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    tensor = torch.tensor(values, dtype=torch.float64, device=on)
    dist.all_reduce(tensor, op={"min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}[op])
    return tensor.tolist()


def _timed_metrics(setup: CaseSetup, workload: str, baseline: int) -> dict[str, dict]:
    """This rank's step time, cold start and memory peaks for ``forward`` or ``train``."""
    step = _forward(setup) if workload == "forward" else setup.step(workload)
    with PeakMemory(setup.device, baseline_rss_bytes=baseline) as memory:
        timing = measure(step, setup.device, budget_s=setup.case.budget_s, agree=_agree)
    return (
        timing.metrics(workload)
        | {f"{workload}_timed_s": single(timing.timed_s, "s")}
        | {f"{workload}_{name}": m for name, m in memory.metrics().items()}
    )


def _forward(setup: CaseSetup) -> Callable[[], object]:
    """Inference under ``no_grad``: FSDP2 reuses its gather buffers in training, and a buffer made
    under ``inference_mode`` cannot be written outside it."""
    setup.model.eval()

    def step() -> object:
        with torch.no_grad():
            return setup.model(setup.batch[0])

    return step


def _local(tensor: torch.Tensor) -> torch.Tensor:
    """The part of a tensor that lives on this rank (an FSDP shard, or all of it)."""
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def _local_bytes(tensors: Iterable[torch.Tensor]) -> int:
    return sum(_local(t).numel() * t.element_size() for t in tensors)


def _state_metrics(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, dict]:
    """Bytes of weights, gradients and optimizer state this rank holds (Adam's scalar step
    counters left out, as in the prediction)."""
    params = list(model.parameters())
    state = [
        t for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t) and t.dim()
    ]
    held = {
        "weights": params,
        "gradients": [p.grad for p in params if p.grad is not None],
        "optimizer_state": state,
    }
    return {f"train_{k}_bytes_per_rank": single(_local_bytes(v), "bytes") for k, v in held.items()}


def _shared_folder() -> Path:
    """A fresh folder made by rank 0 for all ranks: DCP writes one checkpoint from every rank."""
    made = [tempfile.mkdtemp(prefix="scaling-bench-dcp-") if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(made, src=0)
    folder = Path(made[0])
    if not folder.is_dir():
        raise UserError(
            f"checkpoint folder {folder} is not visible on this node: DCP needs a folder every "
            "node sees (set TMPDIR to a shared one) or leave out the checkpoint workload"
        )
    return folder


def _emptied(folder: Path) -> None:
    """Remove the last checkpoint before the next save writes afresh, as a real save does."""
    dist.barrier()
    if dist.get_rank() == 0:
        shutil.rmtree(folder)
        folder.mkdir()
    dist.barrier()


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _dcp_metrics(setup: CaseSetup) -> dict[str, dict]:
    """DCP checkpoint of the (sharded) model: bytes, save and load seconds, and with the optimizer.

    Each load goes into fresh tensors, which are then set into the model and must read back
    exactly as saved; a difference raises ``RoundTripError``. Saves are timed up to DCP's fsync.
    """
    import torch.distributed.checkpoint as dcp  # a second's import, only where it is used
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        get_optimizer_state_dict,
        set_model_state_dict,
    )

    if not setup.optimizer.state:
        setup.step("train")()  # the optimizer's state exists only after a step
    model, device = setup.model, setup.device
    folder = _shared_folder()
    try:
        state = get_model_state_dict(model)
        saved = {name: _local(t).clone() for name, t in state.items()}
        save_s: list[float] = []
        load_s: list[float] = []
        deadline = time.perf_counter() + 4 * setup.case.budget_s
        while True:
            _emptied(folder)
            start = time.perf_counter()
            dcp.save(state, checkpoint_id=folder)
            save_s.append(time.perf_counter() - start)
            fresh = {name: torch.zeros_like(t) for name, t in state.items()}
            start = time.perf_counter()
            dcp.load(fresh, checkpoint_id=folder)
            _synchronize(device)
            load_s.append(time.perf_counter() - start)
            set_model_state_dict(model, fresh)
            for name, t in get_model_state_dict(model).items():
                if not torch.equal(_local(t), saved[name]):
                    raise RoundTripError(f"DCP checkpoint: {name!r} differs after save and load")
            del fresh
            more = len(save_s) < _DCP_REPEATS and time.perf_counter() < deadline
            if not _agree([more], "min")[0]:
                break
        nbytes = _folder_bytes(folder)
        _emptied(folder)
        optimizer_state = get_optimizer_state_dict(model, setup.optimizer)
        dcp.save({"model": state, "optimizer": optimizer_state}, checkpoint_id=folder)
        with_optimizer = _folder_bytes(folder)
        dist.barrier()  # every rank is done with the files
    finally:
        if dist.get_rank() == 0:
            shutil.rmtree(folder, ignore_errors=True)
    return {
        "dcp_bytes": single(nbytes, "bytes"),
        "dcp_bytes_with_optimizer": single(with_optimizer, "bytes"),
        "dcp_save_s": summarize(save_s, "s"),
        "dcp_load_s": summarize(load_s, "s"),
    }


# ---- aggregation ----


def aggregate(per_rank: list[dict[str, dict]], plan: Plan, devices: int) -> dict[str, dict]:
    """One record's metrics from every rank's: the largest rank's metric with ``per_rank`` beside
    it, then global throughput from the slowest step and MFU over ``devices`` peaks."""
    world_size = len(per_rank)
    metrics: dict[str, dict] = {}
    for name in per_rank[0]:
        values = [m[name]["value"] for m in per_rank]
        top = max(range(world_size), key=values.__getitem__)
        metrics[name] = per_rank[top][name] | {"per_rank": values}
    peak = metrics["peak_flops_per_s"]["value"]
    for workload, flops_per_sample in (
        ("forward", plan.forward_flops_per_sample),
        ("train", plan.train_flops_per_sample),
    ):
        step = metrics.get(f"{workload}_step_s")
        if step is None:
            continue
        metrics |= derived_metrics(
            workload,
            step,
            batch_size=plan.batch_size * world_size,
            flops_per_sample=flops_per_sample,
            tokens_per_sample=plan.tokens_per_sample,
            peak_flops=peak,
            devices=devices,
        )
        metrics[f"{workload}_samples_per_s_per_rank"] = scaled(
            step, plan.batch_size, "samples/s", invert=True
        )
    if "dcp_bytes" in metrics:
        nbytes = metrics["dcp_bytes"]["value"]
        for op in ("save", "load"):
            seconds = metrics[f"dcp_{op}_s"]
            metrics[f"dcp_{op}_bytes_per_s"] = scaled(seconds, nbytes, "bytes/s", invert=True)
    return metrics


def _predicted(plan: Plan, case: Case, device: torch.device) -> dict[str, dict]:
    """One process's prediction, with one rank's share beside it: ``train_*_bytes_per_rank`` and
    the peak under the measured peak's name (the largest rank's)."""
    share = rank_memory(plan.train_memory, case.strategy, case.world_size)
    predicted = predicted_metrics(plan, device)
    per_rank = predicted_metrics(replace(plan, train_memory=share), device)
    predicted |= {name: m for name, m in per_rank.items() if "_peak_" in name}
    for name in ("weights", "gradients", "optimizer_state"):
        predicted[f"train_{name}_bytes_per_rank"] = per_rank[f"train_{name}_bytes"]
    return predicted


def with_scaling_efficiency(
    records: list[dict[str, Any]],
) -> Callable[[Case, dict[str, Any]], dict[str, Any]]:
    """A runner ``derive`` hook: add ``{workload}_scaling_efficiency`` to a distributed case =
    global samples/s ÷ (world size × samples/s of the same case on one process), where ``records``
    hold that case ``ok`` (its id is this case's without the distributed suffix)."""
    single_process = {r["case_id"]: r for r in records if r["status"] == "ok"}

    def derive(case: Case, fields: dict[str, Any]) -> dict[str, Any]:
        base_id = replace(case, nproc_per_node=1, nnodes=1, strategy=None).case_id
        base = single_process.get(base_id)
        if base is None or fields.get("status", "ok") != "ok":
            return fields
        metrics = dict(fields["metrics"])
        for workload in ("forward", "train"):
            mine = metrics.get(f"{workload}_samples_per_s")
            theirs = base["metrics"].get(f"{workload}_samples_per_s")
            if mine and theirs:
                ideal = case.world_size * theirs["value"]
                efficiency = scaled(mine, 1 / ideal, "fraction")
                metrics[f"{workload}_scaling_efficiency"] = efficiency | {"reference": base_id}
        return fields | {"metrics": metrics}

    return derive
