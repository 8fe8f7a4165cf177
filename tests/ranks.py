"""What the ranks of a distributed test case do: ``run`` is the execute function test grids use.

In the runner's worker, ``run`` launches the case's ranks through ``distributed.run_case``; each
rank then calls the function of this module that ``case["fault"]`` names, with the process group
up. Importable as ``ranks`` because pytest puts this folder on ``sys.path``, which the worker and
its ranks inherit through the runner's PYTHONPATH.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

EXECUTE = "ranks:run"
#: The training the loss test compares: tiny MLP, a global batch of 16, a few AdamW steps.
LOSS_SIZE, GLOBAL_BATCH, STEPS = 1e4, 16, 5


@dataclass(frozen=True)
class Case:
    """A two-rank case on the CPU whose ranks do ``fault``; ``marker`` is a folder for pid files."""

    case_id: str
    fault: str
    marker: str = ""
    strategy: str = "ddp"

    def to_dict(self) -> dict[str, Any]:
        return {
            "case_id": self.case_id,
            "family": "mlp",
            "target_params": LOSS_SIZE,
            "fault": self.fault,
            "marker": self.marker,
            "strategy": self.strategy,
            "nproc_per_node": 2,
            "nnodes": 1,
            "device": "cpu",
            "precision": "fp32",
        }


def _leave_pid(case: dict) -> int:
    rank = dist.get_rank()
    Path(case["marker"], f"rank{rank}.pid").write_text(str(os.getpid()))
    return rank


def kill_rank_1(case: dict, settings: Any = None) -> dict:
    """Rank 1 is killed while rank 0 waits for it in a collective."""
    if _leave_pid(case) == 1:
        print("last words of rank 1", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    dist.barrier()
    return {}


def oom_on_rank_1(case: dict, settings: Any = None) -> dict:
    if _leave_pid(case) == 1:
        raise MemoryError("no room for the activations on rank 1")
    dist.barrier()
    return {}


def hang_rank_1(case: dict, settings: Any = None) -> dict:
    if _leave_pid(case) == 1:
        while True:
            time.sleep(1)
    dist.barrier()
    return {}


def train_losses(strategy: str | None) -> list[float]:
    """Losses of ``STEPS`` training steps at the global batch, this process's share of it
    trained under ``strategy`` (None: one process, the whole batch), averaged over ranks."""
    from scaling_bench.config.case import Case as BenchCase
    from scaling_bench.core.optimizers import make_optimizer
    from scaling_bench.engine.distributed.wrap import wrap
    from scaling_bench.workloads.setup import CaseSetup
    from scaling_bench.workloads.steps import train_step

    setup = CaseSetup.build(BenchCase("mlp", LOSS_SIZE, batch_size=GLOBAL_BATCH))  # seeded
    rank, world = (dist.get_rank(), dist.get_world_size()) if strategy else (0, 1)
    share = slice(rank * GLOBAL_BATCH // world, (rank + 1) * GLOBAL_BATCH // world)
    model = wrap(setup.model, strategy, setup.device) if strategy else setup.model
    step = train_step(
        model,
        make_optimizer("adamw", model.parameters()),
        (setup.batch[0][share], setup.batch[1][share]),
    )
    losses = torch.stack([step().detach() for _ in range(STEPS)])
    if strategy:
        dist.all_reduce(losses)  # equal shares: their mean is the global batch's mean loss
    return (losses / world).tolist()


def losses(case: dict, settings: Any = None) -> dict:
    losses = train_losses(case["strategy"])
    return {"metrics": {"losses": {"value": losses[-1], "samples": losses, "unit": "nats"}}}


def run(case: dict, settings: Any) -> dict:
    from scaling_bench.engine.distributed.launch import run_case

    return run_case(case, settings, execute=f"ranks:{case['fault']}")
