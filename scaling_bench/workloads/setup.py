"""A case's model, batch and optimizer, built once and shared by its workloads.

Building costs seconds at large sizes, so the workloads of a case share one model; the pytest and
asv front-ends keep one ``CaseSetup`` per process for the same reason.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from scaling_bench.config.case import Case
from scaling_bench.core.dtypes import parse_dtype
from scaling_bench.core.optimizers import make_optimizer
from scaling_bench.models import family
from scaling_bench.predict.plan import Plan, plan_for
from scaling_bench.workloads.steps import train_step


@dataclass
class CaseSetup:
    case: Case
    plan: Plan
    device: torch.device
    model: nn.Module
    batch: tuple[torch.Tensor, torch.Tensor]
    optimizer: torch.optim.Optimizer

    @classmethod
    def build(cls, case: Case, plan: Plan | None = None, seed: int = 0) -> CaseSetup:
        """The case built on its device from a fixed seed (``plan``: the case's, if known)."""
        p = plan or plan_for(case)
        fam = family(case.family)
        device = torch.device(case.device)
        dtype = parse_dtype(case.dtype)
        torch.manual_seed(seed)
        model = fam.build(p.config, device=device, dtype=dtype)
        batch = fam.sample_batch(p.config, p.batch_size, device=device, dtype=dtype)
        optimizer = make_optimizer(case.optimizer, model.parameters())
        return cls(case, p, device, model, batch, optimizer)

    def ensure_training_state(self) -> None:
        """One training step where none ran: the optimizer's state exists only after one."""
        if not self.optimizer.state:
            train_step(self.model, self.optimizer, self.batch)()
