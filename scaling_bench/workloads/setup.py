"""A case's model, batch and optimizer, built once and shared by its workloads.

Building costs seconds at large sizes, so the workloads of a case share one model; the pytest and
asv front-ends keep one ``CaseSetup`` per process for the same reason. The case's recipe is
applied here: the precision's parameter dtype and model conversion (fp8's float8 layers),
activation checkpointing, ``torch.compile`` and a ``max`` batch size, found by prediction and
confirmed by a real step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from scaling_bench.config.case import Case
from scaling_bench.core import precision as precisions
from scaling_bench.core.optimizers import make_optimizer
from scaling_bench.core.precision import Precision
from scaling_bench.models import checkpointing, family
from scaling_bench.predict.batch import max_batch
from scaling_bench.predict.plan import Plan, plan_for
from scaling_bench.workloads import batch_search
from scaling_bench.workloads.compiled import compile_model
from scaling_bench.workloads.steps import forward_step, train_step


@dataclass
class CaseSetup:
    """``model`` is the module as built (what checkpoints save: no ``_orig_mod.`` prefix);
    ``step_model`` is what the timed steps call, the compiled module where the case compiles.
    ``found`` holds figures that setting up measured (how a ``max`` batch was found)."""

    case: Case
    plan: Plan
    device: torch.device
    model: nn.Module
    batch: tuple[torch.Tensor, torch.Tensor]
    optimizer: torch.optim.Optimizer
    precision: Precision = precisions.PRECISIONS["fp32"]
    step_model: nn.Module | None = None
    scaler: torch.amp.GradScaler | None = None
    found: dict[str, dict] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.step_model is None:
            self.step_model = self.model

    @classmethod
    def build(cls, case: Case, plan: Plan | None = None, seed: int = 0) -> CaseSetup:
        """The case built on its device from a fixed seed (``plan``: the case's, if known)."""
        prec = precisions.get(case.precision)
        device = torch.device(case.device)
        fit = max_batch(case) if case.batch_size == "max" and plan is None else None
        p = plan or plan_for(case, fit.batch_size if fit else None)
        fam = family(case.family)
        prec.set_backends(device)
        torch.manual_seed(seed)
        model = fam.build(p.config, device=device, dtype=prec.param_dtype)
        model = prec.convert(model, device)
        checkpointing.apply(model, case.family, case.activation_checkpointing)
        setup = cls(
            case,
            p,
            device,
            model,
            fam.sample_batch(p.config, p.batch_size, device=device, dtype=prec.param_dtype),
            make_optimizer(case.optimizer, model.parameters()),
            prec,
            compile_model(model, case.compile),
            torch.amp.GradScaler(device.type) if prec.grad_scaler else None,
        )
        if fit is not None:
            setup.found = batch_search.confirm(setup, fit)
        return setup

    def with_batch_size(self, batch_size: int) -> None:
        """Replan and rebuild the batch at ``batch_size`` (a ``max`` batch backing off)."""
        self.batch = None
        self.plan = plan_for(self.case, batch_size)
        fam = family(self.case.family)
        dtype = self.precision.param_dtype
        self.batch = fam.sample_batch(self.plan.config, batch_size, self.device, dtype=dtype)

    def train_step(self) -> Callable[[], torch.Tensor]:
        """The case's training step, in its precision, on ``step_model``."""
        return train_step(self.step_model, self.optimizer, self.batch, self.precision, self.scaler)

    def forward_step(self, grad_mode: bool = False) -> Callable[[], object]:
        """The case's inference step, in its precision, on ``step_model``."""
        return forward_step(self.step_model, self.batch[0], grad_mode, self.precision)

    def ensure_training_state(self) -> None:
        """One training step where none ran: the optimizer's state exists only after one."""
        if not self.optimizer.state:
            self.train_step()()
